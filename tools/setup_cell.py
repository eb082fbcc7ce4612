"""The setup cell that opens every notebook, written once; the repository URL comes from pyproject.toml.

In this repository's environment (``make lab``, ``make jupyter``, the tests)
``lab`` is importable, so the cell only prints one line (:func:`lab.setup.describe`).
Anywhere else (Colab, a Jupyter the student already has) it first
pip-installs the lab itself, without its requirements, from the repository in
``[project.urls]`` (``$BADNET_LAB_SOURCE`` overrides: a folder, a wheel,
another git URL); a failed install raises with pip's last line. Then
:func:`lab.setup.complete_install` (which imports only the standard library,
so it runs before numpy or TensorFlow are there) installs whatever of the
lab's requirements is absent or outside its range, reading ``tensorflow-cpu``
as ``tensorflow`` where the full build is installed (Colab's GPU build is
upgraded in place). It checks on every run, so an install interrupted
half-way is completed by running the cell again. :func:`lab.setup.autoreload`
turns on IPython's autoreload only in the lab's own checkout, and
:func:`lab.setup.describe` says which lab runs; the notebook's Setup cell then
builds the default data and BadNet once where ``LAB_ROOT`` is None
(:func:`lab.setup.data_root`), into ``~/badnet-lab``.

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
# On Colab or in a Jupyter without the lab it installs the lab first (once, a few minutes; run it again to complete
# an interrupted install); the default data and BadNet are built on first use in ~/badnet-lab ($BADNET_LAB_ROOT).
import importlib, importlib.util, os, subprocess, sys
if importlib.util.find_spec("lab") is None:
    print("installing the lab (once, a few minutes) ...", flush=True)
    source = os.environ.get("BADNET_LAB_SOURCE") or "git+{url}"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", source],
                          capture_output=True, text=True, errors="replace")
    importlib.invalidate_caches()
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or ["pip install failed"])[-1])
import lab.setup
lab.setup.complete_install(); lab.setup.autoreload(); lab.setup.describe();'''


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
    """The setup cell's code with the repository URL filled in."""
    return TEMPLATE.replace("{url}", repository_url())


def colab_url(notebook: str, branch: str = "main") -> str:
    """Colab's address for ``notebooks/<notebook>`` of the repository on ``branch``."""
    return f"https://colab.research.google.com/github/{repository_url().removeprefix('https://github.com/')}" \
           f"/blob/{branch}/notebooks/{notebook}"
