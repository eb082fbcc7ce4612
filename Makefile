# BadNet Pruning Lab. Two commands do all set-up on a fresh machine with Python 3.11, 3.12 or 3.13:
#   make lab    environment + embedded default (if missing) + every notebook executed into build/
#   make test   environment + the test suite
# The newest supported Python on PATH that runs (pyenv shims of inactive versions don't) is used;
# PYTHON=python3.12 (or a path) chooses another.
PYTHON ?= $(firstword $(foreach v,3.13 3.12 3.11,$(shell python$(v) -c '' >/dev/null 2>&1 && echo python$(v))) python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SEED   ?= 1234

.PHONY: lab test bench env default jupyter student help check-platforms smoke

help:
	@echo "make lab    - create .venv, build the default data + BadNet if missing, run every notebook into build/"
	@echo "make test   - create .venv and run the test suite"
	@echo "make student - regenerate the student copies in student/ (solutions taken out)"
	@echo "make bench  - benchmark: pruning sweep vs forward pass vs naive sweep; make lab from scratch vs its 300 s; every defense at real scale (auto beside its goals)"
	@echo "make jupyter - build the default if missing and open the notebooks in Jupyter"
	@echo "make smoke  - fresh venvs (oldest and newest Python found): pip install ., CLI, one notebook"
	@echo "make check-platforms - every pin has a wheel on every supported platform and Python (downloads GBs)"

env: $(STAMP)

# Python 3.11-3.13 (TensorFlow 2.21 wheels, numpy 2.4, pandas 3); anything else is refused in one line.
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; (3, 11) <= v <= (3, 13) or sys.exit(f"error: Python 3.11-3.13 needed, found {sys.version.split()[0]} ($(PYTHON)); pass PYTHON=python3.X")' && \
	  $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (BadNet lab)" >/dev/null
	@touch $(STAMP)

# The default is built once; delete models/bd_net.h5 (or pass --force by hand) to rebuild.
default: env
	@if [ -f models/bd_net.h5 ]; then echo "default already built (models/bd_net.h5); skipping"; \
	  else $(BIN)/python -m lab make-default --out . --seed $(SEED); fi

# Every numbered notebook, then the instructor notebook A1, top to bottom on a fresh kernel;
# executed copies + HTML in build/notebooks/ (*.nbconvert.ipynb leftovers are never picked up).
lab: default
	$(BIN)/python -m lab evaluate --model models/bd_net.h5 --clean data/cl/test.h5 --poisoned data/bd/bd_test.h5
	$(BIN)/python -m lab notebooks --html --out build/notebooks
	$(BIN)/python -m lab notebooks --html --out build/notebooks notebooks/A1_make_your_own_badnet.ipynb
	@echo "open build/notebooks/*.html, or run 'make jupyter' to work in the notebooks yourself"

# Student copies: nbgrader's generate_assignment (solutions -> raise NotImplementedError(), hidden tests out).
student: env
	$(BIN)/python -m lab student

# The default first, so the first Setup cell finds data/ and models/.
jupyter: default
	$(BIN)/jupyter notebook notebooks/

# The suite on TEST_WORKERS processes (pytest-xdist; 2 = CI's cores, ~8.5 min there against ~12.5 serially), a
# test file per worker so a file's notebook fixtures run once. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
test: env
	@sh tools/ensure_bwrap.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: env
	$(BIN)/python -m lab bench --lab --repairs all --grading

# On demand when the pins change (downloads a few GB into a temporary folder), not in CI.
check-platforms: env
	$(BIN)/python tools/check_platforms.py --with-deps

# Fresh virtual environments with the oldest and newest supported Python found (SMOKE_PYTHONS= overrides):
# pip install . (not editable), the CLI on a tiny default, one notebook in an empty folder (the Colab path).
smoke:
	bash tools/smoke.sh $(SMOKE_PYTHONS)

# An nbgrader course folder in COURSE (nbgrader_config.py, source/lab/; README "Grading your class"); COURSE_ARGS
# adds options, e.g. COURSE_ARGS="-p LAB_ROOT /srv/course-data --force".
COURSE ?= build/course
.PHONY: course
course: env
	$(BIN)/python -m lab course --out $(COURSE) $(COURSE_ARGS)
