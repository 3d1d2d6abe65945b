# The two quick-start commands are `make demo` and `make test`; both create the environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help demo test test-full lint typecheck bench faults schemas clean

help:
	@echo "make demo       the whole pipeline on embedded parts, with a summary (BROKER=kafka: on Apache Kafka)"
	@echo "make test       lint, types and the test suite (what CI runs)"
	@echo "make test-full  the suite plus the long fault scenarios"
	@echo "make bench      the benchmark (JSON and a table)"
	@echo "make faults     the fault harness, every scenario, with its report"

# The exact versions, with their hashes, from the lock (README: "Dependencies and the lock
# files"); then the project itself, without resolving anything again.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# make demo BROKER=kafka: the demo on Apache Kafka (Java 17+ and Maven) instead of Tansu.
BROKER ?= tansu
demo: $(STAMP)
	$(BIN)/python -m worker demo --broker $(BROKER)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/python -m schemas

# pytest exits 5 when it collected no test: that must fail, never pass silently.
test: lint typecheck
	$(BIN)/python -m pytest -m "not slow"; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

test-full: $(STAMP)
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

bench: $(STAMP)
	$(BIN)/python -m worker bench
	$(BIN)/python -m worker bench --quota

faults: $(STAMP)
	$(BIN)/python -m devkit.harness --full

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
