# The two commands:  `make demo` runs a small search end to end;  `make test` runs every test.
# Both create .venv and install tunelab into it first (nothing to install by hand).

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A GPU node (Python 3.12, CUDA) gets the CUDA build from PyPI with the same pin.
TORCH ?= torch==2.13.0

.PHONY: install demo test test-quick lint bench bench-dashboard dashboard screenshots chromium clean
.PHONY: docker wheelhouse

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else "tunelab needs Python 3.11 or 3.12 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	@# torch first, with pip, at the pin: on these machines pip takes the CPU build that lies on
	@# disk; uv (or an unpinned resolver) would download a CUDA build of several GB. Once it is
	@# installed, the project's range is satisfied and nothing more is fetched.
	$(PY) -m pip install -q '$(TORCH)'
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev]' || $(PY) -m pip install -q -e '.[dev]'
	@# Bytecode now, once: uv installs none, and with PYTHONDONTWRITEBYTECODE=1 (set on many
	@# CI runners) every process would compile ray, sqlalchemy, tvm... from source at each
	@# start (`tunelab jobs` 1.0-1.5 s -> 0.4-0.5 s, `import ray` 0.6-0.9 s -> 0.3 s here).
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" tunelab >/dev/null \
	  || echo "(some files did not compile: a few packages ship sources for newer Pythons)"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tunelab submit examples/gemm-cpu-demo.yaml --wait

test: $(STAMP) chromium docker
	$(PY) -m pytest

test-quick: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check tunelab tests bench
	$(VENV)/bin/ruff format --check tunelab tests bench

bench: $(STAMP)
	$(PY) bench/platform_overhead.py

bench-dashboard: $(STAMP)
	$(PY) bench/dashboard_scale.py --out bench/results/dashboard_scale.txt

dashboard: $(STAMP)
	$(VENV)/bin/tunelab dashboard

screenshots: $(STAMP) chromium
	$(PY) docs/screenshots.py

# Headless Chromium for the dashboard's end-to-end test: installed from Debian's packages
# when missing and apt-get is there (as root); otherwise that test is skipped and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] \
	  || { apt-get update -qq >/dev/null 2>&1; \
	       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
	       || echo "could not install chromium: the dashboard browser test will be skipped"; }

# A Docker engine and debootstrap for the compose stack's end-to-end test
# (tests/test_compose_stack.py): installed from Debian's packages when missing and apt-get
# is there (as root). Where no engine answers, the test starts its own dockerd (own data
# root); where none can run, it is skipped and says why.
docker:
	@{ command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; } \
	  || ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] \
	  || { apt-get update -qq >/dev/null 2>&1; \
	       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null 2>&1 \
	       || echo "could not install docker.io and debootstrap: the compose stack test will be skipped"; }

# The wheels the compose images install tunelab from (deploy/wheelhouse/, for this venv's
# Python; see the README's "Running on a cluster"). WHEELHOUSE_ARGS: e.g. another Python's.
WHEELHOUSE_ARGS ?=
wheelhouse: $(STAMP)
	$(PY) deploy/wheelhouse.py $(WHEELHOUSE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# GPU check. `make gpu-artifacts` (here: tunelab's venv, TVM and nvcc, no GPU) builds the
# kernels of bench/gpu_build.py into bench/gpu_artifacts/, which is committed (~1.4 MiB,
# so it travels with the work tree; no `carry` needed). `make gpu-check` runs them on a GPU
# machine with the system Python (torch with CUDA, cuda-python or CuPy), not the venv: it
# installs nothing. Options: make gpu-check GPU_CHECK_ARGS=--quick
PYTHON_GPU ?= python3
GPU_CHECK_ARGS ?=
.PHONY: gpu-artifacts gpu-check

gpu-artifacts: $(STAMP)
	$(PY) bench/gpu_build.py

gpu-check:
	$(PYTHON_GPU) bench/gpu_check.py $(GPU_CHECK_ARGS)
