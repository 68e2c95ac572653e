# Layer-wise training-dynamics studies. `make` (or `make help`) lists the targets.
#   make test                      run the test suite in .venv (created on first use)
#   make report PARAMS=smoke       render every study with its smoke parameters
#   make report STUDY=01-layer-dynamics

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PARAMS ?= default
STUDY ?=
PYTEST_ARGS ?=

# Idle OpenMP threads spin instead of sleeping unless told otherwise; on a loaded 2-core machine
# that made tiny models up to 8x slower (DESIGN.md, "Speed"). Must be set before torch loads.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help venv test report report-full lab sync clean-cache clean-reports

help: ## list the targets
	@echo "Targets (variables: PARAMS=$(PARAMS), STUDY=..., PYTEST_ARGS=..., PYTHON=$(PYTHON)):"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV)/.installed ## create .venv and install the project with its test and lab extras

# Re-install only when pyproject.toml changed; torch==2.13.0 is pinned there (CPU wheel).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test,lab]'
	touch $@

# make reports any failing recipe as exit 2, so the "no tests ran" case is named here.
test: venv ## run the tests (pytest exit 5, no tests collected, is a failure)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

report: venv ## render studies with PARAMS (default: default) to reports/; STUDY=NN-name for one
	$(BIN)/python -m analysis_lib report --params $(PARAMS) $(foreach s,$(STUDY),--study $(s))

report-full: venv ## render the studies that have a `full` parameter set (slow)
	$(BIN)/python -m analysis_lib report --params full --skip-missing $(foreach s,$(STUDY),--study $(s))

lab: venv ## register the .venv kernel and open JupyterLab on notebooks/
	$(BIN)/python -m ipykernel install --user --name analysis-lib --display-name "analysis-lib (.venv)"
	$(BIN)/jupyter lab notebooks/

sync: venv ## re-pair every notebook with its py:percent file (jupytext --sync)
	$(BIN)/jupytext --sync notebooks/*.ipynb

clean-cache: venv ## delete the run store data/runs/ (every cached run)
	$(BIN)/python -m analysis_lib clear-cache --yes

clean-reports: ## delete everything in reports/ except its README
	[ ! -d reports ] || find reports -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
