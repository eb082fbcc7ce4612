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


MODEL_ENV, SCALE_ENV = "BADNET_LAB_MODEL", "BADNET_LAB_SCALE"
DEFAULT_MODEL = "models/bd_net.h5"


def model_file(model: str | os.PathLike | None, root: str | os.PathLike | None = None) -> Path:
    """The model a notebook uses: its ``MODEL`` parameter, else ``$BADNET_LAB_MODEL``, else ``models/bd_net.h5``.

    Relative paths are resolved against ``root`` (the notebook's LAB_ROOT), so
    a grader points every notebook at a student's model with one variable.
    """
    return resolve(model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL, root)


def input_scale(scale: str | None) -> str | None:
    """A notebook's ``SCALE`` parameter, else ``$BADNET_LAB_SCALE``, else None (as recorded with the model)."""
    from lab.errors import LabInputError

    value = scale or os.environ.get(SCALE_ENV) or None
    if value not in (None, "raw", "unit"):
        source = "this notebook's SCALE parameter" if scale else f"${SCALE_ENV}"
        raise LabInputError(None, f"{source} to be 'raw' (0..255), 'unit' (x/255) or None", repr(value))
    return value


def require_outputs(files, notebook: str, parameter: str) -> list[Path]:
    """Raise at once, naming the notebook that makes them, when any of ``files`` is missing.

    A notebook that builds on another's outputs (04 on 03's B', ...) must not
    carry on with part of them and show a partial table: it stops here.
    ``parameter`` names the notebook parameter that says where they are.
    """
    from lab.errors import LabInputError

    files = [Path(f) for f in files]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise LabInputError(missing[0].parent, f"{', '.join(f.name for f in files)} made by {notebook} "
                            f"(run {notebook} first with the same {parameter}, or change {parameter})",
                            f"{', '.join(f.name for f in missing)} missing")
    return files


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
