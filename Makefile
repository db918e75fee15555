# The two commands of the README: `make demo` and `make test`. Both create .venv when missing and install
# the package with its extras first, at the tested versions of constraints.txt (pyproject.toml declares ranges).
# The data root is ../shared when that folder exists, else ./data.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SHARED := $(abspath ../shared)
export DSG_VIZ_DATA_ROOT ?= $(if $(wildcard $(SHARED)/datasets),$(SHARED),$(abspath data))
export MPLBACKEND ?= Agg

.PHONY: demo test test-browser test-install docs test-docs lab install clean

$(BIN)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[notebooks,test]'
	@touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/dsg-viz demo --out runs/demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -ra

# JupyterLab + headless Chromium (system /usr/bin/chromium, never downloaded) running all six notebooks at their quick
# settings (CI: DSG_VIZ_BROWSER_SETTINGS=smoke, a few steps) and clicking every panel's Run button; writes
# docs/img/notebook_NN.png and docs/img/notebook_panel.png
test-browser: $(BIN)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[browser]'
	$(BIN)/python -m pytest -q -ra -m browser tests/test_browser.py

# the wheel and sdist, installed into a fresh venv that already has the tested torch: pip must leave torch alone;
# then pip check and the smoke commands from outside the source tree (.ci/test-install.sh says what is checked)
test-install: $(BIN)/.installed
	.ci/test-install.sh $(PYTHON)

# the static site in site/ (mkdocs.yml; README.md "Documentation site"): the pages of docs/, the six tutorials
# executed at their quick settings (DSG_VIZ_SMOKE=1 for a fast smoke build) with their outputs, the API reference;
# warnings are errors. Serve it with
# `.venv/bin/python -m http.server -d site 8000` (or `.venv/bin/mkdocs serve` while editing).
docs: $(BIN)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[notebooks,docs]'
	DSG_VIZ_SMOKE=$${DSG_VIZ_SMOKE-0} OMP_NUM_THREADS=$${OMP_NUM_THREADS-2} NO_MKDOCS_2_WARNING=1 \
		$(BIN)/mkdocs build --strict --clean

# the built site (run `make docs` first) in headless Chromium: home, a tutorial and the API page render, no errors
test-docs: $(BIN)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[browser]'
	$(BIN)/python -m pytest -q -ra -m browser tests/test_docs.py

# the tutorial notebooks, on this project's virtual environment (kernel "Python 3" = .venv/bin/python), opening the
# quickstart; the server's root is the repository, so the notebooks' links to docs/ and to reports under runs/ open
lab: $(BIN)/.installed
	$(BIN)/jupyter lab notebooks/00_quickstart.ipynb $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) runs .pytest_cache site build dist
