"""The setup cell that opens every notebook, written once; the repository URL comes from pyproject.toml.

In this repository's environment (``make lab``, ``make jupyter``, the tests)
``lab`` is importable, so the cell only prints one line (:func:`lab.setup.describe`).
Anywhere else (Colab, a Jupyter the student already has) it pip-installs the
lab from the repository in ``[project.urls]`` (``$BADNET_LAB_SOURCE``
overrides: a folder, a wheel, another git URL), in two steps so that an
existing full ``tensorflow`` (Colab's GPU build) is upgraded in place instead
of getting ``tensorflow-cpu`` beside it. The default data and BadNet are then
built on first use (``lab.paths.lab_root``), into ``~/badnet-lab``.

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
# On Colab or in a Jupyter without the lab it installs the lab (once, a few minutes); the default data and
# BadNet are then built on first use in ~/badnet-lab ($BADNET_LAB_ROOT chooses another folder).
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("lab") is None:
    from importlib.metadata import requires
    source = os.environ.get("BADNET_LAB_SOURCE") or "git+{url}"
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["--no-deps", source], check=True)
    importlib.invalidate_caches()
    # A TensorFlow already there (Colab's GPU build) is upgraded in place instead of adding tensorflow-cpu beside it.
    has_tf = importlib.util.find_spec("tensorflow") is not None
    subprocess.run(pip + [r.replace("tensorflow-cpu", "tensorflow") if has_tf else r
                          for r in requires("{name}") if "extra ==" not in r], check=True)
    importlib.invalidate_caches()
import lab.setup
lab.setup.describe();'''


def project() -> dict:
    """``[project]`` of pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


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
