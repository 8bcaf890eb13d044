# The two commands of the README are `make up` and `make test`; both install first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test lint bench clean

up: $(VENV)/.installed
	$(BIN)/gtm up

# Two phases: everything else on two workers, then the tests that need something of the
# machine to themselves (marker `serial`: fixed addresses, network namespaces) one by one.
test: $(VENV)/.installed lint
	$(BIN)/pytest -m "not serial"
	$(BIN)/pytest -n 0 -m serial

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(VENV)/.installed
	bench/run

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
