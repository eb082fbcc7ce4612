"""Student copies of the notebooks, made by nbgrader's ``generate_assignment``.

The notebooks in ``notebooks/`` are nbgrader *source* notebooks (one
source, solutions inside, as nbgrader does it):

- a **solution cell** (cell metadata ``nbgrader.solution: true``) holds the
  answer between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the student
  copy has ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` there;
- an **autograded test cell** (``nbgrader.grade: true``, ``points``,
  ``locked``) checks the answer; lines between ``### BEGIN HIDDEN TESTS`` and
  ``### END HIDDEN TESTS`` are taken out of the student copy and put back by
  ``python -m lab autograde`` (:mod:`lab.course.autograde`);
- a **written question** is a manually graded answer cell: a markdown
  cell with ``nbgrader.grade`` and ``nbgrader.solution`` both true and its
  ``points``, whose source holds a model answer between ``### BEGIN
  SOLUTION`` and ``### END SOLUTION`` (what a good answer contains, for the
  person grading); the student copy has ``YOUR ANSWER HERE`` there. The
  question itself, its points in its heading, is the markdown cell above.
  As in nbgrader, such a cell is never autograded: ``nbgrader autograde``
  leaves its score to formgrader, and ``python -m lab autograde`` and the
  Gradescope zip list its points apart, as to be graded by hand.

:func:`render_all` runs nbgrader's real ``GenerateAssignment`` converter on
a temporary course folder (``source/lab/*.ipynb`` -> ``release/lab/``), with
its default preprocessors except ``SaveCells`` (no gradebook database: the
autograder reads the hidden tests from the source notebooks instead), so
``student/`` holds exactly what ``nbgrader generate_assignment`` releases.
``python -m lab student --check`` (and a test) fails when ``student/`` is stale.

Before nbgrader runs, :func:`check_metadata` refuses, in one line naming
the notebook and cell, what nbgrader would report as a traceback: a solution
region in a cell not marked as a solution, hidden tests outside a test cell,
a test cell without points, duplicate ``grade_id`` values, a written
question that is not a markdown cell or holds no model answer, a
manually graded *task* cell (the lab's graders do not report them).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from lab.errors import LabInputError
from lab.paths import PROJECT_ROOT

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUDENT_DIR = PROJECT_ROOT / "student"
SOURCE_DIR = PROJECT_ROOT / "notebooks"
README = "README.md"
ASSIGNMENT = "lab"


def source_notebooks(directory: Path = SOURCE_DIR) -> list[Path]:
    """The notebooks students get: the numbered ones (instructor ``A*`` and ``*.nbconvert.ipynb`` copies stay out)."""
    return sorted(p for p in Path(directory).glob("[0-9][0-9]_*.ipynb") if not p.name.endswith(".nbconvert.ipynb"))


def is_autograded(cell) -> bool:
    """An autograded test cell: ``grade`` without ``solution``."""
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def is_written(cell) -> bool:
    """A manually graded answer (a written question's answer cell): ``grade`` and ``solution``."""
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and bool(meta.get("solution"))


def _points(cells) -> list[dict]:
    return [{"grade_id": cell.metadata["nbgrader"]["grade_id"], "points": float(cell.metadata["nbgrader"]["points"])}
            for cell in cells]


def exercises(node) -> list[dict]:
    """The autograded test cells of a notebook, in order: ``[{"grade_id", "points"}]``."""
    return _points(cell for cell in node.cells if is_autograded(cell))


def written_questions(node) -> list[dict]:
    """The manually graded answer cells of a notebook, in order: ``[{"grade_id", "points"}]``."""
    return _points(cell for cell in node.cells if is_written(cell))


def check_metadata(node, name: str = "notebook") -> None:
    """Raise one line for nbgrader markers and metadata that do not fit together (see the module docstring)."""
    seen = set()
    for index, cell in enumerate(node.cells):
        where = f"{name} cell {index}"
        meta = cell.metadata.get("nbgrader")
        source = cell.source
        if (BEGIN in source or END in source) and not (meta and meta.get("solution")):
            raise LabInputError(where, f"'{BEGIN}' only in cells marked as solutions (metadata nbgrader.solution: true)",
                                "a solution region in an unmarked cell")
        if (BEGIN_HIDDEN in source or END_HIDDEN in source) and not (meta and meta.get("grade") and not meta.get("solution")):
            raise LabInputError(where, f"'{BEGIN_HIDDEN}' only in autograded test cells (nbgrader.grade: true)",
                                "hidden tests in another cell")
        if source.count(BEGIN) != source.count(END) or source.count(BEGIN_HIDDEN) != source.count(END_HIDDEN):
            raise LabInputError(where, "every BEGIN marker closed by its END marker", "unbalanced markers")
        if not meta:
            continue
        if meta.get("grade_id") in seen:
            raise LabInputError(where, "a unique nbgrader grade_id", f"{meta.get('grade_id')!r} twice")
        seen.add(meta.get("grade_id"))
        if meta.get("grade") and not float(meta.get("points", 0)) > 0:
            raise LabInputError(where, "points > 0 in an autograded cell", repr(meta.get("points")))
        if meta.get("solution") and BEGIN not in source and cell.cell_type == "code":
            raise LabInputError(where, f"a '{BEGIN}' region in a solution cell", "none")
        if meta.get("task"):
            raise LabInputError(where, "an autograded test or a written question (grade and solution)",
                                "a manually graded task cell")
        if is_written(cell) and cell.cell_type != "markdown":
            raise LabInputError(where, "a written question's answer in a markdown cell", f"a {cell.cell_type} cell")
        if is_written(cell) and BEGIN not in source:
            raise LabInputError(where, f"a model answer between '{BEGIN}' and '{END}' in a written question", "none")


def _generate(source_dir: Path, out_dir: Path, names: list[str]) -> None:
    """Run nbgrader's GenerateAssignment on ``names`` from ``source_dir``; release copies land in ``out_dir``."""
    import shutil

    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="nbgrader-course-") as course:
        source = Path(course) / "source" / ASSIGNMENT
        source.mkdir(parents=True)
        for name in names:
            shutil.copyfile(source_dir / name, source / name)
        config = Config()
        config.CourseDirectory.root = course
        config.GenerateAssignment.no_database = True
        config.GenerateAssignment.create_assignment = True
        default = GenerateAssignment.class_traits()["preprocessors"].default()
        config.GenerateAssignment.preprocessors = [p for p in default if p.__name__ != "SaveCells"]
        log = logging.getLogger("lab.course.student.nbgrader")
        log.propagate = False
        messages = _Collect()
        log.handlers = [messages]
        coursedir = CourseDirectory(config=config)
        coursedir.assignment_id = ASSIGNMENT
        converter = GenerateAssignment(coursedir=coursedir, config=config, log=log)
        try:
            converter.start()
        except Exception as error:  # noqa: BLE001  (nbgrader raises NbGraderException; its reason is in the log)
            reason = messages.errors[-1] if messages.errors else str(error)
            raise LabInputError(source_dir, "notebooks nbgrader's generate_assignment accepts",
                                reason.strip().splitlines()[-1]) from None
        release = Path(course) / "release" / ASSIGNMENT
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(release / name, out_dir / name)


class _Collect(logging.Handler):
    """Keeps nbgrader's error messages (it logs the reason and raises a generic exception)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.errors: list[str] = []

    def emit(self, record):
        self.errors.append(record.getMessage())


def _cells(items: list[dict]) -> str:
    return ", ".join(f"`{i['grade_id']}` ({i['points']:g})" for i in items) or "none"


def _readme(summary: dict[str, dict[str, list[dict]]]) -> str:
    """``summary``: ``{notebook: {"exercises": [...], "written": [...]}}`` (see :func:`exercises`)."""
    rows = "\n".join(f"| `{name}` | {len(items['exercises'])} | {sum(i['points'] for i in items['exercises']):g} | "
                     f"{_cells(items['exercises'])} | {_cells(items['written'])} |"
                     for name, items in summary.items())
    total = sum(i["points"] for items in summary.values() for i in items["exercises"])
    written = sum(i["points"] for items in summary.values() for i in items["written"])
    return f"""# Student copies of the notebooks

Generated by nbgrader's `generate_assignment` (`python -m lab student`, `make student`)
from the source notebooks in `notebooks/`: do not edit them here; change the
notebooks and regenerate. Each solution region is replaced by
`raise NotImplementedError()`, hidden tests are taken out, outputs are cleared,
test cells are locked. The test suite checks that these files are what the
notebooks give now (`python -m lab student --check`).

Each exercise has a check cell: run it after your answer; it says what is
wrong. Instructors grade with `python -m lab autograde DIR` (hidden tests put
back from `notebooks/`).

Each written question (its points in its heading) asks what the results of
your own run mean: write your answer, with the numbers your run printed, in
the cell below it (`YOUR ANSWER HERE`). Written answers are graded by hand
(nbgrader's formgrader), never by the autograder.

| Notebook | Exercises | Autograded points | Autograded cells (points) | Written questions, graded by hand (points) |
|---|---|---|---|---|
{rows}

Total: {total:g} autograded points and {written:g} points of written questions graded by hand.
"""


def render_all(source_dir: Path = SOURCE_DIR) -> dict[str, str]:
    """Every file of the student folder as text: ``{file name: content}`` (notebooks and the README)."""
    import nbformat

    paths = source_notebooks(source_dir)
    summary = {}
    for path in paths:
        node = nbformat.read(path, as_version=4)
        check_metadata(node, path.name)
        summary[path.name] = {"exercises": exercises(node), "written": written_questions(node)}
    files = {}
    with tempfile.TemporaryDirectory() as out:
        _generate(Path(source_dir), Path(out), [p.name for p in paths])
        for path in paths:
            files[path.name] = (Path(out) / path.name).read_text(encoding="utf-8")
    files[README] = _readme(summary)
    return files


def check(out: Path = STUDENT_DIR, source_dir: Path = SOURCE_DIR) -> list[str]:
    """What differs between ``out`` and freshly generated copies (empty when current)."""
    expected = render_all(source_dir)
    problems = []
    for name, text in expected.items():
        path = Path(out) / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: out of date")
    for path in sorted(Path(out).glob("*.ipynb")):
        if path.name not in expected:
            problems.append(f"{path}: no such notebook in {source_dir} any more")
    return problems


def write(out: Path = STUDENT_DIR, source_dir: Path = SOURCE_DIR) -> list[Path]:
    """Write the student copies into ``out`` (removing copies of notebooks that are gone); returns the paths."""
    expected = render_all(source_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for path in out.glob("*.ipynb"):
        if path.name not in expected:
            path.unlink()
    written = []
    for name, text in expected.items():
        (out / name).write_text(text, encoding="utf-8", newline="\n")  # the same bytes on every platform
        written.append(out / name)
    return written


def main(argv: list[str] | None = None, prog: str = "python -m lab.course.student") -> int:
    """The program behind ``python -m lab student`` (and ``python -m lab.course.student``)."""
    from lab.errors import LabError

    parser = argparse.ArgumentParser(prog=prog,
                                     description="Write student copies of the numbered notebooks with nbgrader's "
                                                 "generate_assignment (solutions and hidden tests out).")
    parser.add_argument("--check", action="store_true", help="only check that the copies are current (exit 1 if not)")
    parser.add_argument("--out", default=str(STUDENT_DIR), help="folder of the copies (default student/)")
    parser.add_argument("--notebooks", default=str(SOURCE_DIR), help="folder of the source notebooks")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(Path(args.out), Path(args.notebooks))
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                print("run `python -m lab student` (make student) to regenerate", file=sys.stderr)
                return 1
            print(f"student copies in {args.out} are current")
            return 0
        for path in write(Path(args.out), Path(args.notebooks)):
            print(f"wrote {path}")
        return 0
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
