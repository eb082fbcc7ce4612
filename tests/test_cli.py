"""One command line: ``python -m lab --help`` groups every command; old entry points and flat imports still work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, run_cli
from lab import cli

STUDENT_COMMANDS = ("evaluate", "prune", "goodnet", "fine-prune", "repair", "detect", "classify")
INSTRUCTOR_COMMANDS = ("make-default", "make-badnet", "make-challenge", "grade", "autograde", "course", "gradescope", "notebooks",
                       "student", "bench")


def test_help_lists_the_commands_grouped_for_students_and_instructors():
    result = run_cli("--help")
    assert result.returncode == 0
    students, instructors = result.stdout.split("\nstudents:\n")[1].split("\ninstructors:\n")
    assert [line.split()[0] for line in students.strip().splitlines()] == list(STUDENT_COMMANDS)
    assert [line.split()[0] for line in instructors.strip().splitlines()[:len(INSTRUCTOR_COMMANDS)]] == \
        list(INSTRUCTOR_COMMANDS)


@pytest.mark.parametrize("command", STUDENT_COMMANDS + INSTRUCTOR_COMMANDS)
def test_every_command_has_help(command, capsys):
    # main() returns the exit status for --help and argument errors too (they print, then return 0 or 2)
    assert cli.main([command, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m lab {command}")


@pytest.mark.parametrize("module", ["lab.course.notebooks", "lab.course.student", "lab.course.bench"])
def test_the_programs_run_as_their_own_modules(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: python -m {module}")


def test_short_names_are_the_modules_themselves_and_import_lab_stays_light():
    """``from lab import pruning`` is ``lab.defenses.pruning``; there is no second module path ``lab.pruning``."""
    code = ("import sys, lab; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
            "from lab import (pruning, goodnet, data, models, metrics, activations, plots, finepruning, detectors, "
            "oracle, attacks, triggers, training, challenge, checks, evaluation, analysis, classify, seed, errors, "
            "paths, manifest); "
            "import lab.defenses.pruning, lab.io.data, lab.evaluation.metrics; "
            "assert pruning is lab.defenses.pruning and data is lab.io.data and metrics is lab.evaluation.metrics; "
            "assert classify.__name__ == 'lab.io.images' and models.LoadedModel.__module__ == 'lab.io.models'; "
            "assert not hasattr(metrics, 'comparison_table') and 'pruning' in dir(lab); "
            "assert 'tensorflow' not in sys.modules\n"
            "for name in ('lab.pruning', 'lab.metrics', 'lab.notebooks'):\n"
            "    try:\n"
            "        __import__(name)\n"
            "    except ModuleNotFoundError:\n"
            "        pass\n"
            "    else:\n"
            "        raise AssertionError(name + ' imports')\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
