"""The lab outside its repository (Colab, a Jupyter the student already has): where it lives, its default.

Every notebook opens with the same setup cell (written once in
``tools/setup_cell.py``). In this repository's environment it only calls
:func:`autoreload` and :func:`describe`; elsewhere it first pip-installs the
lab from the repository named in ``pyproject.toml``. Each notebook's Setup
cell then asks :func:`data_root` for the folder its ``LAB_ROOT`` names; with
``LAB_ROOT = None`` on a pip-installed lab that builds the default data +
BadNet once with :func:`ensure_default` into :func:`lab.paths.home_root`
(``~/badnet-lab``, or ``$BADNET_LAB_ROOT``). Building is always such an
explicit call (or ``python -m lab make-default``, ``make lab``): the path
lookups of :mod:`lab.paths` never build.
"""

from __future__ import annotations

import os
from pathlib import Path

# Number of identities of a default built on first use; tests and quick tries set it smaller (e.g. 10).
IDENTITIES_VARIABLE = "BADNET_LAB_IDENTITIES"
DISTRIBUTION = "badnet-pruning-lab"  # the lab's name on pip ([project] name in pyproject.toml)


def pip_install(arguments: list[str]) -> None:
    """``pip install --quiet ARGUMENTS`` with this Python; a failure raises ``RuntimeError`` with pip's one ERROR line.

    pip's remarks about packages the lab does not use (Colab's resolver
    notices) are not shown.
    """
    import importlib
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *arguments],
                          capture_output=True, text=True, encoding="utf-8", errors="replace")
    importlib.invalidate_caches()
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines()
                  if line.startswith("ERROR:") and "dependency resolver" not in line]
        raise RuntimeError((errors or done.stderr.strip().splitlines() or ["pip install failed"])[-1])


def missing_requirements(distribution: str = DISTRIBUTION) -> list[str]:
    """The lab's requirements that are absent or at a version it does not accept, as ``name<specifier>`` strings.

    Where the full ``tensorflow`` is installed (Colab's GPU build), the
    ``tensorflow-cpu`` requirement is read as ``tensorflow``, so that build is
    upgraded in place rather than joined by a second TensorFlow. Empty where
    the lab is not pip-installed (its source folder on the path).
    """
    from importlib import metadata

    try:
        from packaging.requirements import Requirement
    except ImportError:  # a bare environment: pip's own copy
        from pip._vendor.packaging.requirements import Requirement

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    try:
        requirements = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    full_tf = version("tensorflow") is not None
    missing = []
    for text in requirements:
        requirement = Requirement(text.replace("tensorflow-cpu", "tensorflow") if full_tf else text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found = version(requirement.name)
            if found is None or not requirement.specifier.contains(found, prereleases=True):
                missing.append(f"{requirement.name}{requirement.specifier}")
    return missing


def complete_install() -> list[str]:
    """The setup cell's first call: install what of the lab's requirements is missing (:func:`missing_requirements`).

    The cell itself installs only the lab (``pip install --no-deps``); this
    step is checked on every run, so an install interrupted half-way is
    completed by running the cell again. Returns what it installed (usually
    nothing). This module imports only the standard library at the top, so it
    runs before numpy or TensorFlow are there.
    """
    missing = missing_requirements()
    if missing:
        print(f"installing what the lab needs: {', '.join(missing)} ...", flush=True)
        pip_install(missing)
    return missing


def describe() -> str:
    """The setup cell's last call: print which lab runs, from where, and which folder holds its data; that line.

    A description only; the notebook's :func:`data_root` call builds the
    default where it is needed (it knows the notebook's ``LAB_ROOT``).
    """
    import lab
    from lab import paths

    where = f"this repository ({paths.SOURCE_ROOT})" if paths.in_checkout() else "pip-installed"
    line = f"BadNet lab {lab.__version__}, {where}; data and models in {paths.project_root()}"
    print(line)
    return line


def data_root(lab_root: str | os.PathLike | None = None) -> Path:
    """The folder a notebook reads, from its ``LAB_ROOT`` parameter: each notebook's Setup cell calls this.

    ``lab_root`` given: that folder (:func:`lab.paths.lab_root`; nothing is
    built, a folder without ``data/`` is refused in one line). None: the
    default's folder (:func:`lab.paths.project_root`); where the lab is
    pip-installed (Colab, a student's Jupyter) the default is first built
    there if missing (:func:`ensure_default`). In the lab's checkout ``make
    lab`` builds it, and a missing one is refused with that command.
    """
    from lab import paths

    if lab_root in (None, "") and not paths.in_checkout():
        ensure_default(paths.project_root())
    return paths.lab_root(lab_root)


def autoreload() -> bool:
    """Turn on IPython's autoreload (``%autoreload 2``) in the lab's own checkout; returns whether it is on.

    There ``lab/`` is an editable install and its modules may change under a
    running notebook, so they are reloaded before each cell. A pip-installed
    lab (Colab, a Jupyter the student already has) does not change, and there
    autoreload may not even load: IPython 7.34's (Colab's) imports ``imp``,
    which Python 3.12 removed. Outside IPython, or where the extension does not
    import, nothing happens.
    """
    from lab import paths

    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not paths.in_checkout():
        return False
    try:
        shell.run_line_magic("load_ext", "autoreload")
        shell.run_line_magic("autoreload", "2")
    except ImportError:  # an IPython whose autoreload cannot import on this Python: run without it
        return False
    return True


def _identities_from_environment() -> int | None:
    from lab.errors import LabInputError

    value = os.environ.get(IDENTITIES_VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 2:
        raise LabInputError(f"${IDENTITIES_VARIABLE}", "a whole number of identities >= 2", repr(value))
    return int(value)


def ensure_default(root: str | os.PathLike | None = None, progress: bool = True, n_identities: int | None = None,
                   force: bool = False) -> Path:
    """Build the embedded default under ``root`` (default :func:`lab.paths.project_root`) unless it is there.

    Returns ``root``. Does nothing when ``root/models/bd_net.h5`` exists, or
    when ``root/data`` already holds h5 files of someone else's (the real
    course files): the lab never builds over files it did not make. A build
    that was interrupted (some of the default's files there, not all) is
    refused with what to do unless ``force``. ``n_identities`` defaults to
    ``$BADNET_LAB_IDENTITIES``, else 100 (a few minutes on 2 cores, with
    progress bars when ``progress``).
    """
    from lab import paths
    from lab.errors import LabInputError
    from lab.synthetic import default

    root = Path(root).expanduser() if root is not None else paths.project_root()
    if (root / default.MODEL_FILE).exists() and not force:
        return root
    present = [rel for rel in default.FILES if (root / rel).exists()]
    if not force and not present and (root / "data").is_dir() and any((root / "data").rglob("*.h5")):
        return root  # somebody's own data (e.g. the course files): not ours to add to
    if present and not force:
        raise LabInputError(root, f"all of the default's files or none ({len(present)} of {len(default.FILES)} there, "
                            "an interrupted build?); rebuild with lab.setup.ensure_default(force=True) or "
                            f"`python -m lab make-default --out {root} --force`", ", ".join(present))
    n_identities = n_identities or _identities_from_environment()
    if progress:
        print(f"building the embedded default (SynthFaces data + BadNet, {n_identities or 100} identities) in {root}; "
              "a few minutes, once", flush=True)
    report = default.make_default(root, n_identities=n_identities, force=force, progress=progress)
    if progress:
        print(f"built in {report['seconds']:.0f} s: clean test accuracy {report['clean_accuracy']:.1f} %, "
              f"attack success rate {report['attack_success_rate']:.1f} %", flush=True)
    return root
