"""Gradescope autograder zips: the notebooks (hidden tests restored) or the hidden-trigger challenge.

``python -m lab gradescope --out autograder.zip [--notebook STEM ...] [-p NAME VALUE ...] [--data DIR]``
``python -m lab gradescope --challenge GRADER_DIR --out challenge.zip``

Gradescope unpacks the zip into ``/autograder/source/``, runs ``setup.sh``
there once (as root, on its Ubuntu image) to build the image, then for each
submission puts the student's files in ``/autograder/submission/`` and runs
``/autograder/run_autograder``, which must write
``/autograder/results/results.json``. The zip holds:

- ``setup.sh``: finds (or installs with apt) Python 3.11-3.13, makes
  ``/autograder/venv`` with the exact pins of ``requirements.txt`` and the
  lab from ``lab-src/`` (the package's own source tree), installs bubblewrap
  for the challenge's sandbox, and builds the data the notebooks need:
  ``lab-root/`` when the instructor packed one (``--data``), else the
  embedded default by ``python -m lab make-default``;
- ``run_autograder``: checks the interpreter, then runs
  ``python -m lab.course.gradescope run`` (:func:`run_autograder`); when
  Python or the lab is missing it still writes a ``results.json`` that says so;
- ``autograder.json``: what to grade (notebooks, baked parameters, timeout);
- ``notebooks/`` (the source notebooks: solutions and hidden tests, never shown
  to students) or ``grader/`` (the challenge's hidden test data and key).

Notebooks are graded by :func:`lab.course.autograde.grade_notebook`, the
code behind ``lab autograde``: one Gradescope test per exercise; a test whose
cell holds hidden tests shows its output only after the due date. A written
question (graded by hand, see :mod:`lab.course.student`) becomes a test
without ``score`` or ``max_score`` (Gradescope shows its output and adds
nothing): its name gives its points, its output the student's answer, and
the top-level ``score`` counts the autograded points only. Its points belong
in a manually graded question of the Gradescope assignment. The
challenge is graded by :func:`lab.course.challenge.grade_class`: one test per
BadNet, score = the challenge's score (0..100) scaled to ``--points``.

Environment variables for running the scripts outside Gradescope (the tests
do): ``LAB_GRADESCOPE_SKIP_INSTALL=1`` skips apt and pip,
``LAB_GRADESCOPE_PYTHON`` names the interpreter to use instead of the venv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

from lab.errors import LabInputError
from lab.paths import SOURCE_ROOT

AUTOGRADER = Path("/autograder")
CONFIG = "autograder.json"
PYTHON_RANGE = ((3, 11), (3, 14))  # pyproject's requires-python: >=3.11,<3.14
LAB_FILES = ("pyproject.toml", "requirements.txt", "README.md")
OUTPUT_LIMIT = 4000  # characters of a test's output shown to a student
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source on its Ubuntu image (written by python -m lab gradescope).
set -euo pipefail
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${LAB_GRADESCOPE_VENV:-/autograder/venv}"

find_python() {  # the first Python 3.11-3.13 on PATH
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14)))'; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [ -n "${LAB_GRADESCOPE_SKIP_INSTALL:-}" ]; then
  PY="${LAB_GRADESCOPE_PYTHON:?LAB_GRADESCOPE_SKIP_INSTALL needs LAB_GRADESCOPE_PYTHON, the interpreter that has the lab}"
  echo "setup.sh: skipping apt and pip (LAB_GRADESCOPE_SKIP_INSTALL); using $PY"
else
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q bubblewrap  # the challenge's sandbox; the notebooks do not need it
  if ! find_python >/dev/null; then   # Ubuntu 22.04 ships 3.10: add 3.11 from its universe
    apt-get install -y -q python3.11 python3.11-venv
  fi
  BASE="$(find_python)" || { echo "setup.sh: no Python 3.11-3.13 could be installed" >&2; exit 1; }
  # on Ubuntu 24.04 the venv module is a package of its own
  "$BASE" -m venv "$VENV" 2>/dev/null || { apt-get install -y -q "$(basename "$BASE")-venv" && "$BASE" -m venv "$VENV"; }
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$SOURCE/requirements.txt"   # exact pins
  "$VENV/bin/python" -m pip install -q --no-deps "$SOURCE/lab-src"
  PY="$VENV/bin/python"
fi
"$PY" -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v < (3, 14) else f"setup.sh: the lab needs Python 3.11-3.13, {sys.executable} is {v[0]}.{v[1]}")'
"$PY" -c 'import lab' || { echo "setup.sh: $PY cannot import the lab" >&2; exit 1; }
if [ -f "$SOURCE/grader/answer_key.json" ]; then
  echo "setup.sh: challenge grader folder packed"
elif [ -d "$SOURCE/lab-root/data" ]; then
  echo "setup.sh: the instructor's data folder is packed (lab-root/)"
else
  echo "setup.sh: building the embedded default (python -m lab make-default)"
  "$PY" -m lab make-default --out "$SOURCE/lab-root" --quiet
fi
echo "setup.sh: done"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission (written by python -m lab gradescope); it writes results/results.json.
ROOT=/autograder
RESULTS="$ROOT/results/results.json"
mkdir -p "$ROOT/results"
PY="${LAB_GRADESCOPE_PYTHON:-${LAB_GRADESCOPE_VENV:-$ROOT/venv}/bin/python}"
fail() {  # a results.json a student can read even when Python itself is missing
  message=$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n' ' ')
  printf '{"score": 0, "output": "The autograder could not run: %s Please tell your instructor.", "tests": []}\n' "$message" > "$RESULTS"
  exit 0
}
[ -x "$PY" ] || fail "no Python at $PY (setup.sh did not finish)."
"$PY" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14)))' \
  || fail "$PY is Python $("$PY" -c 'import sys; print(*sys.version_info[:2], sep=".")'), the lab needs 3.11-3.13."
export PYTHONPATH="$ROOT/source/lab-src${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=3 BADNET_LAB_CACHE=off
rm -f "$RESULTS"
"$PY" -m lab.course.gradescope run --root "$ROOT" 2> "$ROOT/results/stderr.txt"
status=$?
if [ ! -s "$RESULTS" ]; then
  fail "the grader stopped (exit status $status): $(tail -n 3 "$ROOT/results/stderr.txt")"
fi
exit 0
"""


# ----------------------------------------------------------------------------- building the zip


def _has_exercises(path: Path) -> bool:
    import nbformat

    from lab.course.autograde import grade_cells

    return bool(grade_cells(nbformat.read(path, as_version=4)))


def _add_tree(archive: zipfile.ZipFile, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
            archive.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _add_text(archive: zipfile.ZipFile, name: str, text: str, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    archive.writestr(info, text)


def build_zip(out: str | Path, stems=None, parameters: dict | None = None, data: str | Path | None = None,
              challenge: str | Path | None = None, timeout: int = 600, points: float = 100.0,
              visibility: str = "after_due_date", n: int | None = None, trust_scripts: bool = False,
              force: bool = False) -> dict:
    """Write the autograder zip (see the module docstring); returns ``{"zip", "config", "files"}``.

    Notebooks: ``stems`` (default every numbered notebook with exercises), ``parameters``
    injected when each runs (as ``lab autograde -p``), ``data`` a folder with
    ``data/`` and ``models/`` packed as ``lab-root/`` (default: setup.sh builds
    the embedded default). Challenge: ``challenge`` is make-challenge's grader
    folder; ``points`` per BadNet, ``visibility`` of its tests, ``n`` images
    per set, ``trust_scripts`` where bwrap cannot run.
    """
    from lab.course import nbgrader_course

    out = Path(out)
    if out.exists() and not force:
        raise LabInputError(out, "a zip not written yet (--force replaces it)", "it exists")
    if visibility not in ("hidden", "after_due_date", "after_published", "visible"):
        raise LabInputError(None, "--visibility hidden, after_due_date, after_published or visible", repr(visibility))
    if challenge is not None:
        from lab.course.challenge import check_grader

        grader = Path(challenge)
        key = check_grader(grader)  # one line when it is not make-challenge's grader folder
        config = {"kind": "challenge", "badnets": list(key["badnets"]), "points": float(points),
                  "visibility": visibility, "n": n, "trust_scripts": bool(trust_scripts)}
    else:
        notebooks = nbgrader_course.course_notebooks(nbgrader_course.SOURCE_DIR, stems)
        if not stems:  # notebooks without exercises (00, 07) would only cost time: each Gradescope run is one student
            notebooks = [path for path in notebooks if _has_exercises(path)]
        if data is not None and not (Path(data) / "data").is_dir():
            raise LabInputError(data, "a folder with data/ and models/ (LAB_ROOT)", "no data/ in it")
        config = {"kind": "notebooks", "notebooks": [p.name for p in notebooks], "parameters": dict(parameters or {}),
                  "timeout": int(timeout)}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        _add_text(archive, "setup.sh", SETUP_SH, executable=True)
        _add_text(archive, "run_autograder", RUN_AUTOGRADER, executable=True)
        _add_text(archive, CONFIG, json.dumps(config, indent=2) + "\n")
        archive.write(SOURCE_ROOT / "requirements.txt", "requirements.txt")
        for name in LAB_FILES:
            archive.write(SOURCE_ROOT / name, f"lab-src/{name}")
        _add_tree(archive, SOURCE_ROOT / "lab", "lab-src/lab")
        if challenge is not None:
            _add_tree(archive, Path(challenge), "grader")
        else:
            for path in notebooks:
                archive.write(path, f"notebooks/{path.name}")
            if data is not None:
                for part in ("data", "models", "manifest.json"):
                    if (Path(data) / part).is_dir():
                        _add_tree(archive, Path(data) / part, f"lab-root/{part}")
                    elif (Path(data) / part).is_file():
                        archive.write(Path(data) / part, f"lab-root/{part}")
        files = archive.namelist()
    partial.replace(out)
    return {"zip": out, "config": config, "files": files}


# ----------------------------------------------------------------------------- results.json

# Gradescope's documented fields ("Autograder specifications": results.json format).
RESULT_FIELDS = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
                 "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
TEST_FIELDS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags",
               "visibility", "extra_data"}
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}


def check_results(results: dict) -> list[str]:
    """What in a results.json dict does not follow Gradescope's documented format (empty when it does)."""
    problems = [f"unknown field {name!r}" for name in sorted(set(results) - RESULT_FIELDS)]
    if not isinstance(results.get("score"), (int, float)) and not results.get("tests"):
        problems.append("neither a numeric score nor tests")
    if "execution_time" in results and not isinstance(results["execution_time"], int):
        problems.append("execution_time is not a whole number of seconds")
    for field in ("visibility", "stdout_visibility"):
        if field in results and results[field] not in VISIBILITIES:
            problems.append(f"{field} {results[field]!r}")
    for index, test in enumerate(results.get("tests", [])):
        where = f"test {index} ({test.get('name')!r})"
        problems += [f"{where}: unknown field {name!r}" for name in sorted(set(test) - TEST_FIELDS)]
        if not isinstance(test.get("name"), str) or not test["name"]:
            problems.append(f"{where}: no name")
        for field in ("score", "max_score"):
            if field in test and not isinstance(test[field], (int, float)):
                problems.append(f"{where}: {field} not a number")
        if isinstance(test.get("score"), (int, float)) and isinstance(test.get("max_score"), (int, float)) \
                and not 0 <= test["score"] <= test["max_score"]:
            problems.append(f"{where}: score outside 0..max_score")
        if test.get("status") not in (None, "passed", "failed"):
            problems.append(f"{where}: status {test['status']!r}")
        if test.get("visibility", "visible") not in VISIBILITIES:
            problems.append(f"{where}: visibility {test['visibility']!r}")
        if not isinstance(test.get("output", ""), str):
            problems.append(f"{where}: output not text")
    return problems


# ----------------------------------------------------------------------------- running on Gradescope


def _readable(text: str) -> str:
    text = ANSI.sub("", text)
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n[... cut]"


def _has_hidden_tests(cell) -> bool:
    from lab.course.student import BEGIN_HIDDEN

    return BEGIN_HIDDEN in cell.source


def notebook_tests(submission: Path, source_dir: Path, config: dict, lab_root: Path) -> tuple[list[dict], list[str]]:
    """One Gradescope test per exercise and per written question of every configured notebook, and notes.

    The notes go to the top-level output; a written question's test has no score (see the module docstring).
    """
    import nbformat

    from lab.course.autograde import grade_cells, grade_notebook, is_notebook, written_answers

    found: dict[str, Path] = {}
    for path in sorted(submission.rglob("*.ipynb")):
        if is_notebook(path.relative_to(submission)):
            found.setdefault(path.name, path)
    notes = [f"ignored {name}: not a notebook of this assignment" for name in found if name not in config["notebooks"]]
    parameters = {"LAB_ROOT": str(lab_root), **config["parameters"]}
    tests = []
    with tempfile.TemporaryDirectory(prefix="gradescope-work-") as work:  # 03 and 04 share it: 04 reads 03's B'
        for name in config["notebooks"]:
            source = nbformat.read(source_dir / name, as_version=4)
            hidden = {grade_id: _has_hidden_tests(cell) for grade_id, cell in grade_cells(source).items()}
            if name in found:
                result = grade_notebook(found[name], source_dir, parameters, Path(work), config["timeout"])
            else:
                result = {"exercises": {grade_id: {"earned": 0.0, "error": f"{name} was not submitted", "output": "",
                                                   "possible": float(cell.metadata["nbgrader"]["points"])}
                                        for grade_id, cell in grade_cells(source).items()},
                          "written": written_answers(None, source)}
                notes.append(f"{name} was not submitted (upload it with that file name)")
            for grade_id, exercise in result["exercises"].items():
                lost = exercise["earned"] < exercise["possible"]
                text = exercise.get("output", "")
                if lost and exercise["error"] not in text:
                    text = f"{exercise['error'] or 'no points'}\n\n{text}".strip()
                tests.append({"name": f"{Path(name).stem}: {grade_id}", "score": exercise["earned"],
                              "max_score": exercise["possible"], "status": "failed" if lost else "passed",
                              "output": _readable(text or "passed"),
                              "visibility": "after_due_date" if hidden.get(grade_id) else "visible"})
            for grade_id, answer in result.get("written", {}).items():
                text = (f"{answer['possible']:g} points, graded by hand, not by this autograder.\n\n"
                        + (f"Your answer:\n{answer['answer']}" if answer["answered"] else "Not answered."))
                tests.append({"name": f"{Path(name).stem}: {grade_id} (written, {answer['possible']:g} points "
                                      "graded by hand)", "output": _readable(text), "visibility": "visible"})
            by_hand = sum(answer["possible"] for answer in result.get("written", {}).values())
            if by_hand:
                notes.append(f"{name}: {by_hand:g} points of written questions are graded by hand, "
                             "not in this score")
    return tests, notes


def challenge_tests(submission: Path, grader: Path, config: dict) -> tuple[list[dict], list[str]]:
    """One Gradescope test per BadNet of the challenge, graded in the lab's sandbox."""
    from lab.course import challenge

    names = list(challenge.read_answer_key(grader)["badnets"])
    submissions = challenge.resolve_submissions([str(submission)], names)
    options = challenge.Options(n=config.get("n"), trust_scripts=bool(config.get("trust_scripts")))
    rows = challenge.grade_class(grader, {"submission": submissions}, options, jobs=1)
    points = float(config["points"])
    tests = []
    for row in rows:
        if row["status"] == "scored":
            text = (f"score {row['score']:.2f} / 100 = clean accuracy {row['clean_accuracy']:.2f} % x "
                    f"(100 - attack success rate {row['attack_success_rate']:.2f} %) / 100; "
                    f"detection rate {row['detection_rate']:.2f} %, clean inputs flagged "
                    f"{row['clean_false_positive_rate']:.2f} %")
        else:
            text = f"0 points: {row['reason']}"
        if row.get("note"):
            text += f"\nnote: {row['note']}"
        tests.append({"name": f"BadNet {row['badnet']}", "score": round(points * row["score"] / 100.0, 4),
                      "max_score": points, "status": "passed" if row["status"] == "scored" else "failed",
                      "output": _readable(text), "visibility": config["visibility"]})
    expected = "; ".join(f"{name}.keras, {name}.h5 or {name}.py" for name in names)
    return tests, [f"graded files: one per BadNet ({expected})"]


def run_autograder(root: str | Path = AUTOGRADER) -> dict:
    """Grade ``root/submission`` as ``root/source/autograder.json`` says; write and return results.json's dict.

    Never raises for a problem of the submission or of the image: whatever
    stops grading becomes the ``output`` of a results.json scoring 0.
    """
    root = Path(root)
    source = root / "source"
    started = time.perf_counter()
    results: dict
    try:
        if not (PYTHON_RANGE[0] <= sys.version_info[:2] < PYTHON_RANGE[1]):
            raise RuntimeError(f"Python {sys.version_info[0]}.{sys.version_info[1]} runs the grader; "
                               "the lab needs 3.11-3.13")
        config = json.loads((source / CONFIG).read_text(encoding="utf-8"))
        submission = root / "submission"
        if not submission.is_dir():
            raise RuntimeError(f"no submission folder {submission}")
        if config["kind"] == "challenge":
            tests, notes = challenge_tests(submission, source / "grader", config)
        else:
            lab_root = source / "lab-root"
            if not (lab_root / "data").is_dir():
                raise RuntimeError(f"{lab_root}/data is missing: setup.sh did not build the lab's data")
            tests, notes = notebook_tests(submission, source / "notebooks", config, lab_root)
        results = {"score": round(sum(t.get("score", 0.0) for t in tests), 4), "tests": tests,
                   "output": "\n".join(notes), "stdout_visibility": "hidden"}
    except Exception as error:  # noqa: BLE001 - the student must get a results.json, not a crashed autograder
        traceback.print_exc()
        results = {"score": 0.0, "tests": [], "output": f"The autograder could not grade this submission: "
                   f"{type(error).__name__}: {error}. Please tell your instructor."}
    results["execution_time"] = max(1, round(time.perf_counter() - started))
    out = root / "results" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="ZIP", help="the autograder zip to write")
    parser.add_argument("--notebook", action="append", default=[], metavar="STEM",
                        help="grade only these notebooks (repeat; default every numbered notebook with exercises)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter set when grading (as lab autograde -p)")
    parser.add_argument("--data", metavar="DIR", help="pack this folder's data/ and models/ (default: setup.sh "
                                                      "builds the embedded default)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a cell may run (default 600)")
    parser.add_argument("--challenge", metavar="GRADER_DIR", help="a challenge zip from make-challenge's grader folder")
    parser.add_argument("--points", type=float, default=100.0, help="challenge: points per BadNet (default 100)")
    parser.add_argument("--visibility", default="after_due_date",
                        help="challenge: when students see each BadNet's score (Gradescope's visibility; "
                             "default after_due_date, so the hidden test set cannot be probed)")
    parser.add_argument("--n", type=int, default=None, help="challenge: at most N images per set (default all)")
    parser.add_argument("--trust-scripts", action="store_true",
                        help="challenge: where bwrap cannot run, run scripts without a sandbox")
    parser.add_argument("--force", action="store_true", help="replace an existing zip")


def run(args: argparse.Namespace) -> int:
    """The ``gradescope`` command."""
    from lab.course.autograde import parse_parameters

    report = build_zip(args.out, args.notebook, parse_parameters(args.parameter), args.data, args.challenge,
                       args.timeout, args.points, args.visibility, args.n, args.trust_scripts, args.force)
    what = (f"the challenge ({len(report['config']['badnets'])} BadNets)" if report["config"]["kind"] == "challenge"
            else f"{len(report['config']['notebooks'])} notebooks")
    print(f"Gradescope autograder for {what}: {report['zip']} ({len(report['files'])} files)")
    print("upload it under Configure Autograder (Ubuntu base image); students submit their .ipynb files"
          if report["config"]["kind"] == "notebooks" else
          "upload it under Configure Autograder (Ubuntu base image); students submit NAME.keras/.h5/.py per BadNet")
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m lab.course.gradescope") -> int:
    """``run [--root /autograder]`` (what run_autograder calls) or the zip builder's options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        parser = argparse.ArgumentParser(prog=f"{prog} run", description="grade one Gradescope submission")
        parser.add_argument("--root", default=str(AUTOGRADER))
        run_autograder(parser.parse_args(argv[1:]).root)
        return 0
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    raise SystemExit(main())
