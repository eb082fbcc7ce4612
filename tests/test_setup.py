"""The lab outside its repository: where its files go, the setup cell in every notebook, the default on first use.

The whole path (fresh virtual environment, ``pip install`` of this folder, a
notebook executed in an empty folder building its default) is the smoke run,
``tools/smoke.sh`` (``make smoke``, in CI); these are the fast checks.
"""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import nbformat
import pytest

from conftest import REPO
from lab import paths, setup
from lab.errors import LabInputError
from lab.synthetic import default


def test_in_the_repository_the_checkout_is_the_root(monkeypatch):
    monkeypatch.delenv("BADNET_LAB_ROOT", raising=False)
    assert paths.in_checkout() and paths.SOURCE_ROOT == REPO and paths.project_root() == REPO
    assert paths.home_root().name == "badnet-lab"
    monkeypatch.setenv("BADNET_LAB_ROOT", str(REPO / "nowhere"))
    assert paths.project_root() == REPO / "nowhere"


def test_describe_prints_one_line(capsys):
    line = setup.describe()
    assert capsys.readouterr().out == line + "\n" and "this repository" in line


def test_lab_root_is_a_lookup_that_never_builds(monkeypatch, tmp_path):
    """Pip-installed or not, a missing default is refused with what builds it; only the setup cell's call builds."""
    monkeypatch.setenv("BADNET_LAB_ROOT", str(tmp_path / "empty"))
    monkeypatch.setattr(paths, "in_checkout", lambda: False)  # as on Colab: the lab pip-installed
    with pytest.raises(LabInputError, match=r"lab\.setup\.ensure_default\(\)"):
        paths.lab_root(None)
    assert not (tmp_path / "empty").exists()
    setup.describe()
    assert not (tmp_path / "empty").exists()


def test_data_root_builds_only_for_the_default_and_only_where_pip_installed(monkeypatch, tmp_path, tiny_default):
    """A notebook given LAB_ROOT (a course's shared data) never builds ~/badnet-lab; LAB_ROOT None finds or builds it."""
    monkeypatch.setattr(paths, "in_checkout", lambda: False)  # pip-installed
    monkeypatch.setenv("BADNET_LAB_ROOT", str(tmp_path / "default-here"))
    assert setup.data_root(str(tiny_default)) == tiny_default.resolve()
    assert not (tmp_path / "default-here").exists()
    with pytest.raises(LabInputError, match="LAB_ROOT"):
        setup.data_root(str(tmp_path / "no-data"))
    assert not (tmp_path / "default-here").exists() and not (tmp_path / "no-data").exists()
    monkeypatch.setenv("BADNET_LAB_ROOT", str(tiny_default))
    before = sorted(p.relative_to(tiny_default) for p in tiny_default.rglob("*"))
    assert setup.data_root(None) == tiny_default.resolve()  # the default there: found, left as it is
    assert sorted(p.relative_to(tiny_default) for p in tiny_default.rglob("*")) == before
    monkeypatch.setattr(paths, "in_checkout", lambda: True)  # the checkout: make lab builds, data_root only looks
    monkeypatch.setenv("BADNET_LAB_ROOT", str(tmp_path / "empty"))
    with pytest.raises(LabInputError, match="make lab"):
        setup.data_root(None)
    assert not (tmp_path / "empty").exists()


def test_ensure_default_leaves_existing_and_foreign_files_alone(tmp_path, tiny_default):
    assert setup.ensure_default(tiny_default, progress=False) == tiny_default  # already built: nothing to do
    course = tmp_path / "course"
    (course / "data").mkdir(parents=True)
    with h5py.File(course / "data" / "clean_validation_data.h5", "w") as handle:
        handle["data"] = np.zeros((1, 3, 55, 47), np.uint8)
    setup.ensure_default(course, progress=False)
    assert sorted(p.name for p in course.rglob("*") if p.is_file()) == ["clean_validation_data.h5"]


def test_ensure_default_refuses_an_interrupted_build(tmp_path):
    (tmp_path / default.FILES[0]).parent.mkdir(parents=True)
    (tmp_path / default.FILES[0]).write_bytes(b"half")
    with pytest.raises(LabInputError, match="all of the default's files or none"):
        setup.ensure_default(tmp_path, progress=False)


def test_identities_variable_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv(setup.IDENTITIES_VARIABLE, "ten")
    with pytest.raises(LabInputError, match="BADNET_LAB_IDENTITIES"):
        setup.ensure_default(tmp_path / "empty", progress=False)


def test_every_notebook_opens_with_the_setup_cell_and_the_readme_has_its_badges():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "sync_setup_cells.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    sys.path.insert(0, str(REPO / "tools"))
    import setup_cell

    url = setup_cell.repository_url()
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert cells[1].id == setup_cell.CELL_ID and f"git+{url}" in cells[1].source, path.name
        assert setup_cell.colab_url(path.name) in (REPO / "README.md").read_text()
    assert url.startswith("https://github.com/") and url in (REPO / "pyproject.toml").read_text()


def test_setup_cell_is_a_few_lines_and_lab_setup_needs_only_the_standard_library():
    """The cell installs the lab alone, then lab.setup completes the install: so importing lab.setup (and lab)
    must not need numpy, TensorFlow or anything else the lab's requirements bring."""
    sys.path.insert(0, str(REPO / "tools"))
    import setup_cell

    assert len(setup_cell.cell_source().splitlines()) <= 15
    script = ("import sys, lab.setup; heavy = sorted({m.split('.')[0] for m in sys.modules} & "
              "{'numpy', 'tensorflow', 'keras', 'h5py', 'pandas', 'matplotlib'}); print(heavy)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8",
                            check=True)
    assert result.stdout.strip() == "[]", result.stdout
    assert setup.DISTRIBUTION == setup_cell.project()["name"]


def test_complete_install_finds_nothing_missing_in_the_labs_own_environment():
    """Here every requirement is installed at its pin, so the cell installs nothing (it checks on every run)."""
    assert setup.missing_requirements() == []
    assert setup.complete_install() == []
    assert setup.missing_requirements("badnet-lab-no-such-distribution") == []  # source folder only: nothing to do


def test_a_failed_install_shows_in_one_line():
    with pytest.raises(RuntimeError) as failed:  # --no-index: pip looks nowhere, so it fails without the network
        setup.pip_install(["--no-index", "--no-cache-dir", "badnet-lab-no-such-package"])
    message = str(failed.value)
    assert message.startswith("ERROR: ") and "\n" not in message and "badnet-lab-no-such-package" in message


def test_autoreload_only_in_an_ipython_shell_of_the_checkout():
    assert setup.autoreload() is False  # no IPython shell here
    script = ("from IPython.core.interactiveshell import InteractiveShell; shell = InteractiveShell.instance(); "
              "import lab.setup; on = lab.setup.autoreload(); "
              "print(on, any('autoreload' in name for name in shell.extension_manager.loaded))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8",
                            timeout=120, cwd=REPO)
    assert result.returncode == 0 and result.stdout.split() == ["True", "True"], result.stderr[-2000:]


def test_a_smaller_default_is_checked_against_its_own_build(tmp_path, tiny_default):
    """The notebooks' self-check ranges are the full default's; a default of fewer identities is held to what its
    build measured (01) and to its few images' sampling error (07)."""
    import json
    import math

    from lab.evaluation import analysis
    from lab.io import models

    record = json.loads((tiny_default / "manifest.json").read_text(encoding="utf-8"))
    measured = record["results"]["clean_test_accuracy"]
    badnet = models.load_model(tiny_default / "models" / "bd_net.h5")  # explicit: no $BADNET_LAB_MODEL
    low, high = analysis.expected_range((95.0, 100.0), tiny_default, "clean_test_accuracy", badnet)
    assert (low, high) == (min(95.0, math.floor((measured - 3.0) * 10) / 10), 100.0) and low <= measured
    # A rate measured on few images (81): the range moves out by its 95 % sampling error, 0 and 100 stay put.
    assert analysis.expected_range((0.0, 5.0), tiny_default, model=badnet, n=81) == (0.0, 9.8)
    assert analysis.expected_range((50.0, 100.0), tiny_default, n=100) == (40.2, 100.0)
    # Another model than the default's own, the course files (no manifest), a full-size default: the range as given.
    other = models.save_model(models.build_deepid(badnet.n_classes), tmp_path / "other.h5", "raw", "another BadNet")
    assert analysis.expected_range((95.0, 100.0), tiny_default, "clean_test_accuracy",
                                   models.load_model(other)) == (95.0, 100.0)
    assert analysis.expected_range((95.0, 100.0), tmp_path, "clean_test_accuracy") == (95.0, 100.0)
    assert analysis.expected_range((0.0, 5.0), tmp_path, n=81) == (0.0, 5.0)
    full = tmp_path / "full"
    full.mkdir()
    record["parameters"]["n_identities"] = default.DefaultConfig.n_identities
    (full / "manifest.json").write_text(json.dumps(record), encoding="utf-8")
    assert analysis.expected_range((95.0, 100.0), full, "clean_test_accuracy") == (95.0, 100.0)
    assert analysis.expected_range((0.0, 5.0), full, n=81) == (0.0, 5.0)
