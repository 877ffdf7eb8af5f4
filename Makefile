# dnnod — two commands: `make book` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# One data root for everything (dnnod.data reads DNNOD_DATA); locally the shared real photos.
export DNNOD_DATA ?= $(abspath ../shared/data)
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: install book test test-py test-nb clean bench
.DEFAULT_GOAL := help

help:
	@echo "make book   install into $(VENV) and build the HTML book into _build/html"
	@echo "make test   install into $(VENV) and run every test (package, notebooks, book build, browser check)"

# The stamp is redone whenever the pins or the package metadata change.
$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

install: $(VENV)/.installed

# -W: warnings are errors; -n: nitpicky; a failing cell fails the build (nb_execution_raise_on_error).
book: install
	rm -rf _build/html _build/.doctrees
	$(VENV)/bin/jupyter-book build -W -n --keep-going .

test-py: install
	$(PY) -m pytest tests

# The book is built first (a -W build is itself a test) so that tests/test_book_html.py can check its HTML.
test: install
	$(MAKE) book
	$(PY) -m pytest tests
	$(MAKE) test-nb

# nbval re-runs every chapter and compares its text outputs with the stored ones (strict; the
# sanitize file masks versions, devices, addresses and timings; widget cells are tagged
# nbval-ignore-output). Chapters are written in book/_src and built by book/_tools/build_notebooks.py.
test-nb: install
	@if ls book/*.ipynb >/dev/null 2>&1; then \
	  $(PY) -m pytest --nbval --nbval-current-env --nbval-cell-timeout=300 \
	    --nbval-sanitize-with book/nbval_sanitize.cfg -p no:cacheprovider book/*.ipynb; \
	else echo "no chapter notebooks yet"; fi

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf _build .pytest_cache
