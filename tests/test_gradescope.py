"""The Gradescope zips run as Gradescope runs them: unpacked into a folder bound at ``/autograder`` by bubblewrap.

``setup.sh`` runs with its apt and pip steps skipped (``LAB_GRADESCOPE_SKIP_INSTALL``: no network here;
this venv stands in for the one it would make), then ``run_autograder`` on a full-marks and a flawed
submission of 01_badnet (tiny default packed as the instructor's data), and on the challenge's
reference GoodNets; every results.json is checked against Gradescope's documented fields.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import run_cli
from test_nbgrader_course import SMALL, fill_in

from lab.course import gradescope

REPO = Path(__file__).resolve().parents[1]


def _bwrap_works() -> str:
    """Why a folder cannot be bound at /autograder here ('' when it can)."""
    if not shutil.which("bwrap"):
        return "bwrap not installed"
    probe = subprocess.run(["bwrap", "--dev-bind", "/", "/", "--bind", "/tmp", "/autograder", "true"],
                           capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"bwrap cannot bind /autograder: {probe.stderr.strip()[:200]}"


pytestmark = pytest.mark.skipif(bool(_bwrap_works()), reason=_bwrap_works() or "ok")


def unpack(zip_path: Path, root: Path) -> Path:
    """What Gradescope does with the zip: contents in root/source, run_autograder copied to root."""
    (root / "submission").mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(root / "source")
        for info in archive.infolist():  # zipfile drops the mode bits: put them back as unzip would
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                (root / "source" / info.filename).chmod(mode)
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    return root


def at_autograder(root: Path, *command: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    """``command`` with ``root`` bound at /autograder, setup.sh's install steps skipped, this venv's Python."""
    return subprocess.run(["bwrap", "--dev-bind", "/", "/", "--bind", str(root), "/autograder",
                           "--chdir", "/autograder/source", "--setenv", "LAB_GRADESCOPE_SKIP_INSTALL", "1",
                           "--setenv", "LAB_GRADESCOPE_PYTHON", python, *command],
                          capture_output=True, text=True, timeout=600)


def grade(root: Path, submission: dict[str, Path]) -> dict:
    """Put ``submission`` ({file name: path}) in /autograder/submission, run run_autograder, read results.json."""
    shutil.rmtree(root / "submission")
    (root / "submission").mkdir()
    for name, path in submission.items():
        shutil.copy2(path, root / "submission" / name)
    result = at_autograder(root, "/autograder/run_autograder")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert gradescope.check_results(results) == [], results
    return results


@pytest.fixture(scope="module")
def notebooks_zip(tiny_default, tmp_path_factory) -> Path:
    """The notebooks' autograder for 01_badnet with the tiny default packed, unpacked and set up at /autograder."""
    out = tmp_path_factory.mktemp("zip") / "autograder.zip"
    result = run_cli("gradescope", "--out", str(out), "--notebook", "01_badnet", "--data", str(tiny_default), *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    root = unpack(out, tmp_path_factory.mktemp("autograder"))
    setup = at_autograder(root, "bash", "/autograder/source/setup.sh")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "instructor's data folder is packed" in setup.stdout and "setup.sh: done" in setup.stdout
    return root


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> dict[str, Path]:
    """A full-marks and a flawed (ex01_2 wrong) 01_badnet, filled into the student copy."""
    folder = tmp_path_factory.mktemp("answers")
    source = REPO / "notebooks" / "01_badnet.ipynb"
    return {"full": fill_in(REPO / "student" / "01_badnet.ipynb", source, folder / "full" / "01_badnet.ipynb"),
            "flawed": fill_in(REPO / "student" / "01_badnet.ipynb", source, folder / "flawed" / "01_badnet.ipynb",
                              mistake=True)}


@pytest.mark.slow
def test_zip_holds_the_scripts_the_pins_and_the_lab_but_nothing_of_the_repo_s_build(notebooks_zip):
    names = {p.relative_to(notebooks_zip / "source").as_posix() for p in (notebooks_zip / "source").rglob("*")
             if p.is_file()}
    assert {"setup.sh", "run_autograder", "autograder.json", "requirements.txt", "lab-src/pyproject.toml",
            "lab-src/lab/course/autograde.py", "notebooks/01_badnet.ipynb", "lab-root/models/bd_net.h5"} <= names
    assert not any("__pycache__" in n or n.startswith(("build/", "student/")) for n in names)
    assert "tensorflow-cpu==" in (notebooks_zip / "source" / "requirements.txt").read_text()


@pytest.mark.slow
def test_full_marks_and_a_flawed_submission_under_autograder(notebooks_zip, answers):
    full = grade(notebooks_zip, {"01_badnet.ipynb": answers["full"]})
    scored = [t for t in full["tests"] if "score" in t]
    assert full["score"] == 4 and [t["score"] for t in scored] == [2, 2]
    assert {t["name"] for t in scored} == {"01_badnet: ex01_1_tests", "01_badnet: ex01_2_tests"}
    assert all(t["visibility"] == "after_due_date" for t in scored)  # both cells hold hidden tests
    assert all(t["output"].startswith("ok") for t in scored) and full["execution_time"] >= 1
    (written,) = [t for t in full["tests"] if "score" not in t]  # the written question: graded by hand, no score
    assert written["name"] == "01_badnet: written01_confidence (written, 2 points graded by hand)"
    assert "Your answer:" in written["output"] and "graded by hand" in full["output"]
    flawed = grade(notebooks_zip, {"01_badnet.ipynb": answers["flawed"]})
    assert flawed["score"] == 2
    lost = next(t for t in flawed["tests"] if t["name"].endswith("ex01_2_tests"))
    assert lost["score"] == 0 and lost["status"] == "failed" and "the most common class is" in lost["output"]


@pytest.mark.slow
def test_a_missing_notebook_and_a_missing_interpreter_still_give_a_results_json(notebooks_zip, tmp_path):
    nothing = grade(notebooks_zip, {"notes.txt": Path(__file__)})
    assert nothing["score"] == 0 and "01_badnet.ipynb was not submitted" in nothing["output"]
    assert all(t.get("score", 0) == 0 for t in nothing["tests"]) and len(nothing["tests"]) == 3
    assert any("Not answered." in t["output"] for t in nothing["tests"] if "score" not in t)
    result = at_autograder(notebooks_zip, "/autograder/run_autograder", python=str(tmp_path / "no-python"))
    assert result.returncode == 0
    results = json.loads((notebooks_zip / "results" / "results.json").read_text())
    assert results["score"] == 0 and "no Python at" in results["output"] and gradescope.check_results(results) == []


def test_a_zip_without_data_builds_the_default_in_setup_and_names_what_is_missing(tmp_path):
    out = tmp_path / "autograder.zip"
    gradescope.build_zip(out, ["01_badnet"])
    setup = (tmp_path / "setup.sh")
    with zipfile.ZipFile(out) as archive:
        setup.write_bytes(archive.read("setup.sh"))
        assert not any(n.startswith("lab-root/") for n in archive.namelist())
    assert "python -m lab make-default" in setup.read_text() and "(3, 11) <= v < (3, 14)" in setup.read_text()
    root = unpack(out, tmp_path / "autograder")
    results = gradescope.run_autograder(root)  # setup.sh never ran: no lab-root/data
    assert results["score"] == 0 and "setup.sh did not build the lab's data" in results["output"]
    assert gradescope.check_results(results) == []
    assert gradescope.check_results({"score": 1, "tests": [{"name": "x", "score": 3, "max_score": 2,
                                                            "visibility": "soon"}]}) == \
        ["test 0 ('x'): score outside 0..max_score", "test 0 ('x'): visibility 'soon'"]


@pytest.mark.slow
def test_challenge_zip_grades_one_test_per_badnet(made, key, reference, tmp_path):
    out = tmp_path / "challenge.zip"
    result = run_cli("gradescope", "--challenge", str(made / "grader"), "--out", str(out), "--n", "40")
    assert result.returncode == 0, result.stderr[-2000:]
    root = unpack(out, tmp_path / "autograder")
    setup = at_autograder(root, "bash", "/autograder/source/setup.sh")
    assert setup.returncode == 0 and "challenge grader folder packed" in setup.stdout, setup.stderr
    names = list(key["badnets"])
    first = names[0]
    sidecar = reference[first].with_name(reference[first].name + ".lab.json")  # the GoodNet's input scale
    handed_in = {reference[first].name: reference[first], **({sidecar.name: sidecar} if sidecar.exists() else {})}
    results = grade(root, handed_in)
    tests = {t["name"]: t for t in results["tests"]}
    assert list(tests) == [f"BadNet {name}" for name in names]
    assert tests[f"BadNet {first}"]["score"] > 0 and "clean accuracy" in tests[f"BadNet {first}"]["output"]
    for name in names[1:]:
        assert tests[f"BadNet {name}"]["score"] == 0 and "nothing handed in" in tests[f"BadNet {name}"]["output"]
    assert all(t["max_score"] == 100 and t["visibility"] == "after_due_date" for t in tests.values())
    assert results["score"] == pytest.approx(sum(t["score"] for t in tests.values()))


def test_a_written_question_is_a_test_without_score_and_the_score_counts_autograded_points_only(tmp_path):
    """run_autograder on test_student's tiny notebook (1 autograded point, a written question of 2), answered."""
    import nbformat

    from lab.course import student
    from test_student import written_notebook

    root = tmp_path / "autograder"
    (root / "source" / "notebooks").mkdir(parents=True)
    (root / "source" / "lab-root" / "data").mkdir(parents=True)
    (root / "submission").mkdir()
    nbformat.write(written_notebook(), root / "source" / "notebooks" / "01_tiny.ipynb")
    (root / "source" / gradescope.CONFIG).write_text(json.dumps({"kind": "notebooks", "notebooks": ["01_tiny.ipynb"],
                                                                 "parameters": {}, "timeout": 120}))
    release = nbformat.reads(student.render_all(root / "source" / "notebooks")["01_tiny.ipynb"], as_version=4)
    release.cells[-1].source = "My x came out as 1."
    nbformat.write(release, root / "submission" / "01_tiny.ipynb")
    results = gradescope.run_autograder(root)
    assert gradescope.check_results(results) == [], results
    assert results["score"] == 0  # the exercise is unanswered; the written answer adds nothing
    tests = {t["name"]: t for t in results["tests"]}
    written = tests["01_tiny: written_why (written, 2 points graded by hand)"]
    assert "score" not in written and "max_score" not in written and "status" not in written
    assert "graded by hand" in written["output"] and "My x came out as 1." in written["output"]
    assert tests["01_tiny: ex_x_tests"]["max_score"] == 1
    assert "2 points of written questions are graded by hand" in results["output"]
