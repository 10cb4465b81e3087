# Every target creates .venv when missing and installs from scratch with pip.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DO_NOT_TRACK := 1

.PHONY: demo test lint format bench bench-accuracy bench-speed ui clean install

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# Keep a torch the user already has; otherwise the pinned CPU build.
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
		grep -v '^torch==' constraints.txt > $(VENV)/constraints.txt; \
	else \
		$(PY) -m pip install -q torch==$$(sed -n 's/^torch==//p' constraints.txt) && \
		cp constraints.txt $(VENV)/constraints.txt; \
	fi
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev,dask]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/forecast demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: bench-accuracy bench-speed

bench-accuracy: $(STAMP)
	$(PY) bench/accuracy.py

bench-speed: $(STAMP)
	$(PY) bench/speed.py

ui: $(STAMP)
	$(VENV)/bin/forecast ui

clean:
	rm -rf $(VENV) .prefect mlruns .pytest_cache .ruff_cache
