#!/usr/bin/env bash
# Runs every benchmark suite, one JSON per suite under benchmarks/results/ (about an hour on 2 cores).
# Usage: benchmarks/run_all.sh [pytest -k expression]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
K=${1:-}
for suite in protocols mask scaling psi; do
  $PY -m pytest "benchmarks/test_${suite}.py" -q -p no:cacheprovider ${K:+-k "$K"} \
    --benchmark-json="benchmarks/results/${suite}.json"
done
