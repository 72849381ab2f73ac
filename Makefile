# Herald: `make demo` runs the whole pipeline; `make test` runs the suite. Both install first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The suite's pytest-xdist workers, a test file each at a time; they share one set of services.
TEST_WORKERS ?= 2
# The folders installed as herald.* (pyproject.toml's package-dir).
HERALD_SOURCES := schemas producers streams consumers infra ops proving examples

.PHONY: install demo test chaos bench lint unit integration up down clean

# Python packages once (the stamp); the Debian packages the embedded services need, checked
# each time and installed when missing (as root, with apt-get), saying what.
# Our modules' bytecode too (only what changed since): where PYTHONDONTWRITEBYTECODE is set,
# as on our machines, every herald process compiled them again at start, 0.27 s of its 2.0.
install: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 $(HERALD_SOURCES)
	$(BIN)/herald system-packages

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "Herald needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: install
	$(BIN)/herald demo

test: install lint
	$(BIN)/herald system-packages --tests
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

chaos: install
	$(BIN)/herald chaos

bench: install
	$(BIN)/herald bench report

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

up: install
	$(BIN)/herald up

down: install
	$(BIN)/herald down

clean:
	-$(BIN)/herald down --purge
	rm -rf $(VENV) .pytest_cache .ruff_cache
