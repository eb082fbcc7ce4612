"""Autograding submitted notebooks with nbgrader's preprocessors, without a gradebook database.

``python -m lab autograde DIR_OR_NOTEBOOKS... [--json] [--out grades.csv]``

For every submitted notebook (``*.ipynb`` under each DIR, or the files
given), what ``nbgrader autograde`` does, step by step:

1. find its source (the instructor's version with solutions and hidden
   tests): the notebook of the same file name in ``--source`` (default
   ``notebooks/``);
2. sanitize: ``ClearOutput``, ``DeduplicateIds``, then put back the source
   of every locked or autograded cell from the source notebook, matched by
   ``grade_id`` (nbgrader's ``OverwriteCells`` does this from its database):
   the hidden tests come back and a student cannot edit a test to pass it;
   ``CheckCellMetadata``;
3. run it with nbgrader's ``Execute`` (``allow_errors``: a crash in one
   exercise does not stop the others) and ``LimitOutput``, with papermill
   parameters injected after the ``parameters`` cell (``-p NAME VALUE``;
   ``OUT_DIR`` and ``PRUNED_DIR`` point into a work folder per student, so
   students' files never mix and 04 finds the B' its own 03 saved);
4. score each autograded cell with ``nbgrader.utils.determine_grade``:
   full points unless the cell raised or wrote to stderr.

Written questions (manually graded answer cells, see
:mod:`lab.course.student`) are never scored here, as ``nbgrader
autograde`` leaves them to formgrader: each result lists them apart
(``written``: points possible, whether the student wrote anything, the
answer's text) and their points are in neither ``earned`` nor
``possible``, which count the autograded cells only. An answer left as
released (nbgrader's checksum unchanged, or ``YOUR ANSWER HERE``) is
reported as not answered.

Points per student and exercise go to a CSV (``--out``) and to stdout
(a written question's row: no points earned, "to be graded by hand").
A submitted test cell that is missing scores zero ("missing").
Notebooks named ``*.nbconvert.ipynb`` (left by ``jupyter nbconvert
--execute``) and checkpoints are ignored.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from lab.errors import LabInputError
from lab.paths import PROJECT_ROOT

SOURCE_DIR = PROJECT_ROOT / "notebooks"
WORK_PARAMETERS = ("OUT_DIR", "PRUNED_DIR")  # where notebooks write and read their models: one folder per student


def is_notebook(path: Path) -> bool:
    """A notebook a grader should look at: not an nbconvert leftover, not a checkpoint."""
    return (path.suffix == ".ipynb" and not path.name.endswith(".nbconvert.ipynb")
            and ".ipynb_checkpoints" not in path.parts)


def find_submissions(arguments) -> list[tuple[str, Path]]:
    """``[(student, notebook path)]`` for folders and files; a student is the folder holding the notebook.

    For a folder argument the student is the notebook's folder relative to
    it (``submitted/alice/lab/03.ipynb`` under ``submitted`` -> ``alice/lab``),
    the folder's own name for notebooks directly in it; for a file, its folder's name.
    """
    found = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            notebooks = sorted(p for p in path.rglob("*.ipynb") if is_notebook(p.relative_to(path)))
            # a folder of one student's notebooks is that student; a folder of folders holds one per student
            found += [(p.parent.relative_to(path).as_posix() if p.parent != path else path.resolve().name, p)
                      for p in notebooks]
        elif path.is_file() and is_notebook(path):
            found.append((path.parent.name or ".", path))
        elif path.is_file():
            raise LabInputError(path, "a notebook (.ipynb, not an nbconvert copy)", path.suffix or "no suffix")
        else:
            raise LabInputError(path, "a submitted notebook or a folder of them", "no such file or folder")
    if not found:
        raise LabInputError(" ".join(str(a) for a in arguments), "at least one submitted notebook", "none")
    return sorted(found, key=lambda item: (item[0], item[1].name))


TO_GRADE = "to be graded by hand (nbgrader's formgrader)"
NOT_ANSWERED = "not answered"
TEXT_STUB = "YOUR ANSWER HERE"  # what nbgrader's ClearSolutions leaves in a released written answer


def grade_cells(node) -> dict[str, object]:
    """``{grade_id: cell}`` of the autograded test cells (nbgrader ``grade`` without ``solution``) of a notebook."""
    from lab.course.student import is_autograded

    return {cell.metadata["nbgrader"]["grade_id"]: cell for cell in node.cells if is_autograded(cell)}


def written_cells(node) -> dict[str, object]:
    """``{grade_id: cell}`` of the written questions' answer cells (``grade`` and ``solution``) of a notebook."""
    from lab.course.student import is_written

    return {cell.metadata["nbgrader"]["grade_id"]: cell for cell in node.cells if is_written(cell)}


def written_answers(submitted, source) -> dict[str, dict]:
    """``{grade_id: {"possible", "answered", "status", "answer"}}`` for every written question of ``source``.

    Nothing is scored: an answer is either not answered (missing, or as
    released) or to be graded by hand.
    """
    from nbgrader.utils import determine_grade

    cells = written_cells(submitted) if submitted is not None else {}
    answers = {}
    for grade_id, original in written_cells(source).items():
        cell = cells.get(grade_id)
        text = cell.source.strip() if cell is not None else ""
        answered = bool(text) and text != TEXT_STUB and determine_grade(cell)[0] is None
        answers[grade_id] = {"possible": float(original.metadata["nbgrader"]["points"]), "answered": answered,
                             "status": TO_GRADE if answered else NOT_ANSWERED, "answer": text if answered else ""}
    return answers


def restore_cells(submission, source) -> list[str]:
    """Put back the source and metadata of every locked or graded cell from ``source``; return notes.

    What ``nbgrader.preprocessors.OverwriteCells`` does with the gradebook:
    a student's copy lost its hidden tests (``ClearHiddenTests``) and may
    have edited a test; the instructor's version counts.
    """
    reference = {cell.metadata["nbgrader"]["grade_id"]: cell for cell in source.cells
                 if "nbgrader" in cell.metadata}
    notes = []
    for cell in submission.cells:
        meta = cell.metadata.get("nbgrader")
        if not meta or meta.get("grade_id") not in reference:
            continue
        original = reference[meta["grade_id"]]
        if original.metadata["nbgrader"].get("locked") or original.metadata["nbgrader"].get("grade") and \
                not original.metadata["nbgrader"].get("solution"):
            cell.source = original.source
            cell.cell_type = original.cell_type
            cell.metadata["nbgrader"] = dict(original.metadata["nbgrader"])
        else:  # a solution cell: the student's code stays, its points and id come from the source
            cell.metadata["nbgrader"].update({key: original.metadata["nbgrader"][key]
                                              for key in ("grade", "solution", "points") if key in original.metadata["nbgrader"]})
    return notes


def declared_parameters(node) -> set[str]:
    """Names assigned in the cell tagged ``parameters``."""
    import ast

    for cell in node.cells:
        if "parameters" in cell.metadata.get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                return set()
            return {target.id for stmt in tree.body if isinstance(stmt, ast.Assign)
                    for target in stmt.targets if isinstance(target, ast.Name)}
    return set()


def _first_error(cell) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {str(output.get('evalue', '')).splitlines()[0] if output.get('evalue') else ''}"
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            return "wrote to stderr: " + output.get("text", "").strip().splitlines()[0][:200]
    return ""


def cell_text(cell) -> str:
    """What a cell printed (streams, plain-text results, errors without traceback frames), for feedback."""
    parts = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            parts.append(output.get("text", ""))
        elif kind in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
        elif kind == "error":
            parts.append(f"{output.get('ename')}: {output.get('evalue', '')}")
    return "".join(part if part.endswith("\n") else part + "\n" for part in parts if part).strip()


def grade_notebook(path: Path, source_dir: Path = SOURCE_DIR, parameters: dict | None = None,
                   work: Path | None = None, timeout: int = 600, keep: Path | None = None) -> dict:
    """Autograde one submitted notebook; returns ``{"notebook", "earned", "possible", "exercises", "written"}``.

    ``exercises`` maps each autograded grade_id to ``{"earned", "possible", "error"}`` (and ``"output"``,
    what the test cell printed, when it ran); ``earned`` and ``possible`` sum them. ``written`` maps each
    written question's grade_id to what :func:`written_answers` says (never scored).
    ``work``: the folder OUT_DIR/PRUNED_DIR point to. ``keep``: where to
    write the executed notebook (for feedback), if given.
    """
    import nbformat
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, DeduplicateIds, Execute, LimitOutput
    from nbgrader.utils import determine_grade
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    source_path = Path(source_dir) / path.name
    if not source_path.exists():
        raise LabInputError(path, f"a notebook named like one in {source_dir} (its source with the hidden tests)",
                            f"no {path.name} there")
    source = nbformat.read(source_path, as_version=4)
    try:
        node = nbformat.read(path, as_version=4)
    except Exception as error:  # noqa: BLE001  (a broken submission scores zero, it does not stop the grader)
        return _unreadable(path, source, f"{type(error).__name__}: {error}")
    resources: dict = {}
    for preprocessor in (ClearOutput(), DeduplicateIds()):
        node, resources = preprocessor.preprocess(node, resources)
    restore_cells(node, source)
    node, resources = CheckCellMetadata().preprocess(node, resources)
    values = dict(parameters or {})
    declared = declared_parameters(node)
    if work is not None:
        values.update({name: str(work) for name in WORK_PARAMETERS if name in declared})
    values = {name: value for name, value in values.items() if name in declared}
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / path.name
        nbformat.write(node, staged)
        node = load_notebook_node(str(staged))
        if values:
            node = parameterize_notebook(node, values)
        executor = Execute(timeout=timeout, allow_errors=True)
        node, _ = executor.preprocess(node, {"metadata": {"path": str(work or path.parent)}})
    node, _ = LimitOutput().preprocess(node, {})
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(node, keep)
    submitted = grade_cells(node)
    exercises = {}
    for grade_id, original in grade_cells(source).items():
        possible = float(original.metadata["nbgrader"]["points"])
        cell = submitted.get(grade_id)
        if cell is None:
            exercises[grade_id] = {"earned": 0.0, "possible": possible, "error": "missing"}
            continue
        earned, _ = determine_grade(cell)
        exercises[grade_id] = {"earned": float(earned or 0.0), "possible": possible, "error": _first_error(cell),
                               "output": cell_text(cell)}
    return {"notebook": path.name, "path": str(path),
            "earned": sum(e["earned"] for e in exercises.values()),
            "possible": sum(e["possible"] for e in exercises.values()), "exercises": exercises,
            "written": written_answers(node, source)}


def _unreadable(path: Path, source, reason: str) -> dict:
    exercises = {grade_id: {"earned": 0.0, "possible": float(cell.metadata["nbgrader"]["points"]), "error": reason}
                 for grade_id, cell in grade_cells(source).items()}
    return {"notebook": path.name, "path": str(path), "earned": 0.0,
            "possible": sum(e["possible"] for e in exercises.values()), "exercises": exercises,
            "written": written_answers(None, source)}


def autograde(arguments, source_dir: Path = SOURCE_DIR, parameters: dict | None = None, work: Path | None = None,
              timeout: int = 600, keep: Path | None = None) -> list[dict]:
    """Grade every submission; one result per notebook (see :func:`grade_notebook`) with ``student`` added."""
    submissions = find_submissions(arguments)
    results = []
    with tempfile.TemporaryDirectory(prefix="autograde-") as scratch:
        base = Path(work) if work is not None else Path(scratch)
        for student, path in submissions:
            folder = base / (student.replace("/", "__") or "_")
            folder.mkdir(parents=True, exist_ok=True)
            kept = None if keep is None else Path(keep) / folder.name / path.name
            result = grade_notebook(path, source_dir, parameters, folder, timeout, kept)
            results.append({"student": student, **result})
    return results


def write_csv(results: list[dict], out: Path) -> Path:
    """One row per student, notebook and exercise: points earned and possible, and why points were lost.

    A written question's row has no points earned (an empty cell) and says whether it waits to be graded by hand.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "notebook", "exercise", "earned", "possible", "error"])
        for result in results:
            for grade_id, exercise in result["exercises"].items():
                writer.writerow([result["student"], result["notebook"], grade_id, f"{exercise['earned']:g}",
                                 f"{exercise['possible']:g}", exercise["error"]])
            for grade_id, answer in result.get("written", {}).items():
                writer.writerow([result["student"], result["notebook"], grade_id, "", f"{answer['possible']:g}",
                                 answer["status"]])
    return out


def format_results(results: list[dict]) -> str:
    """A table a person reads: one line per exercise and written question, a total per notebook and per student.

    Totals are autograded points; the points of written questions follow them, as graded by hand.
    """
    lines, totals = [], {}
    for result in results:
        written = result.get("written", {})
        by_hand = sum(answer["possible"] for answer in written.values())
        extra = f" (+ {by_hand:g} graded by hand)" if written else ""
        lines.append(f"{result['student']}  {result['notebook']}: {result['earned']:g} / {result['possible']:g}{extra}")
        for grade_id, exercise in result["exercises"].items():
            why = f"  ({exercise['error'][:150]})" if exercise["error"] else ""
            lines.append(f"    {grade_id:<32} {exercise['earned']:g} / {exercise['possible']:g}{why}")
        for grade_id, answer in written.items():
            lines.append(f"    {grade_id:<32} - / {answer['possible']:g}  ({answer['status']})")
        earned, possible, hand = totals.get(result["student"], (0.0, 0.0, 0.0))
        totals[result["student"]] = (earned + result["earned"], possible + result["possible"], hand + by_hand)
    for student, (earned, possible, hand) in totals.items():
        extra = f" autograded, + {hand:g} points graded by hand" if hand else ""
        lines.append(f"total {student}: {earned:g} / {possible:g}{extra}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="+", metavar="DIR_OR_NOTEBOOK",
                        help="submitted notebooks, or folders of them (one sub-folder per student)")
    parser.add_argument("--source", default=str(SOURCE_DIR),
                        help="folder of the source notebooks (solutions and hidden tests; default notebooks/)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per notebook (student, notebook, earned, possible, exercises)")
    parser.add_argument("--out", metavar="CSV", help="write points per student and exercise to this CSV file")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a notebook parameter (papermill-style; VALUE read as JSON when it parses), "
                             "e.g. -p LAB_ROOT /path/to/course -p N_TEST 200")
    parser.add_argument("--work", help="folder for what the notebooks write, one sub-folder per student "
                                       "(default: a temporary folder)")
    parser.add_argument("--keep", help="write the executed notebooks here (feedback for students)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def parse_parameters(pairs) -> dict:
    parameters = {}
    for name, value in pairs:
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name] = value
    return parameters


def run(args: argparse.Namespace) -> int:
    """The ``autograde`` command."""
    from lab.errors import check_writable

    if args.out:
        check_writable(args.out, getattr(args, "force", False))
    results = autograde(args.submissions, Path(args.source), parse_parameters(args.parameter),
                        Path(args.work) if args.work else None, args.timeout, Path(args.keep) if args.keep else None)
    if args.out:
        write_csv(results, Path(args.out))
    if args.json:
        for result in results:
            print(json.dumps(result))
    else:
        print(format_results(results))
        if args.out:
            print(f"points per student and exercise: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab autograde", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
