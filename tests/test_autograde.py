"""``python -m lab autograde`` with the real nbgrader: untouched copies earn zero, one mistake costs one exercise.

The solution notebooks' full marks are checked in test_notebooks.py, whose
``executed`` fixture runs every notebook through the same grader.
"""

from __future__ import annotations

import csv
import json
import shutil

import nbformat
import pytest

from conftest import REPO, run_cli
from lab.course import autograde, student

EXERCISE_NOTEBOOKS = ["01_badnet", "02_activations", "03_pruning", "04_goodnet", "05_fine_pruning"]
SMALL = ["-p", "EXPECTED_CLEAN_ACCURACY", "[0, 100]", "-p", "EXPECTED_ATTACK_SUCCESS", "[0, 100]",
         "-p", "FINE_TUNE_EPOCHS", "1", "-p", "PAPER_EPOCHS", "1", "-p", "EXPECTED_FINE_PRUNED_ASR", "[0, 100]",
         "-p", "N_IMAGES", "1"]
OFF_BY_ONE = ("    return int(reached[0]) if reached.size else None",
              "    return int(reached[0]) - 1 if reached.size else None  # the step before: a deliberate mistake")


def _points(stem):
    return {e["grade_id"]: e["points"] for e in student.exercises(nbformat.read(REPO / "notebooks" / f"{stem}.ipynb",
                                                                                  as_version=4))}


@pytest.fixture(scope="module")
def graded(tiny_default, tmp_path_factory):
    """Two students graded in one command: 'untouched' (the student copies) and 'offbyone' (03, one mistake)."""
    submitted = tmp_path_factory.mktemp("submitted")
    (submitted / "untouched").mkdir()
    for stem in EXERCISE_NOTEBOOKS:
        shutil.copyfile(REPO / "student" / f"{stem}.ipynb", submitted / "untouched" / f"{stem}.ipynb")
    (submitted / "untouched" / "01_badnet.nbconvert.ipynb").write_text("not a submission: ignored")
    (submitted / "offbyone").mkdir()
    source = (REPO / "notebooks" / "03_pruning.ipynb").read_text()
    needle = json.dumps(OFF_BY_ONE[0] + "\n")[1:-1]
    assert source.count(needle) == 1
    (submitted / "offbyone" / "03_pruning.ipynb").write_text(
        source.replace(needle, json.dumps(OFF_BY_ONE[1] + "\n")[1:-1]))
    out = submitted.parent / "grades.csv"
    result = run_cli("autograde", str(submitted), "--json", "--out", str(out), "-p", "LAB_ROOT", str(tiny_default),
                     *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {(row["student"], row["notebook"]): row for row in rows}, out


def test_untouched_student_copies_earn_zero_on_every_exercise_and_the_grader_finishes(graded):
    results, _ = graded
    for stem in EXERCISE_NOTEBOOKS:
        row = results[("untouched", f"{stem}.ipynb")]
        assert row["possible"] == sum(_points(stem).values()) > 0
        assert row["earned"] == 0, row
        for grade_id, exercise in row["exercises"].items():
            assert exercise["earned"] == 0 and exercise["error"], (stem, grade_id, exercise)
        written = student.written_questions(nbformat.read(REPO / "notebooks" / f"{stem}.ipynb", as_version=4))
        assert {w["grade_id"]: w["points"] for w in written} == \
            {grade_id: answer["possible"] for grade_id, answer in row["written"].items()} != {}
        assert all(a["status"] == autograde.NOT_ANSWERED for a in row["written"].values()), row["written"]
    assert ("untouched", "01_badnet.nbconvert.ipynb") not in results


def test_one_mistake_loses_exactly_that_exercise(graded):
    results, _ = graded
    row = results[("offbyone", "03_pruning.ipynb")]
    points = _points("03_pruning")
    assert row["possible"] == sum(points.values())
    assert row["earned"] == row["possible"] - points["ex03_4_tests"]
    lost = {grade_id for grade_id, exercise in row["exercises"].items() if exercise["earned"] < exercise["possible"]}
    assert lost == {"ex03_4_tests"}
    assert "step BEFORE" in row["exercises"]["ex03_4_tests"]["error"]
    assert row["written"]["written03_threshold"]["status"] == autograde.TO_GRADE  # the model answer, not scored


def test_csv_has_points_per_student_and_exercise(graded):
    results, out = graded
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["student"], r["exercise"]) for r in rows} >= {("offbyone", "ex03_4_tests"), ("untouched", "ex01_1_tests")}
    assert len(rows) == sum(len(r["exercises"]) + len(r["written"]) for r in results.values())
    untouched = {r["exercise"]: r for r in rows if r["student"] == "untouched"}
    assert untouched["written01_confidence"]["earned"] == "" and untouched["written01_confidence"]["possible"] == "2"
    offbyone = {r["exercise"]: float(r["earned"]) for r in rows if r["student"] == "offbyone" and r["earned"]}
    assert offbyone["ex03_4_tests"] == 0 and offbyone["ex03_1_tests"] == 1


def test_hidden_tests_come_back_from_the_source_and_edited_tests_do_not_count():
    source = nbformat.read(REPO / "notebooks" / "03_pruning.ipynb", as_version=4)
    submission = nbformat.read(REPO / "student" / "03_pruning.ipynb", as_version=4)
    test_cell = next(c for c in submission.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "ex03_4_tests")
    test_cell.source = "pass  # a student 'fixing' the test"
    autograde.restore_cells(submission, source)
    restored = next(c for c in submission.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "ex03_4_tests")
    assert "BEGIN HIDDEN TESTS" in restored.source and "check_first_step_reaching" in restored.source


def test_missing_inputs_are_one_line_errors(tmp_path):
    result = run_cli("autograde", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no such file or folder" in result.stderr
    stray = tmp_path / "99_unknown.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), stray)
    result = run_cli("autograde", str(stray))
    assert result.returncode == 2 and "99_unknown.ipynb" in result.stderr and "hidden tests" in result.stderr


@pytest.fixture(scope="module")
def written_course(tmp_path_factory):
    """The tiny notebook of test_student (an exercise of 1 point, a written question of 2) as source and release,
    and three submissions: the solutions, the release untouched, the release with only the written answer typed."""
    from test_student import written_notebook

    root = tmp_path_factory.mktemp("written")
    (root / "source").mkdir()
    nbformat.write(written_notebook(), root / "source" / "01_tiny.ipynb")
    release = nbformat.reads(student.render_all(root / "source")["01_tiny.ipynb"], as_version=4)
    for name in ("solutions", "untouched", "answered"):
        (root / "submitted" / name).mkdir(parents=True)
    shutil.copyfile(root / "source" / "01_tiny.ipynb", root / "submitted" / "solutions" / "01_tiny.ipynb")
    nbformat.write(release, root / "submitted" / "untouched" / "01_tiny.ipynb")
    release.cells[-1].source = "My x came out as 1."
    nbformat.write(release, root / "submitted" / "answered" / "01_tiny.ipynb")
    return root


def test_written_questions_are_reported_to_be_graded_by_hand_and_never_scored(written_course):
    out = written_course / "grades.csv"
    result = run_cli("autograde", str(written_course / "submitted"), "--source", str(written_course / "source"),
                     "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["student"]: row for row in map(json.loads, result.stdout.splitlines()) if row}
    assert {s: (r["earned"], r["possible"]) for s, r in rows.items()} == \
        {"solutions": (1, 1), "untouched": (0, 1), "answered": (0, 1)}  # the written question's 2 points in neither
    assert all(list(r["exercises"]) == ["ex_x_tests"] for r in rows.values())
    written = {s: r["written"]["written_why"] for s, r in rows.items()}
    assert all(w["possible"] == 2 and "earned" not in w for w in written.values())
    assert written["untouched"]["answered"] is False and written["untouched"]["status"] == autograde.NOT_ANSWERED
    assert written["answered"]["answered"] and written["answered"]["answer"] == "My x came out as 1."
    assert written["solutions"]["status"] == written["answered"]["status"] == autograde.TO_GRADE
    with out.open() as handle:
        csv_rows = {(r["student"], r["exercise"]): r for r in csv.DictReader(handle)}
    assert csv_rows[("answered", "written_why")]["earned"] == "" and \
        csv_rows[("answered", "written_why")]["possible"] == "2"
    assert "graded by hand" in csv_rows[("answered", "written_why")]["error"]
    table = autograde.format_results([{"student": s, **r} for s, r in rows.items()])
    assert "solutions  01_tiny.ipynb: 1 / 1 (+ 2 graded by hand)" in table
    assert "total solutions: 1 / 1 autograded, + 2 points graded by hand" in table
