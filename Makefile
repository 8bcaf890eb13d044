# The two commands of the README are `make up` and `make test`; both install first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test lint bench clean

up: $(VENV)/.installed
	$(BIN)/gtm up

# Two runs side by side: the tests that need something of this machine to themselves
# (marker `serial`: the example regions' fixed addresses) one by one in the background,
# and the rest on three workers; most of both wait on sockets and processes, not the
# CPU. A few long tests (marker `long`) join the one-by-one run, which would otherwise
# finish a minute and a half before the other. The serial run's report follows the
# other's; either failing fails the target.
test: $(VENV)/.installed lint
	@$(BIN)/pytest -n 0 -m "serial or long" -p no:cacheprovider > .pytest-serial.log 2>&1 & \
	serial=$$!; trap 'kill $$serial 2>/dev/null' INT TERM; \
	$(BIN)/pytest -n 3 -m "not serial and not long"; rest=$$?; \
	wait $$serial; alone=$$?; \
	echo "--- tests marked serial or long (one at a time, alongside the run above):"; \
	cat .pytest-serial.log; \
	exit $$(( rest != 0 || alone != 0 ))

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
