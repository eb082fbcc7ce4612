# BadNet Pruning Lab. Two commands do all set-up on a fresh machine with Python 3.11:
#   make lab    environment + embedded default (if missing) + every notebook executed into build/
#   make test   environment + the test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SEED   ?= 1234

.PHONY: lab test bench env default jupyter student help

help:
	@echo "make lab    - create .venv, build the default data + BadNet if missing, run every notebook into build/"
	@echo "make test   - create .venv and run the test suite"
	@echo "make student - regenerate the student copies in student/ (solutions taken out)"
	@echo "make bench  - benchmark: default build time, pruning sweep vs forward pass vs naive sweep"

env: $(STAMP)

# Python 3.11 is required (TensorFlow 2.21 wheels); fall back to python3 when it is 3.11.
$(STAMP): requirements.txt pyproject.toml
	@py=$$(command -v $(PYTHON) || command -v python3); \
	  $$py -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]}"' && \
	  $$py -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (BadNet lab)" >/dev/null
	@touch $(STAMP)

# The default is built once; delete models/bd_net.h5 (or pass --force by hand) to rebuild.
default: env
	@if [ -f models/bd_net.h5 ]; then echo "default already built (models/bd_net.h5); skipping"; \
	  else $(BIN)/python -m lab make-default --out . --seed $(SEED); fi

# Every numbered notebook, top to bottom on a fresh kernel; executed copies + HTML in build/notebooks/.
lab: default
	$(BIN)/python -m lab evaluate --model models/bd_net.h5 --clean data/cl/test.h5 --poisoned data/bd/bd_test.h5
	$(BIN)/python -m lab notebooks --html --out build/notebooks
	@echo "open build/notebooks/*.html, or run 'make jupyter' to work in the notebooks yourself"

# Student copies: every "### BEGIN SOLUTION" block becomes raise NotImplementedError("TODO: <hint>").
student: env
	$(BIN)/python -m lab student

jupyter: env
	$(BIN)/jupyter notebook notebooks/

test: env
	$(BIN)/python -m pytest

bench: env
	$(BIN)/python -m lab bench
