"""The setup cell that opens every notebook, written once; the repository URL comes from pyproject.toml.

In this repository's environment (``make lab``, ``make jupyter``, the tests)
``lab`` is importable, so the cell only prints one line (:func:`lab.setup.describe`).
Anywhere else (Colab, a Jupyter the student already has) it pip-installs the
lab from the repository in ``[project.urls]`` (``$BADNET_LAB_SOURCE``
overrides: a folder, a wheel, another git URL), in two steps so that an
existing full ``tensorflow`` (Colab's GPU build) is upgraded in place instead
of getting ``tensorflow-cpu`` beside it. The second step is whatever of the
lab's requirements is absent or outside its range, checked on every run, so
an install interrupted after the first step is completed by running the cell
again. pip's remarks about packages the lab does not use (Colab's resolver
notices) are not shown; a failed install raises with pip's last ``ERROR``
line. Its last call, :func:`lab.setup.describe`, says which lab runs; the notebook's
Setup cell then builds the default data and BadNet once where ``LAB_ROOT`` is None
(:func:`lab.setup.data_root`), into ``~/badnet-lab``. :func:`lab.setup.autoreload`
turns on IPython's autoreload only in the lab's own checkout.

``tools/sync_setup_cells.py`` puts the cell into the notebooks.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELL_ID = "lab-setup"  # how the sync script finds the cell again (nbformat cell id)

TEMPLATE = '''\
# Setup (the same first cell in every notebook; leave it as it is). In the lab's own environment it prints one line.
# On Colab or in a Jupyter without the lab it installs the lab (once, a few minutes; an interrupted install is
# completed on the next run); the default data and BadNet are then built on first use in ~/badnet-lab
# ($BADNET_LAB_ROOT chooses another folder).
import importlib.util, os, subprocess, sys
from importlib import metadata

def pip_install(arguments):  # pip's notices about other packages stay hidden; a failure shows its one ERROR line
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *arguments],
                          capture_output=True, text=True, encoding="utf-8", errors="replace")
    importlib.invalidate_caches()
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines()
                  if line.startswith("ERROR:") and "dependency resolver" not in line]
        raise RuntimeError((errors or done.stderr.strip().splitlines() or ["pip install failed"])[-1])

def lab_requirements_missing():  # the lab's dependencies that are absent or at a version it does not accept
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    full_tf = version("tensorflow") is not None  # Colab's GPU build: upgraded in place, not joined by tensorflow-cpu
    missing = []
    for text in metadata.requires("{name}") or []:
        requirement = Requirement(text.replace("tensorflow-cpu", "tensorflow") if full_tf else text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found = version(requirement.name)
            if found is None or not requirement.specifier.contains(found, prereleases=True):
                missing.append(f"{requirement.name}{requirement.specifier}")
    return missing

if importlib.util.find_spec("lab") is None:
    print("installing the lab (once, a few minutes) ...", flush=True)
    pip_install(["--no-deps", os.environ.get("BADNET_LAB_SOURCE") or "git+{url}"])
try:
    missing = lab_requirements_missing()
except metadata.PackageNotFoundError:  # the lab's source folder on the path, not installed: nothing to complete
    missing = []
if missing:
    print(f"installing what the lab needs: {', '.join(missing)} ...", flush=True)
    pip_install(missing)
import lab.setup
lab.setup.autoreload()  # reload edited lab/ modules before each cell, in the lab's own checkout only
lab.setup.describe();'''


def project() -> dict:
    """``[project]`` of pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def repository_url() -> str:
    """``[project.urls] Repository``: ``https://github.com/OWNER/NAME`` (the one place it is written)."""
    url = project()["urls"]["Repository"].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"error: pyproject.toml: expected [project.urls] Repository = "
                         f"'https://github.com/OWNER/NAME', found {url!r}")
    return url.removesuffix(".git")


def cell_source() -> str:
    """The setup cell's code with the repository URL and distribution name filled in."""
    return TEMPLATE.replace("{url}", repository_url()).replace("{name}", project()["name"])


def colab_url(notebook: str, branch: str = "main") -> str:
    """Colab's address for ``notebooks/<notebook>`` of the repository on ``branch``."""
    return f"https://colab.research.google.com/github/{repository_url().removeprefix('https://github.com/')}" \
           f"/blob/{branch}/notebooks/{notebook}"
