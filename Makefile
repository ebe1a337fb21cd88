# The two commands:  `make demo` runs a small search end to end;  `make test` runs every test.
# Both create .venv and install tunelab into it first (nothing to install by hand).

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-quick lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else "tunelab needs Python 3.11 or 3.12 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev]' || $(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tunelab submit examples/gemm-cpu-demo.yaml --wait

test: $(STAMP)
	$(PY) -m pytest

test-quick: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check tunelab tests bench
	$(VENV)/bin/ruff format --check tunelab tests bench

bench: $(STAMP)
	$(PY) bench/platform_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
