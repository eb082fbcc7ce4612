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
