# The two commands of the README: `make demo` runs an example job end to end on an
# embedded personal-mode server; `make test` runs the whole test suite (which builds
# the user guide too: tests/unit/test_docs.py). `make docs` builds the guide into
# site/. Each sets up the virtual environment it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The first-party plugins, each its own distribution (the tests use them).
PLUGINS := $(wildcard plugins/*)

.PHONY: demo test lint bench docs clean

$(STAMP): pyproject.toml $(PLUGINS:%=%/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,docs]' $(PLUGINS:%=-e ./%)
	touch $(STAMP)

# The venv's bin/ goes first on PATH so the example job's `python` has numpy.
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nai demo

# mypy: the whole code base, core/ strictly (pyproject.toml says which parts how), and
# the first-party plugins, each its own distribution (one `nai_plugins` namespace).
PLUGIN_PATHS := $(subst $(eval) ,:,$(wildcard plugins/*))
PLUGIN_SOURCES := $(wildcard plugins/*/nai_plugins/*.py)
test: $(STAMP)
	$(BIN)/ruff check nai_server nai_tui nai_metrics plugins tests bench
	$(BIN)/mypy nai_server nai_tui nai_metrics
	MYPYPATH="$(PLUGIN_PATHS)" $(BIN)/mypy --explicit-package-bases $(PLUGIN_SOURCES)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check nai_server nai_tui nai_metrics plugins tests bench
	$(BIN)/mypy nai_server nai_tui nai_metrics
	MYPYPATH="$(PLUGIN_PATHS)" $(BIN)/mypy --explicit-package-bases $(PLUGIN_SOURCES)

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .ruff_cache .mypy_cache .hypothesis
