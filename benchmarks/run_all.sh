#!/usr/bin/env bash
# Runs every benchmark suite, one JSON per suite under benchmarks/results/ (about an hour on 2 cores).
# Usage: benchmarks/run_all.sh [pytest -m marker expression, e.g. "not heavy"]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MARKERS=${1:-}
for suite in protocols mask scaling million psi security_cost lr_reference serving decoys round_cost startup stress referral decisions; do
  # exit code 5: every test of the suite deselected by the marker (e.g. the heavy-only million and stress suites)
  $PY -m pytest "benchmarks/test_${suite}.py" -q ${MARKERS:+-m "$MARKERS"} \
    --benchmark-json="benchmarks/results/${suite}.json" || [ $? -eq 5 ]
done
