# The two set-up commands of the README: `make demo` and `make test`. Both install what they need first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test sync-check lint nbtest pytest clean

install: $(STAMP)

# pip is upgraded first: the machine's pip 23 backtracks for many minutes on this dependency set.
# torch is pinned (torch==2.13.0, in the dev extra): that CPU build comes from local disk.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

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
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mlkit
