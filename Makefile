# One command each, set-up included: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench models clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/fluidml-tvm demo --plot memory_timeline.png

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests

bench: $(VENV)/.installed-bench
	$(BIN)/python scripts/bench_memory.py

models: $(VENV)/.installed-bench
	$(BIN)/python scripts/make_models.py

clean:
	rm -rf $(VENV) build *.egg-info
