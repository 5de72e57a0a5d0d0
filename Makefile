# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MPLBACKEND := Agg

.PHONY: demo test lint bench bench-heavy figures paper clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch from local disk; any other version would download a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# Last, and without their metadata's dependencies, so pip's resolver has nothing to complain of:
	# crypten's metadata asks for sklearn/torchvision/tensorboard (its real needs are in pyproject);
	# spu ships SecretFlow's RR22/KKRT PSI, and its metadata pins numpy<2 and jax for its JAX
	# front-end, which mpc_fl never imports (mpc_fl/psi/_libpsi.py loads only the PSI library).
	# `pip check` lists exactly these unmet requirements; tests/test_install.py checks there are no others.
	$(PY) -m pip install -q --no-deps crypten==0.4.1 spu==0.9.5
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mpc_fl.app.cli demo

test: $(STAMP)
	$(PY) -m ruff check mpc_fl tests benchmarks experiments paper
	$(PY) -m ruff format --check mpc_fl tests benchmarks experiments paper
	$(PY) -m pytest tests
	$(PY) -m pytest benchmarks -m smoke --benchmark-disable

lint: $(STAMP)
	$(PY) -m ruff check mpc_fl tests benchmarks experiments paper
	$(PY) -m ruff format --check mpc_fl tests benchmarks experiments paper

bench: $(STAMP)
	PY=$(PY) benchmarks/run_all.sh "not heavy"

bench-heavy: $(STAMP)
	PY=$(PY) benchmarks/run_all.sh

figures: $(STAMP)
	$(PY) experiments/make_all.py

paper: figures
	$(PY) paper/build.py

clean:
	rm -rf out reports .pytest_cache paper/build
