# The two commands of the README: `make demo` and `make test`. Both create .venv when missing and install
# the package with its extras first. The data root is ../shared when that folder exists, else ./data.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SHARED := $(abspath ../shared)
export DSG_VIZ_DATA_ROOT ?= $(if $(wildcard $(SHARED)/datasets),$(SHARED),$(abspath data))
export MPLBACKEND ?= Agg

.PHONY: demo test test-browser lab install clean

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[notebooks,test]'
	@touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/dsg-viz demo --out runs/demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -ra

# JupyterLab + headless Chromium (system /usr/bin/chromium, never downloaded) running notebooks/02 in smoke mode;
# writes docs/img/notebook_panel.png
test-browser: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[browser]'
	$(BIN)/python -m pytest -q -ra -m browser tests/test_browser.py

# the tutorial notebooks, on this project's virtual environment (kernel "Python 3" = .venv/bin/python)
lab: $(BIN)/.installed
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) runs .pytest_cache
