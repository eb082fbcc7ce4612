"""An nbgrader course directory for the lab, laid out as nbgrader documents it.

``python -m lab course --out DIR [--notebook STEM ...] [-p NAME VALUE ...] [--course-id ID] [--timeout S]``
(``make course``) writes::

    DIR/nbgrader_config.py     course id, root, the SQLite gradebook DIR/gradebook.db, Execute timeout
    DIR/source/lab/NN_*.ipynb  the source notebooks (solutions, hidden tests) of the numbered notebooks

and nothing else: no data, no models, no answer keys. From ``DIR`` the
ordinary nbgrader commands run: ``nbgrader generate_assignment lab``,
``nbgrader autograde lab`` on ``submitted/<student>/lab/``, formgrader,
``nbgrader generate_feedback lab``, ``nbgrader export``.

One assignment for the whole lab, not one per notebook: ``04_goodnet``
reads the B' files its student's ``03_pruning`` saved, and nbgrader runs
each student's notebooks of one assignment in one folder
(``submitted/<student>/lab/``), so 04 finds them there. Each course notebook's
``OUT_DIR`` / ``PRUNED_DIR`` is rewritten to ``build/models`` under the
folder the notebook runs in (:data:`WORK_FOLDER_LINE`) instead of under the
lab's root: two students graded one after the other never read or overwrite
each other's models.

``-p NAME VALUE`` bakes a parameter into every course notebook that
declares it (the same parameters ``lab autograde -p`` takes), e.g. ``-p
LAB_ROOT /srv/course-data`` or small sample counts for a quick class run.
The written questions of the notebooks (manually graded answer cells:
``solution`` and ``grade``, see :mod:`lab.course.student`) need nothing
here: nbgrader's own preprocessors give them no autograde score and keep
them for formgrader.
"""

from __future__ import annotations

import argparse
import ast
import shutil
from pathlib import Path

from lab.errors import LabInputError
from lab.paths import PROJECT_ROOT

ASSIGNMENT = "lab"
COURSE_ID = "badnet-lab"
SOURCE_DIR = PROJECT_ROOT / "notebooks"
DEFAULT_TIMEOUT = 1800  # seconds per cell: the real-scale fine-tuning and repair cells take minutes on 2 cores
WORK_PARAMETERS = ("OUT_DIR", "PRUNED_DIR")
WORK_FOLDER_LINE = '{name} = __import__("os").path.abspath("build/models")   # course: under this notebook\'s own folder'

CONFIG = '''"""nbgrader configuration of the BadNet Pruning Lab course (written by `python -m lab course`)."""

import os

c = get_config()  # noqa: F821 (nbgrader provides it)
HERE = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.root = HERE
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, "gradebook.db")
c.GenerateAssignment.create_assignment = True  # `nbgrader generate_assignment lab` adds it to the gradebook
c.Autograde.create_student = True              # students found in submitted/ join the gradebook
# Seconds per cell: pruning sweeps and fine-tuning take minutes at the lab's real size.
c.Execute.timeout = {timeout}
c.Execute.interrupt_on_timeout = True  # a hung cell loses its exercise; nbgrader goes on with the next cells
'''


def course_notebooks(source_dir: Path = SOURCE_DIR, stems=None) -> list[Path]:
    """The numbered notebooks (or those named by ``stems``, e.g. ``01_badnet``), in order."""
    from lab.course.student import source_notebooks

    available = {p.stem: p for p in source_notebooks(source_dir)}
    if not stems:
        return list(available.values())
    unknown = [s for s in stems if Path(s).stem not in available]
    if unknown:
        raise LabInputError(source_dir, f"notebooks among {', '.join(available)}", f"{', '.join(unknown)}")
    return [available[Path(s).stem] for s in dict.fromkeys(stems)]


def bake_parameters(node, values: dict, work_folder: bool = True) -> list[str]:
    """Rewrite assignments in ``node``'s ``parameters`` cell; return the names set.

    ``values``: ``{NAME: value}``; a name the notebook does not declare is
    skipped. With ``work_folder``, ``OUT_DIR`` and ``PRUNED_DIR`` point under
    the folder the notebook runs in (see the module docstring) unless
    ``values`` sets them.
    """
    cell = next((c for c in node.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return []
    lines = cell.source.splitlines()
    assignments = {}
    for statement in ast.parse(cell.source).body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and \
                isinstance(statement.targets[0], ast.Name):
            assignments[statement.targets[0].id] = (statement.lineno - 1, statement.end_lineno)
    wanted = {name: f"{name} = {value!r}   # set by python -m lab course" for name, value in values.items()}
    if work_folder:
        for name in WORK_PARAMETERS:
            wanted.setdefault(name, WORK_FOLDER_LINE.format(name=name))
    done = []
    for name, (start, end) in sorted(assignments.items(), key=lambda item: -item[1][0]):
        if name in wanted:
            while end < len(lines) and lines[end].startswith((" ", "\t")) and lines[end].strip().startswith("#"):
                end += 1  # the old value's comment, continued on indented lines, goes with it
            lines[start:end] = [wanted[name]]
            done.append(name)
    cell.source = "\n".join(lines)
    return sorted(done)


def build_course(out: str | Path, stems=None, parameters: dict | None = None, course_id: str = COURSE_ID,
                 timeout: int = DEFAULT_TIMEOUT, source_dir: Path = SOURCE_DIR, force: bool = False) -> dict:
    """Write the course directory (see the module docstring); returns ``{"root", "config", "notebooks"}``.

    Refuses a ``DIR`` that already holds ``source/`` unless ``force``
    (then ``source/lab`` and the config are replaced; a gradebook, submissions
    and feedback already there stay).
    """
    import nbformat

    out = Path(out)
    source = out / "source" / ASSIGNMENT
    if source.exists() and not force:
        raise LabInputError(source, "a course folder not written yet (--force replaces source/ and the config)",
                            "it exists")
    if not isinstance(timeout, int) or timeout < 1:
        raise LabInputError(None, "--timeout S with S >= 1 seconds", repr(timeout))
    notebooks = course_notebooks(source_dir, stems)
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    baked = {}
    for path in notebooks:
        node = nbformat.read(path, as_version=4)
        baked[path.name] = bake_parameters(node, dict(parameters or {}))
        nbformat.write(node, source / path.name)
    config = out / "nbgrader_config.py"
    config.write_text(CONFIG.format(course_id=course_id, timeout=timeout), encoding="utf-8")
    return {"root": out, "config": config, "notebooks": baked}


def parse_parameters(pairs) -> dict:
    """``[(NAME, VALUE)]`` -> ``{NAME: value}``, VALUE read as JSON when it parses (as ``lab autograde -p``)."""
    from lab.course.autograde import parse_parameters as parse

    return parse(pairs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="the course folder to write")
    parser.add_argument("--notebook", action="append", default=[], metavar="STEM",
                        help="only these notebooks (repeat; e.g. 01_badnet; default every numbered notebook)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="bake a parameter into the course notebooks (VALUE read as JSON when it parses), "
                             "e.g. -p LAB_ROOT /srv/course-data -p N_TEST 200")
    parser.add_argument("--course-id", default=COURSE_ID, help=f"nbgrader course id (default {COURSE_ID})")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                        help=f"seconds a cell may run when nbgrader executes it (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--force", action="store_true", help="replace source/ and nbgrader_config.py in DIR")


def run(args: argparse.Namespace) -> int:
    """The ``course`` command."""
    report = build_course(args.out, args.notebook, parse_parameters(args.parameter), args.course_id, args.timeout,
                          force=args.force)
    print(f"nbgrader course: {report['root']} (assignment '{ASSIGNMENT}', "
          f"{len(report['notebooks'])} notebooks; gradebook {Path(report['root']) / 'gradebook.db'})")
    for name, baked in report["notebooks"].items():
        print(f"  source/{ASSIGNMENT}/{name}: {', '.join(baked) or 'as in notebooks/'}")
    print(f"next: cd {report['root']} && nbgrader generate_assignment {ASSIGNMENT}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab course", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

