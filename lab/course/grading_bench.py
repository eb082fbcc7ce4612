"""Seconds per graded submission: the notebooks (lab autograde / Gradescope zip, and nbgrader) and the challenge.

``python -m lab bench --grading-only [--grading-root DIR] [--challenge DIR]`` (``make bench`` runs it with
the rest):

- **notebooks, zip path**: every numbered notebook's solution graded by
  :func:`lab.course.autograde.grade_notebook` (what ``lab autograde`` and the
  Gradescope zip's ``run_autograder`` run), one after the other in one work
  folder as for one student, on the embedded default (built into a temporary
  folder unless ``--grading-root`` names a LAB_ROOT). A submission costs the
  sum over the notebooks the zip grades (those with exercises);
- **notebooks, nbgrader path**: ``nbgrader autograde`` on one student of a
  course made by ``python -m lab course`` holding every numbered notebook
  (nbgrader runs each notebook of the assignment, exercises or not);
- **challenge**: :func:`lab.course.challenge.grade_class` on the course's
  reference GoodNets (one per BadNet) of a challenge: ``--challenge DIR``
  (make-challenge's folder with student/ and grader/), else one made at
  make-challenge's default size into a temporary folder.

The class estimate assumes submissions are independent and each takes one
measured submission's seconds: ``class seconds = students x seconds /
parallel jobs``, jobs = cores / cores per job (TensorFlow uses every core it
is given, so one job per 2 cores is assumed; the printed figure says which).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASS_SIZE = 200
CORES_PER_JOB = 2


def _exercises(path: Path) -> int:
    import nbformat

    from lab.course.autograde import grade_cells

    return len(grade_cells(nbformat.read(path, as_version=4)))


def time_notebooks(lab_root: Path, work: Path) -> list[dict]:
    """``[{"notebook", "seconds", "earned", "possible", "exercises"}]`` grading every solution notebook once."""
    from lab.course import autograde, nbgrader_course

    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in nbgrader_course.course_notebooks():
        started = time.perf_counter()
        result = autograde.grade_notebook(path, path.parent, {"LAB_ROOT": str(lab_root)}, work, timeout=3600)
        rows.append({"notebook": path.name, "seconds": time.perf_counter() - started, "earned": result["earned"],
                     "possible": result["possible"], "exercises": _exercises(path)})
        print(f"  graded {path.name}: {rows[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    return rows


def time_nbgrader(lab_root: Path, folder: Path) -> float:
    """Seconds of ``nbgrader autograde lab`` for one student who handed in every solution notebook."""
    from lab.course import nbgrader_course

    course = folder / "course"
    report = nbgrader_course.build_course(course, parameters={"LAB_ROOT": str(lab_root)}, timeout=3600)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    nbgrader = [sys.executable, "-m", "nbgrader"]
    subprocess.run(nbgrader + ["generate_assignment", nbgrader_course.ASSIGNMENT], cwd=course, env=env, check=True,
                   capture_output=True)
    submitted = course / "submitted" / "student" / nbgrader_course.ASSIGNMENT
    submitted.mkdir(parents=True)
    for name in report["notebooks"]:
        shutil.copyfile(course / "source" / nbgrader_course.ASSIGNMENT / name, submitted / name)
    started = time.perf_counter()
    subprocess.run(nbgrader + ["autograde", nbgrader_course.ASSIGNMENT], cwd=course, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def time_challenge(challenge_dir: Path | None, folder: Path) -> dict:
    """``{"seconds", "badnets", "scores"}``: one submission (reference GoodNets) graded by grade_class."""
    from lab.course import challenge

    if challenge_dir is None:
        challenge_dir = folder / "challenge"
        challenge.make_challenge(challenge_dir, progress=False)
    reference = challenge.reference_submission(challenge_dir / "student", folder / "reference", threshold=10)
    submission = challenge.resolve_submissions([str(folder / "reference")], list(reference))
    started = time.perf_counter()
    rows = challenge.grade_class(challenge_dir / "grader", {"student": submission}, jobs=1)
    return {"seconds": time.perf_counter() - started, "badnets": len(rows),
            "scores": [round(row["score"], 1) for row in rows]}


def time_grading(lab_root: str | Path | None = None, challenge_dir: str | Path | None = None,
                 nbgrader: bool = True) -> dict:
    """Every measurement of the module docstring; ``{"notebooks", "nbgrader_seconds", "challenge", "lab_root"}``."""
    from lab.course.bench import time_default_build

    with tempfile.TemporaryDirectory(prefix="grading-bench-") as scratch:
        scratch = Path(scratch)
        if lab_root is None:
            lab_root = scratch / "default"
            time_default_build(out=str(lab_root))
        rows = time_notebooks(Path(lab_root), scratch / "work")
        nbgrader_seconds = time_nbgrader(Path(lab_root), scratch) if nbgrader else None
        if nbgrader_seconds is not None:
            print(f"  nbgrader autograde, one student: {nbgrader_seconds:.1f} s", file=sys.stderr, flush=True)
        chal = time_challenge(Path(challenge_dir) if challenge_dir else None, scratch)
        print(f"  challenge, one submission: {chal['seconds']:.1f} s", file=sys.stderr, flush=True)
    return {"notebooks": rows, "nbgrader_seconds": nbgrader_seconds, "challenge": chal, "lab_root": str(lab_root)}


def class_cost(seconds: float, cores: int, students: int = CLASS_SIZE) -> float:
    """Wall seconds for ``students`` submissions of ``seconds`` each on ``cores`` (one job per 2 cores)."""
    return students * seconds / max(1, cores // CORES_PER_JOB)


def format_grading(result: dict) -> str:
    """The per-notebook table, seconds per submission on each path, and what a class of 200 costs."""
    lines = ["grading, seconds per submission (solution notebooks on the embedded default; "
             f"{os.cpu_count()} cores here):"]
    width = max(len(r["notebook"]) for r in result["notebooks"])
    for row in result["notebooks"]:
        lines.append(f"  {row['notebook']:<{width}}  {row['seconds']:7.1f} s  {row['earned']:g} / {row['possible']:g} "
                     f"points, {row['exercises']} exercises")
    zipped = sum(r["seconds"] for r in result["notebooks"] if r["exercises"])
    paths = [("lab autograde / Gradescope zip (notebooks with exercises)", zipped)]
    if result["nbgrader_seconds"] is not None:
        paths.append(("nbgrader autograde (every notebook of the assignment)", result["nbgrader_seconds"]))
    chal = result["challenge"]
    paths.append((f"challenge ({chal['badnets']} BadNets, reference GoodNets scoring {chal['scores']})",
                  chal["seconds"]))
    for name, seconds in paths:
        lines.append(f"  {name}: {seconds:.1f} s per submission; a class of {CLASS_SIZE}: "
                     f"{class_cost(seconds, 2) / 3600:.1f} h on 2 cores, {class_cost(seconds, 16) / 3600:.1f} h "
                     f"on 16 cores (one job per {CORES_PER_JOB} cores)")
    return "\n".join(lines)
