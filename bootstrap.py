"""Set up and run the lab on Linux, macOS or Windows with nothing but Python 3.11-3.13.

    python bootstrap.py lab       # .venv + the embedded default (if missing) + every notebook into build/notebooks
    python bootstrap.py test      # .venv + the test suite (pytest's arguments after --: test -- -k default)
    python bootstrap.py jupyter   # .venv + the default (if missing), then Jupyter on notebooks/
    python bootstrap.py env | default | student

Only the standard library is imported here: on a fresh machine nothing else
is installed yet. The Python that runs this script creates ``.venv`` beside
it (once); every later step runs with the environment's own interpreter,
found by ``sysconfig`` (``.venv/bin/python``, or ``.venv\\Scripts\\python.exe``
on Windows). The Makefile's targets call this script, so ``make lab`` and
``python bootstrap.py lab`` are one path. ``$BADNET_LAB_IDENTITIES`` makes a
default with fewer identities (quick, e.g. 10), as it does for the notebooks.
"""

from __future__ import annotations  # parsed by older Pythons too, which are refused in one line

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed-stamp"  # what the environment was installed from (see install_fingerprint)
SUPPORTED = ((3, 11), (3, 13))  # TensorFlow 2.21's wheels, numpy 2.4 and pandas 3
DEFAULT_MODEL = ROOT / "models" / "bd_net.h5"
IDENTITIES_VARIABLE = "BADNET_LAB_IDENTITIES"  # lab.setup.IDENTITIES_VARIABLE (lab is not importable here)
KERNEL_NAME, KERNEL_DISPLAY = "python3", "Python 3 (BadNet lab)"


class Failed(Exception):
    """A step that cannot go on; ``main`` prints it as one ``error:`` line."""


def venv_python(venv: Path = VENV) -> Path:
    """The interpreter of the virtual environment ``venv``, where this platform's venvs put it."""
    if "venv" in sysconfig.get_scheme_names():  # Python >= 3.11: the layout ``python -m venv`` uses here
        scripts = Path(sysconfig.get_path("scripts", scheme="venv", vars={"base": str(venv), "platbase": str(venv)}))
    else:  # an older Python, only asked about an environment made earlier
        scripts = venv / ("Scripts" if os.name == "nt" else "bin")
    return scripts / ("python.exe" if os.name == "nt" else "python")


def shown(command: list[str]) -> str:
    """``command`` as the user's shell would take it, paths inside the repository made relative."""
    parts = [os.path.relpath(part, ROOT) if os.path.isabs(part) and Path(part).is_relative_to(ROOT) else part
             for part in map(str, command)]
    return subprocess.list2cmdline(parts) if os.name == "nt" else shlex.join(parts)


def run(command: list, quiet_stdout: bool = False) -> None:
    """Run ``command`` in the repository (printed first, as make does); Failed when it exits non-zero."""
    command = [str(part) for part in command]
    print(shown(command), flush=True)
    status = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL if quiet_stdout else None).returncode
    if status != 0:
        raise Failed(f"`{shown(command)}` exited with status {status}")


def check_version(version: tuple = tuple(sys.version_info[:2]), executable: str = sys.executable) -> None:
    """Refuse a Python outside 3.11-3.13 in one line naming what to run instead."""
    low, high = SUPPORTED
    if not low <= tuple(version) <= high:
        raise Failed(f"Python 3.11-3.13 needed to create .venv, found {'.'.join(map(str, version))} ({executable}); "
                     "run this script with another, e.g. `python3.13 bootstrap.py ...` or `py -3.13 bootstrap.py ...`")


def install_fingerprint(venv: Path = VENV) -> str:
    """SHA-256 of what an install depends on: requirements.txt, pyproject.toml and the environment's
    ``pyvenv.cfg`` (which Python made it)."""
    digest = hashlib.sha256()
    for path in (ROOT / "requirements.txt", ROOT / "pyproject.toml", venv / "pyvenv.cfg"):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def ensure_env() -> Path:
    """Create ``.venv`` if missing and install the pins and the lab (editable) unless already done; its Python.

    The install is redone when requirements.txt, pyproject.toml or the
    interpreter changed since the last one (the stamp file records them), so
    a second run costs nothing. A folder ``.venv`` without an interpreter is
    refused, never deleted.
    """
    if not VENV.exists():
        check_version()
        try:
            run([sys.executable, "-m", "venv", VENV])
        except Failed:
            shutil.rmtree(VENV, ignore_errors=True)  # made just now, unusable (no ensurepip, say): not left behind
            raise
    python = venv_python()
    if not python.exists():
        raise Failed(f"{VENV} holds no virtual environment ({shown([python])} is missing); "
                     "delete the folder and run again")
    fingerprint = install_fingerprint()
    if STAMP.exists() and STAMP.read_text(encoding="utf-8").strip() == fingerprint:
        return python
    STAMP.unlink(missing_ok=True)  # a half-finished install is redone next time
    run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([python, "-m", "pip", "install", "--quiet", "-r", "requirements.txt"])
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", "."])
    run([python, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL_NAME, "--display-name",
         KERNEL_DISPLAY], quiet_stdout=True)
    STAMP.write_text(fingerprint + "\n", encoding="utf-8")
    return python


def ensure_default(python: Path, seed: int) -> None:
    """Build the embedded default into data/ and models/ once (delete models/bd_net.h5 to rebuild)."""
    if DEFAULT_MODEL.exists():
        print("default already built (models/bd_net.h5); skipping", flush=True)
        return
    command = [python, "-m", "lab", "make-default", "--out", ".", "--seed", str(seed)]
    identities = os.environ.get(IDENTITIES_VARIABLE, "").strip()
    if identities:
        if not identities.isdigit() or int(identities) < 2:
            raise Failed(f"${IDENTITIES_VARIABLE}: expected a whole number of identities >= 2, found {identities!r}")
        command += ["--identities", identities]
    run(command)


def ensure_bwrap() -> None:
    """On Linux, make sure bubblewrap (the grader's sandbox) is there for its tests (tools/ensure_bwrap.sh).

    Elsewhere there is nothing to install: bubblewrap needs Linux, which is
    said before the tests start.
    """
    if sys.platform.startswith("linux"):
        subprocess.run(["sh", str(ROOT / "tools" / "ensure_bwrap.sh")], cwd=ROOT)
    else:
        print("note: the grader's sandbox (bubblewrap) needs Linux: its tests (tests/test_grader.py) fail here",
              flush=True)


def cmd_env(args) -> None:
    ensure_env()


def cmd_default(args) -> None:
    ensure_default(ensure_env(), args.seed)


def cmd_lab(args) -> None:
    """Every numbered notebook, then the instructor notebook A1, top to bottom on a fresh kernel.

    Executed copies and HTML exports go to build/notebooks/
    (``*.nbconvert.ipynb`` leftovers are never picked up). Naming notebooks
    (``lab notebooks/03_pruning.ipynb``) runs only those, in the order given.
    """
    for name in args.notebooks:
        if not (ROOT / name).is_file():
            raise Failed(f"{name}: expected a notebook of this repository (e.g. notebooks/00_data.ipynb), "
                         "found no such file")
    python = ensure_env()
    ensure_default(python, args.seed)
    run([python, "-m", "lab", "evaluate", "--model", "models/bd_net.h5", "--clean", "data/cl/test.h5",
         "--poisoned", "data/bd/bd_test.h5"])
    out = str(Path("build") / "notebooks")
    if args.notebooks:
        run([python, "-m", "lab", "notebooks", "--html", "--out", out, *args.notebooks])
    else:
        run([python, "-m", "lab", "notebooks", "--html", "--out", out])
        run([python, "-m", "lab", "notebooks", "--html", "--out", out,
             str(Path("notebooks") / "A1_make_your_own_badnet.ipynb")])
    print(f"open {Path(out) / '*.html'}, or run `python bootstrap.py jupyter` to work in the notebooks yourself")


def cmd_jupyter(args) -> None:
    python = ensure_env()
    ensure_default(python, args.seed)  # first, so the first Setup cell finds data/ and models/
    run([python, "-m", "jupyter", "notebook", "notebooks"])


def cmd_student(args) -> None:
    run([ensure_env(), "-m", "lab", "student"])


def cmd_test(args) -> None:
    """The suite on ``--workers`` processes (pytest-xdist), a test file per worker so its fixtures run once."""
    python = ensure_env()
    ensure_bwrap()
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    run([python, "-m", "pytest", "-n", str(args.workers), "--dist", "loadfile", *extra])


COMMANDS = {
    "lab": (cmd_lab, "create .venv, build the default data + BadNet if missing, run every notebook into build/"),
    "test": (cmd_test, "create .venv and run the test suite"),
    "jupyter": (cmd_jupyter, "build the default if missing and open the notebooks in Jupyter"),
    "env": (cmd_env, "create .venv and install the pinned requirements and the lab (once)"),
    "default": (cmd_default, "create .venv and build the embedded default if models/bd_net.h5 is missing"),
    "student": (cmd_student, "regenerate the student copies in student/ (solutions taken out)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bootstrap.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (handler, help_text) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        if name in ("lab", "jupyter", "default"):
            command.add_argument("--seed", type=int, default=1234, help="seed of the default's build (default 1234)")
        if name == "lab":
            command.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                                 help="run only these notebooks (default: every numbered notebook, then A1)")
        if name == "test":
            command.add_argument("--workers", type=int, default=2, metavar="N",
                                 help="pytest-xdist worker processes (default 2; 0 runs in one process)")
            command.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="...",
                                 help="passed on to pytest, after -- (e.g. -- tests/test_setup.py -k default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except Failed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
