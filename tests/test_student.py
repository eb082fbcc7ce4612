"""Student copies: what nbgrader's generate_assignment releases, committed copies current, metadata checked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import REPO
from lab.course import student
from lab.errors import LabInputError

SOURCES = student.source_notebooks(REPO / "notebooks")
STUDENT_DIR = REPO / "student"


def test_committed_student_copies_are_current():
    """Regenerated with nbgrader, they equal the committed files (`python -m lab student` after editing notebooks)."""
    assert student.check(STUDENT_DIR, REPO / "notebooks") == []


def test_nbgrader_generate_assignment_app_releases_the_same_files(tmp_path):
    """The real `nbgrader generate_assignment` command, with its gradebook database, gives byte-identical copies."""
    source = tmp_path / "course" / "source" / "lab"
    source.mkdir(parents=True)
    for path in SOURCES:
        shutil.copyfile(path, source / path.name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "lab", "--create", "--force",
                             f"--CourseDirectory.root={tmp_path / 'course'}"], cwd=tmp_path / "course", env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for path in SOURCES:
        released = tmp_path / "course" / "release" / "lab" / path.name
        assert released.read_bytes() == (STUDENT_DIR / path.name).read_bytes(), path.name


def test_check_command_reports_stale_copies(tmp_path):
    copy = tmp_path / "student"
    shutil.copytree(STUDENT_DIR, copy)
    ok = subprocess.run([sys.executable, "-m", "lab", "student", "--check", "--out", str(copy)], capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    (copy / "03_pruning.ipynb").write_text((copy / "03_pruning.ipynb").read_text().replace("YOUR CODE", "MY CODE"))
    stale = subprocess.run([sys.executable, "-m", "lab", "student", "--check", "--out", str(copy)], capture_output=True,
                           text=True, timeout=300)
    assert stale.returncode == 1 and "03_pruning.ipynb: out of date" in stale.stderr


def test_nbconvert_leftovers_are_not_notebooks(tmp_path):
    for name in ["01_badnet.ipynb", "01_badnet.nbconvert.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in student.source_notebooks(tmp_path)] == ["01_badnet.ipynb"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_student_copy_has_no_solutions_and_no_hidden_tests(path):
    source = nbformat.read(path, as_version=4)
    copy = nbformat.read(STUDENT_DIR / path.name, as_version=4)
    assert [c.cell_type for c in copy.cells] == [c.cell_type for c in source.cells]
    text = "\n".join(c.source for c in copy.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    for original, released in zip(source.cells, copy.cells):
        meta = original.metadata.get("nbgrader", {})
        if meta.get("solution") and original.cell_type == "markdown":  # a written question's answer
            assert released.source == "YOUR ANSWER HERE"
        elif meta.get("solution"):
            assert "raise NotImplementedError()" in released.source
        elif meta.get("grade"):
            assert released.metadata["nbgrader"]["locked"] and not released.metadata.get("editable", True)
            visible = original.source.split("### BEGIN HIDDEN TESTS")[0].rstrip("\n")
            assert released.source == visible
        else:
            assert released.source == original.source
        if released.cell_type == "code":
            assert released.outputs == [] and released.execution_count is None


def test_exercise_notebooks_have_graded_exercises_with_points():
    points = {path.stem: [e["points"] for e in student.exercises(nbformat.read(path, as_version=4))] for path in SOURCES}
    written = {path.stem: [e["points"] for e in student.written_questions(nbformat.read(path, as_version=4))]
               for path in SOURCES}
    for stem in ["01_badnet", "02_activations", "03_pruning", "04_goodnet", "05_fine_pruning", "06_reverse_and_unlearn",
                 "07_defenses_compared"]:
        assert points[stem] and all(p > 0 for p in points[stem]), stem
        assert written[stem] and all(p > 0 for p in written[stem]), stem
    readme = (STUDENT_DIR / "README.md").read_text()
    assert (f"Total: {sum(sum(p) for p in points.values()):g} autograded points and "
            f"{sum(sum(p) for p in written.values()):g} points of written questions graded by hand.") in readme


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_written_questions_give_their_points_in_their_heading_and_no_answer_before_them(path):
    """The cell above each written answer is its question: a heading with the answer cell's points."""
    import re

    cells = nbformat.read(path, as_version=4).cells
    for index, cell in enumerate(cells):
        if not student.is_written(cell):
            continue
        question = cells[index - 1]
        points = cell.metadata["nbgrader"]["points"]
        assert question.cell_type == "markdown" and "nbgrader" not in question.metadata, path.name
        heading = question.source.splitlines()[0]
        assert re.match(rf"## Written question \({points:g} points?\): ", heading), (path.name, heading)
        assert not any(c.source.startswith("## Summary") for c in cells[:index]), f"{path.name}: a Summary before it"


def _notebook(*cells):
    return new_notebook(cells=[new_markdown_cell("# Title"), *cells])


def _cell(source, **nbgrader):
    cell = new_code_cell(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "locked": False, "task": False, "grade": False,
                                     "solution": False, **nbgrader}
    return cell


@pytest.mark.parametrize("cell, problem", [
    (_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"), "unmarked cell"),
    (_cell("### BEGIN HIDDEN TESTS\nassert x\n### END HIDDEN TESTS", grade_id="a", solution=True), "hidden tests"),
    (_cell("### BEGIN SOLUTION\nx = 1", grade_id="a", solution=True), "unbalanced"),
    (_cell("assert x", grade_id="a", grade=True, points=0), "points > 0"),
    (_cell("x = 1", grade_id="a", solution=True), "region in a solution cell"),
])
def test_malformed_nbgrader_cells_are_refused_in_one_line(cell, problem):
    with pytest.raises(LabInputError, match=problem) as error:
        student.check_metadata(_notebook(cell), "test.ipynb")
    assert "test.ipynb cell 1" in str(error.value) and "\n" not in str(error.value)


def test_duplicate_grade_ids_are_refused():
    node = _notebook(_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", grade_id="a", solution=True),
                     _cell("assert x", grade_id="a", grade=True, points=1, locked=True))
    with pytest.raises(LabInputError, match="unique"):
        student.check_metadata(node, "test.ipynb")


WRITTEN_META = {"schema_version": 3, "locked": False, "task": False, "grade": True, "solution": True, "points": 2,
                "grade_id": "written_why"}


def written_notebook():
    """A real small source notebook: one autograded exercise (1 point), one written question (2 points)."""
    answer = new_markdown_cell("### BEGIN SOLUTION\nA good answer names the number its run printed.\n"
                               "### END SOLUTION")
    answer.metadata["nbgrader"] = dict(WRITTEN_META)
    node = _notebook(_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", grade_id="ex_x", solution=True),
                     _cell("assert x == 1\n### BEGIN HIDDEN TESTS\nassert x > 0\n### END HIDDEN TESTS",
                           grade_id="ex_x_tests", grade=True, points=1, locked=True),
                     new_markdown_cell("## Written question (2 points): what did x come out as?"), answer)
    node.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return node


def test_written_questions_are_listed_apart_from_the_autograded_exercises():
    node = written_notebook()
    student.check_metadata(node, "test.ipynb")
    assert student.exercises(node) == [{"grade_id": "ex_x_tests", "points": 1.0}]
    assert student.written_questions(node) == [{"grade_id": "written_why", "points": 2.0}]


def test_nbgrader_releases_a_written_question_as_your_answer_here_and_the_readme_lists_its_points(tmp_path):
    nbformat.write(written_notebook(), tmp_path / "01_tiny.ipynb")
    files = student.render_all(tmp_path)
    released = nbformat.reads(files["01_tiny.ipynb"], as_version=4)
    answer = released.cells[-1]
    assert answer.cell_type == "markdown" and answer.source == "YOUR ANSWER HERE"
    assert answer.metadata["nbgrader"]["grade"] and answer.metadata["nbgrader"]["solution"]
    assert "Written question (2 points)" in released.cells[-2].source
    assert "`01_tiny.ipynb` | 1 | 1 | `ex_x_tests` (1) | `written_why` (2) |" in files[student.README]
    assert "Total: 1 autograded points and 2 points of written questions graded by hand." in files[student.README]


@pytest.mark.parametrize("change, problem", [
    ({"cell_type": "code"}, "markdown cell"),
    ({"source": "A model answer without its markers."}, "model answer"),
    ({"task": True}, "task cell"),
])
def test_malformed_written_questions_are_refused_in_one_line(change, problem):
    node = written_notebook()
    answer = node.cells[-1]
    if "cell_type" in change:
        answer = new_code_cell(answer.source, metadata=answer.metadata)
        node.cells[-1] = answer
    if "source" in change:
        answer.source = change["source"]
    if "task" in change:
        answer.metadata["nbgrader"]["task"] = True
    with pytest.raises(LabInputError, match=problem) as error:
        student.check_metadata(node, "test.ipynb")
    assert "test.ipynb cell 4" in str(error.value) and "\n" not in str(error.value)
