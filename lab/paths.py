"""Where the lab's files are, whatever the working directory.

Notebooks run from the repository root (graders: ``jupyter nbconvert
--execute notebooks/...``), from ``notebooks/`` (students) or from a temporary
directory (tests), so every path a notebook names is resolved here against
one root: the repository that holds ``lab/`` (or ``$BADNET_LAB_ROOT``).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_root() -> Path:
    """The folder whose ``data/`` and ``models/`` the lab uses by default."""
    return Path(os.environ.get("BADNET_LAB_ROOT", PROJECT_ROOT)).resolve()


def resolve(path: str | os.PathLike | None, root: str | os.PathLike | None = None) -> Path | None:
    """``path`` as given if absolute, else relative to ``root`` (default :func:`project_root`)."""
    if path is None:
        return None
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(root or project_root()) / path


def build_dir(root: str | os.PathLike | None = None) -> Path:
    """Where notebooks write what they make (pruned models, GoodNets, figures): ``build/``."""
    return resolve("build", root)


def lab_root(lab_root: str | os.PathLike | None = None) -> Path:
    """The notebooks' one switch: None for this project's embedded default, else a folder with the course files.

    The folder holds ``data/`` (Lab 3 or 2020 layout) and ``models/``.
    """
    root = project_root() if lab_root in (None, "") else resolve(lab_root)
    if not (root / "data").is_dir():
        from lab.errors import LabInputError

        hint = "run `make lab` (or `python -m lab make-default --out .`) first" if lab_root in (None, "") else \
            "point LAB_ROOT at the folder that holds data/ and models/"
        raise LabInputError(root, f"a data/ folder ({hint})", "none")
    return root
