"""Where the lab's files are, whatever the working directory.

Notebooks run from the repository root (graders: ``jupyter nbconvert
--execute notebooks/...``), from ``notebooks/`` (students), from a temporary
directory (tests) or, with the lab pip-installed, from anywhere (Colab, a
Jupyter the student already has), so every path a notebook names is resolved
here against one root, the first of:

1. ``$BADNET_LAB_ROOT``, when set;
2. the repository that holds ``lab/``, when the lab runs from a checkout
   (``make lab``, ``pip install -e .``);
3. ``~/badnet-lab`` (:data:`HOME_FOLDER` in the home folder), when the lab is
   pip-installed: one folder whatever the working directory, so every
   notebook and the command line find the same default.

These functions only look things up: building the default is an explicit
call (:func:`lab.setup.ensure_default`, which each notebook's Setup makes
through :func:`lab.setup.data_root` when its ``LAB_ROOT`` is None and the lab
is pip-installed; ``python -m lab make-default``; ``make lab``).
"""

from __future__ import annotations

import os
from pathlib import Path

# The folder that holds the lab/ package (this module may sit in a subpackage: count the dots).
SOURCE_ROOT = Path(__file__).resolve().parents[__name__.count(".")]
HOME_FOLDER = "badnet-lab"


def in_checkout() -> bool:
    """Whether the lab runs from its repository (source checkout or editable install), not pip-installed."""
    return (SOURCE_ROOT / "pyproject.toml").is_file() and (SOURCE_ROOT / "notebooks").is_dir()


def home_root() -> Path:
    """Where a pip-installed lab keeps its data, models and build outputs: ``~/badnet-lab``."""
    return Path.home() / HOME_FOLDER


PROJECT_ROOT = SOURCE_ROOT if in_checkout() else home_root()


def project_root() -> Path:
    """The folder whose ``data/`` and ``models/`` the lab uses by default (see the module docstring)."""
    return Path(os.environ.get("BADNET_LAB_ROOT") or PROJECT_ROOT).expanduser().resolve()


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

    The folder holds ``data/`` (Lab 3 or 2020 layout) and ``models/``. A
    lookup only: a missing ``data/`` is refused with what builds it.
    """
    root = project_root() if lab_root in (None, "") else resolve(lab_root)
    if not (root / "data").is_dir():
        from lab.errors import LabInputError

        build = "`make lab` (or `python -m lab make-default --out .`)" if in_checkout() else \
            f"`lab.setup.ensure_default()` (or `python -m lab make-default --out {root}`)"
        hint = f"run {build} first" if lab_root in (None, "") else \
            "point LAB_ROOT at the folder that holds data/ and models/"
        raise LabInputError(root, f"a data/ folder ({hint})", "none")
    return root
