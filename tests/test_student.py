"""Student copies: solution blocks out, stubs where a top-to-bottom run reaches them, committed copies current."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import REPO
from lab import notebooks, student
from lab.errors import LabInputError

SOURCES = student.source_notebooks(REPO / "notebooks")
STUDENT_DIR = REPO / "student"


def _cell(source: str):
    node = new_notebook(cells=[new_markdown_cell("# Title"), new_code_cell(source)])
    return student.student_notebook(node, "test.ipynb")


def test_committed_student_copies_are_current():
    """Regenerated in memory, they equal the committed files (run `python -m lab.student` after editing notebooks)."""
    assert student.check(STUDENT_DIR, REPO / "notebooks") == []


def test_check_command_reports_stale_copies(tmp_path):
    copy = tmp_path / "student"
    shutil.copytree(STUDENT_DIR, copy)
    ok = subprocess.run([sys.executable, "-m", "lab.student", "--check", "--out", str(copy)], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    (copy / "03_pruning.ipynb").write_text((copy / "03_pruning.ipynb").read_text().replace("TODO", "DONE"))
    stale = subprocess.run([sys.executable, "-m", "lab.student", "--check", "--out", str(copy)], capture_output=True,
                           text=True, timeout=120)
    assert stale.returncode == 1 and "03_pruning.ipynb: out of date" in stale.stderr


def test_a_block_becomes_a_stub_with_its_hint_at_its_indentation():
    source = ("total = 0\nfor i in range(3):\n    ### BEGIN SOLUTION\n    # HINT: add i to \"total\"\n"
              "    total += i\n    ### END SOLUTION\nprint(total)")
    node, blocks = _cell(source)
    assert [b.hint for b in blocks] == ['add i to "total"']
    assert node.cells[1].source == ("total = 0\nfor i in range(3):\n    # YOUR CODE HERE (replace the line below)\n"
                                    "    raise NotImplementedError(\"TODO: add i to \\\"total\\\"\")\nprint(total)")
    with pytest.raises(NotImplementedError, match='TODO: add i to "total"'):
        exec(node.cells[1].source, {})
    assert "Student copy" in node.cells[0].source


@pytest.mark.parametrize("source, problem", [
    ("### BEGIN SOLUTION\n# HINT: x\nx = 1", "no end"),
    ("x = 1\n### END SOLUTION", "alone"),
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "HINT"),
    ("### BEGIN SOLUTION\n# HINT:\nx = 1\n### END SOLUTION", "empty hint"),
    ("### BEGIN SOLUTION\n# HINT: a\n### BEGIN SOLUTION\n### END SOLUTION", "do not nest"),
    ("if True:\n    ### BEGIN SOLUTION\n    # HINT: a\n    x = 1\n### END SOLUTION", "indented like"),
    ("## BEGIN SOLUTION\n# HINT: a\nx = 1\n### END SOLUTION", "exactly"),
    ("def f():\n    ### BEGIN SOLUTION\n    # HINT: a\n    return 1\n    ### END SOLUTION", "inside FunctionDef"),
    ("if x:\n    ### BEGIN SOLUTION\n    # HINT: a\n    y = 1\n    ### END SOLUTION", "inside If"),
])
def test_malformed_or_unreachable_blocks_are_refused_in_one_line(source, problem):
    with pytest.raises(LabInputError, match=problem) as error:
        _cell(source)
    assert "test.ipynb cell 1" in str(error.value) and "\n" not in str(error.value)


def test_markers_in_markdown_are_refused():
    node = new_notebook(cells=[new_markdown_cell("### BEGIN SOLUTION\n### END SOLUTION")])
    with pytest.raises(LabInputError, match="code cells only"):
        student.student_notebook(node, "test.ipynb")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_student_copy_matches_its_notebook_except_the_stubs(path):
    """Same cells; code parses; before the first stub, cells are the solution notebook's (which the suite runs)."""
    source = nbformat.read(path, as_version=4)
    copy = nbformat.read(STUDENT_DIR / path.name, as_version=4)
    blocks = [block for index, cell in enumerate(source.cells) if cell.cell_type == "code"
              for block in student.find_blocks(cell.source, path.name, index)]
    assert len(blocks) <= 2 and (blocks or path.stem.startswith("00")), "1-2 solution blocks per notebook (00: none)"
    assert len(copy.cells) == len(source.cells)
    assert [c.cell_type for c in copy.cells] == [c.cell_type for c in source.cells]
    stub_cells = [i for i, c in enumerate(copy.cells)
                  if c.cell_type == "code" and "NotImplementedError(\"TODO: " in c.source]
    assert stub_cells == sorted({b.cell for b in blocks})
    assert "BEGIN SOLUTION" not in "".join(c.source for c in copy.cells)
    first = stub_cells[0] if stub_cells else len(copy.cells)
    for index in range(1, first):
        assert copy.cells[index].source == source.cells[index].source
    for cell in copy.cells:
        if cell.cell_type == "code":
            ast.parse(student._python(cell.source))
            assert cell.outputs == [] and cell.execution_count is None


def test_student_copy_runs_until_its_stub(tiny_default, tmp_path):
    """Executed on the tiny default, 01's student copy fails exactly at its stub, with the hint."""
    from nbclient.exceptions import CellExecutionError

    path = STUDENT_DIR / "01_badnet.ipynb"
    node = nbformat.read(path, as_version=4)
    stub = next(i for i, c in enumerate(node.cells) if c.cell_type == "code" and "TODO: " in c.source)
    parameters = {"LAB_ROOT": str(tiny_default), "EXPECTED_CLEAN_ACCURACY": [0.0, 100.0],
                  "EXPECTED_ATTACK_SUCCESS": [0.0, 100.0]}
    with pytest.raises(CellExecutionError) as error:
        notebooks.execute(path, tmp_path / path.name, parameters, timeout=300, cwd=tmp_path)
    assert "NotImplementedError" in str(error.value) and "TODO: accuracy_per_class" in str(error.value)
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    failed = [i for i, c in enumerate(executed.cells) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    # papermill's injected-parameters cell shifts indexes by one
    assert failed == [stub + 1]
    assert all(c.execution_count for c in executed.cells[:stub + 1] if c.cell_type == "code")
