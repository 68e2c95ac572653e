# Layer-wise training-dynamics studies. `make` (or `make help`) lists the targets.
#   make test                      lint, then run the test suite in .venv (created on first use)
#   make report PARAMS=smoke       render every study with its smoke parameters
#   make report STUDY=01-layer-dynamics
#   make report WORKERS=2          every study on one 2-process LocalCluster, started once

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PARAMS ?= default
STUDY ?=
WORKERS ?= 1
PYTEST_ARGS ?=

# Idle OpenMP threads spin instead of sleeping unless told otherwise; on a loaded 2-core machine
# that made tiny models up to 8x slower (docs/architecture.md, "Threads"). Must be set before torch loads.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help venv browser lint test browser-check report report-full replicate lab sync clean-cache clean-reports

help: ## list the targets
	@echo "Targets (variables: PARAMS=$(PARAMS), STUDY=..., PYTEST_ARGS=..., PYTHON=$(PYTHON)):"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV)/.installed ## create .venv and install the project with its test and lab extras

# Re-install only when pyproject.toml changed; torch==2.13.0 is pinned there (CPU wheel).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test,lab]'
	$(BIN)/python -m ipykernel install --sys-prefix --name analysis-lib --display-name "analysis-lib (.venv)" >/dev/null
	touch $@

# The real-browser check (tests/test_browser.py) drives Debian's chromium. It is installed here when
# this runs as root with apt-get (a fresh CI machine, about a minute); anywhere else the check is
# skipped and says why. --no-install-recommends: the recommends add nothing headless needs.
browser: ## install Debian's chromium for the browser check (needs root and apt-get)
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make browser: no /usr/bin/chromium and no root apt-get: the browser check will be SKIPPED" >&2; \
	  exit 0; fi; \
	echo "make browser: apt-get install chromium"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends chromium fonts-dejavu-core >/dev/null \
	  || echo "make browser: apt-get failed: the browser check will be SKIPPED" >&2

lint: venv ## ruff: style, imports and docstrings of public code (configured in pyproject.toml)
	$(BIN)/ruff check analysis_lib tests benchmarks notebooks

# make reports any failing recipe as exit 2, so the "no tests ran" case is named here.
test: venv browser lint ## lint, then run the tests (pytest exit 5, no tests collected, is a failure)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

# Exit 3 from browser_check.py means "no browser here": say so loudly, but do not fail the build.
browser-check: venv browser ## open reports/ (or ANALYSIS_LIB_REPORTS) in headless chromium; screenshots beside them
	@reports="$${ANALYSIS_LIB_REPORTS:-reports}"; \
	$(BIN)/python tests/report/browser_check.py "$$reports" --screenshots "$$reports/screenshots"; rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "make browser-check: SKIPPED (see above), not passed" >&2; exit 0; fi; \
	exit $$rc

report: venv ## render studies with PARAMS (default: default) to reports/; STUDY=NN-name for one
	$(BIN)/python -m analysis_lib report --params $(PARAMS) --workers $(WORKERS) $(foreach s,$(STUDY),--study $(s))

report-full: venv ## render the studies that have a `full` parameter set, then replicate each on new seeds (slow)
	$(BIN)/python -m analysis_lib report --params full --skip-missing $(foreach s,$(STUDY),--study $(s))
	$(BIN)/python -m analysis_lib replicate --params full $(foreach s,$(STUDY),--study $(s))

replicate: venv ## render rendered studies again on disjoint seeds (PARAMS, STUDY) and compare their verdicts
	$(BIN)/python -m analysis_lib replicate --params $(PARAMS) $(foreach s,$(STUDY),--study $(s))

# The notebooks name the kernel `analysis-lib`, which `make venv` registers inside .venv (--sys-prefix):
# JupyterLab started from .venv finds it, and nothing is written to the user's home.
lab: venv ## open JupyterLab on notebooks/ with the project's kernel (analysis-lib)
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" -eq 0 ] && echo --allow-root)

sync: venv ## re-pair every notebook with its py:percent file (jupytext --sync)
	$(BIN)/jupytext --sync notebooks/*.ipynb

clean-cache: venv ## delete the run store data/runs/ (every cached run)
	$(BIN)/python -m analysis_lib clear-cache --yes

clean-reports: ## delete everything in reports/ except its README
	[ ! -d reports ] || find reports -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
