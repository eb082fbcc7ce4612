"""``python -m lab course`` and nbgrader's own commands on it: two students, a gradebook, feedback, a CSV.

One short notebook (01_badnet) on the tiny default keeps the round trip
under a minute; its written question (a manually graded answer cell) takes
the path nbgrader gives such cells: no autograde score, formgrader's.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import run_cli

SMALL = ["-p", "EXPECTED_CLEAN_ACCURACY", "[0, 100]", "-p", "EXPECTED_ATTACK_SUCCESS", "[0, 100]",
         "-p", "N_TEST", "200"]
MISTAKE = ("int(np.argmax(counts))", "int(np.argmin(counts))")  # ex01_2: the least common class, a mistake
WRITTEN = "written01_confidence"  # 01_badnet's written question


def fill_in(release: Path, source: Path, out: Path, mistake: bool = False) -> Path:
    """A student's copy of ``release`` with the solutions of ``source`` typed in (ex01_2 wrong with ``mistake``)."""
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(source, as_version=4).cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    node = nbformat.read(release, as_version=4)
    for cell in node.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cell.source = answers[meta["grade_id"]]
            if mistake and meta["grade_id"] == "ex01_2_attack_target":
                assert MISTAKE[0] in cell.source
                cell.source = cell.source.replace(*MISTAKE)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(node, out)
    return out


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """The real ``nbgrader`` command in ``course`` (its alembic migrations need the venv's bin/ on PATH)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, f"nbgrader {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def course(tiny_default, tmp_path_factory) -> Path:
    """The course for 01_badnet, released, two students submitted (every answer typed in), autograded."""
    root = tmp_path_factory.mktemp("course")
    result = run_cli("course", "--out", str(root), "--notebook", "01_badnet", "-p", "LAB_ROOT", str(tiny_default),
                     *SMALL, "--timeout", "300")
    assert result.returncode == 0, result.stderr[-2000:]
    source = root / "source" / "lab" / "01_badnet.ipynb"
    nbgrader(root, "generate_assignment", "lab")
    release = root / "release" / "lab" / "01_badnet.ipynb"
    fill_in(release, source, root / "submitted" / "full" / "lab" / "01_badnet.ipynb")
    fill_in(release, source, root / "submitted" / "flawed" / "lab" / "01_badnet.ipynb", mistake=True)
    nbgrader(root, "autograde", "lab")
    return root


@pytest.mark.slow
def test_course_folder_holds_what_nbgrader_documents_and_nothing_else(course):
    files = {p.relative_to(course).as_posix() for p in course.rglob("*") if p.is_file()
             and p.relative_to(course).parts[0] in ("source", "nbgrader_config.py")}
    assert files == {"nbgrader_config.py", "source/lab/01_badnet.ipynb"}
    config = (course / "nbgrader_config.py").read_text()
    assert "c.CourseDirectory.course_id = 'badnet-lab'" in config and "gradebook.db" in config
    assert (course / "gradebook.db").is_file()
    parameters = next(c.source for c in nbformat.read(course / "release" / "lab" / "01_badnet.ipynb",
                                                      as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assert "N_TEST = 200   # set by python -m lab course" in parameters
    released = (course / "release" / "lab" / "01_badnet.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" not in released and "BEGIN SOLUTION" not in released


@pytest.mark.slow
def test_export_csv_has_full_marks_and_one_lost_exercise_after_formgrader(course):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student in ("full", "flawed"):
            written = gradebook.find_grade(WRITTEN, "01_badnet", "lab", student)
            assert written.needs_manual_grade and written.auto_score is None  # waiting in formgrader
            written.manual_score = written.max_score  # what formgrader stores when the instructor gives the points
        gradebook.db.commit()
    nbgrader(course, "generate_feedback", "lab")
    assert (course / "feedback" / "flawed" / "lab" / "01_badnet.html").is_file()
    nbgrader(course, "export", "--to", "grades.csv")
    with (course / "grades.csv").open() as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert {s: (float(r["score"]), float(r["max_score"])) for s, r in rows.items()} == \
        {"full": (6.0, 6.0), "flawed": (4.0, 6.0)}  # 4 autograded + 2 by hand; ex01_2_tests (2 points) lost


@pytest.mark.slow
def test_lab_autograde_gives_nbgrader_s_points_on_the_same_submissions(course):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        expected = {(student, grade_id): gradebook.find_grade(grade_id, "01_badnet", "lab", student).auto_score
                    for student in ("full", "flawed") for grade_id in ("ex01_1_tests", "ex01_2_tests")}
    assert expected[("flawed", "ex01_2_tests")] == 0 and expected[("full", "ex01_2_tests")] == 2
    result = run_cli("autograde", str(course / "submitted"), "--source", str(course / "source" / "lab"), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    got = {(row["student"].split("/")[0], grade_id): exercise["earned"]
           for row in rows for grade_id, exercise in row["exercises"].items()}
    assert {k: got[k] for k in expected} == expected
    full = next(r for r in rows if r["student"].startswith("full"))
    assert (full["earned"], full["possible"]) == (4, 4) and WRITTEN not in full["exercises"]  # autograded only
    written = full["written"][WRITTEN]  # left to the instructor, as nbgrader does
    assert written["possible"] == 2 and written["answered"] and "earned" not in written
    assert "formgrader" in written["status"]


def test_baking_parameters_and_one_line_errors(tmp_path, tiny_default):
    from lab.course import nbgrader_course

    node = nbformat.read(nbgrader_course.SOURCE_DIR / "03_pruning.ipynb", as_version=4)
    assert nbgrader_course.bake_parameters(node, {"N_VALID": 50, "NOT_A_PARAMETER": 1}) == \
        ["N_VALID", "OUT_DIR"]
    cell = next(c for c in node.cells if "parameters" in c.metadata.get("tags", []))
    assert "N_VALID = 50" in cell.source and 'abspath("build/models")' in cell.source
    compile(cell.source, "parameters", "exec")
    result = run_cli("course", "--out", str(tmp_path), "--notebook", "99_nothing")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "99_nothing" in result.stderr
    assert run_cli("course", "--out", str(tmp_path), "--notebook", "01_badnet").returncode == 0
    again = run_cli("course", "--out", str(tmp_path), "--notebook", "01_badnet")
    assert again.returncode == 2 and "--force" in again.stderr
    shutil.rmtree(tmp_path / "source")
