# The two set-up commands of the README: `make demo` and `make test`. Both install what they need first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install hooks demo test sync-check lint nbtest pytest lab docs clean

install: $(STAMP)
	@$(BIN)/python -c 'from mlkit.lab import install_kernel; install_kernel()'
	@$(MAKE) --no-print-directory hooks VENV=$(VENV)

# pip is upgraded first: the machine's pip 23 backtracks for many minutes on this dependency set.
# torch is pinned (torch==2.13.0, in the dev extra): that CPU build comes from local disk.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# inside a git checkout: pre-commit hooks (clean notebooks on commit, .pre-commit-config.yaml) and nbdev's merge
# driver (.gitattributes: a conflicted notebook stays valid JSON). Only .git/ changes, never a tracked file.
hooks:
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git config merge.nbdev-merge.name "nbdev notebook merge: a conflicted notebook stays valid JSON" && \
	  git config merge.nbdev-merge.driver "$(abspath $(BIN))/nbdev-merge %O %A %B %P" && \
	  { $(BIN)/pre-commit install >/dev/null && echo "hooks: pre-commit and the nbdev merge driver are installed" \
	    || echo "hooks: pre-commit install failed (is core.hooksPath set?): run $(BIN)/pre-commit install" >&2; }; \
	else echo "hooks: not in a git checkout, no git hooks installed"; fi

# JupyterLab on the project (kernel 'Python (mlkit)'); prints the URL with its token, Ctrl-C stops it
lab: install
	$(BIN)/mlkit lab

# the docs site from the notebooks: reports/docs/index.html (and README.md from nbs/index.ipynb)
docs: install
	$(BIN)/mlkit docs

demo: install
	$(BIN)/mlkit demo

# what CI runs (.ci/run calls exactly `make test`)
test: install sync-check lint nbtest pytest

# nbdev-clean and nbdev-export must leave the notebooks and the package unchanged
sync-check: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash .ci/sync-check

lint: install
	$(BIN)/ruff check nbs tests mlkit/cli.py mlkit/serving.py
	$(BIN)/ruff format --check nbs tests mlkit/cli.py mlkit/serving.py

nbtest: install
	$(BIN)/nbdev-test --n-workers 2

# PostgreSQL from Debian's packages for the tests that need a real server (they start their own cluster)
pytest: install
	bash .ci/postgres
	bash .ci/chromium
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mlkit
