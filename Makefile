# The two commands of the README: `make demo` and `make test`. Both install what is missing
# (a virtualenv with the project, the local stack's services) and are quick the second time.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow"
# The sink's native hot path (native/, Rust, no crates): built when cargo is there (rustup
# puts it in ~/.cargo/bin); without it the sink runs in Python alone.
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)
NATIVE_LIB := native/target/release/libheadwater_native.so

.PHONY: demo test install stack lint unit clean-stack

demo: install
	$(BIN)/headwater demo

test: install lint stack
	@if [ -x "$(CARGO)" ]; then \
		$(CARGO) test --quiet --release --offline --manifest-path native/Cargo.toml; \
	fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed $(NATIVE_LIB)

$(NATIVE_LIB): native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
	@if [ -x "$(CARGO)" ]; then \
		$(CARGO) build --quiet --release --offline --manifest-path native/Cargo.toml; \
	else \
		echo "cargo not found: the sink runs without its native path (see docs/native.md)"; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

stack: install
	$(BIN)/headwater stack up

lint: install
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest tests/unit

clean-stack: install
	$(BIN)/headwater stack down
