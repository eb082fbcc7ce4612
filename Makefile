# BadNet Pruning Lab. Two commands do all set-up on a fresh machine with Python 3.11, 3.12 or 3.13:
#   make lab    environment + embedded default (if missing) + every notebook executed into build/
#   make test   environment + the test suite
# The newest supported Python on PATH that runs (pyenv shims of inactive versions don't) is used;
# PYTHON=python3.12 (or a path) chooses another; it creates .venv (once) and runs bootstrap.py.
PYTHON ?= $(firstword $(foreach v,3.13 3.12 3.11,$(shell python$(v) -c '' >/dev/null 2>&1 && echo python$(v))) python3)
BOOTSTRAP := $(PYTHON) bootstrap.py
BIN    := .venv/bin
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

# Every target that sets up or runs the lab is a call of bootstrap.py, which does the same on Windows and
# macOS without make (`python bootstrap.py lab`): one path, not two. It creates .venv when missing and
# reinstalls the pins only when requirements.txt or pyproject.toml changed (its stamp file says from what).
env:
	@$(BOOTSTRAP) env

# The default is built once; delete models/bd_net.h5 (or pass --force by hand) to rebuild.
default:
	@$(BOOTSTRAP) default --seed $(SEED)

# Every numbered notebook, then the instructor notebook A1, top to bottom on a fresh kernel;
# executed copies + HTML in build/notebooks/ (*.nbconvert.ipynb leftovers are never picked up).
lab:
	@$(BOOTSTRAP) lab --seed $(SEED)

# Student copies: nbgrader's generate_assignment (solutions -> raise NotImplementedError(), hidden tests out).
student:
	@$(BOOTSTRAP) student

# The default first, so the first Setup cell finds data/ and models/.
jupyter:
	@$(BOOTSTRAP) jupyter --seed $(SEED)

# The suite on TEST_WORKERS processes (pytest-xdist; 2 = CI's cores, ~8.5 min there against ~12.5 serially), a
# test file per worker so a file's notebook fixtures run once. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
test:
	@$(BOOTSTRAP) test --workers $(TEST_WORKERS)

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
