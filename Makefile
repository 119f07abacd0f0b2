# One command each, set-up included: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench models clean board tutorials

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/fluidml-tvm demo  # writes fluidml-demo/ (the model, its artifact, memory_timeline.png, report/index.html)

# The emulated aarch64 board the board tests run on (QEMU; cached in ~/.cache/fluidml-tvm/aarch64,
# or $FLUIDML_AARCH64_BOARD). It needs apt-get (root): in CI a failure stops `make test`;
# elsewhere the board tests then skip, saying why.
board: | $(BIN)/python
	PYTHON=$(BIN)/python scripts/setup_aarch64_board.sh || [ "$$CI" != true ]

test: $(VENV)/.installed-test board
	$(BIN)/python -m pytest -q --durations=15 tests

# Re-run the notebooks and commit them with their outputs (tutorial 03 runs on the emulated board).
tutorials: $(VENV)/.installed-test board
	$(BIN)/python scripts/run_tutorials.py

bench: $(VENV)/.installed-bench
	$(BIN)/python scripts/bench_memory.py

models: $(VENV)/.installed-bench
	$(BIN)/python scripts/make_models.py

clean:
	rm -rf $(VENV) build *.egg-info
