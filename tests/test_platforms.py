"""Every platform the README names: bootstrap.py, text as UTF-8 whatever the locale, names Windows accepts.

What only Windows or macOS can show is not tested here (this runs on
Linux); what the lab does the same everywhere is: ``bootstrap.py`` runs on the
standard library alone and finds a venv's interpreter where ``venv`` put it,
the Makefile's set-up targets are calls of it, every text file the lab reads
or writes is UTF-8 under a locale that is not (a Windows code page stands in
as Linux's ASCII ``C`` locale), and no file name the repository holds or the
lab makes is one Windows refuses. ``tools/smoke.sh`` runs ``bootstrap.py lab``
end to end on a fresh copy.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def _bootstrap():
    spec = importlib.util.spec_from_file_location("bootstrap", REPO / "bootstrap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bootstrap = _bootstrap()


def test_bootstrap_runs_on_the_standard_library_alone():
    # -S: no site-packages at all, as on a machine where nothing is installed yet; -I: no user site, no PYTHON*.
    result = subprocess.run([sys.executable, "-I", "-S", str(REPO / "bootstrap.py"), "--help"],
                            capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("lab", "test", "jupyter", "env", "default", "student"):
        assert command in result.stdout


def test_bootstrap_finds_the_interpreter_where_venv_puts_it(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = bootstrap.venv_python(venv)
    assert python.is_file(), python
    prefix = subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                            encoding="utf-8", check=True, timeout=60).stdout.strip()
    assert os.path.samefile(prefix, venv)


def test_bootstrap_refuses_an_unsupported_python_in_one_line():
    for version in ((3, 11), (3, 12), (3, 13)):
        bootstrap.check_version(version, "python")
    for version in ((3, 10), (3, 14)):
        with pytest.raises(bootstrap.Failed) as refused:
            bootstrap.check_version(version, "/usr/bin/python")
        message = str(refused.value)
        assert "\n" not in message and "Python 3.11-3.13 needed" in message and "py -3.13" in message


def test_bootstrap_reinstalls_only_when_what_it_installed_from_changed(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for venv, version in ((first, "3.11.7"), (second, "3.13.0")):
        venv.mkdir()
        (venv / "pyvenv.cfg").write_text(f"version = {version}\n", encoding="utf-8")
    assert bootstrap.install_fingerprint(first) == bootstrap.install_fingerprint(first)
    assert bootstrap.install_fingerprint(first) != bootstrap.install_fingerprint(second)


def test_bootstrap_lab_runs_only_the_notebooks_named_and_refuses_a_missing_one_before_installing(capsys):
    """``bootstrap.py lab NOTEBOOK`` (the smoke run's entry point): a wrong name is one line, and no .venv is made."""
    args = bootstrap.build_parser().parse_args(["lab", "notebooks/00_data.ipynb", "notebooks/03_pruning.ipynb"])
    assert args.notebooks == ["notebooks/00_data.ipynb", "notebooks/03_pruning.ipynb"]
    assert bootstrap.build_parser().parse_args(["lab"]).notebooks == []
    venv_existed = bootstrap.VENV.exists()
    assert bootstrap.main(["lab", "notebooks/99_missing.ipynb"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "notebooks/99_missing.ipynb: expected a notebook" in error
    assert bootstrap.VENV.exists() == venv_existed


def test_make_targets_are_calls_of_bootstrap():
    """One path: every set-up target of the Makefile runs bootstrap.py, none installs or runs on its own."""
    recipes, target = {}, None
    for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines():
        if re.match(r"^[\w-]+:", line):
            target = line.split(":")[0]
            recipes[target] = []
        elif line.startswith("\t") and target:
            recipes[target].append(line.strip())
    for name in ("env", "default", "lab", "student", "jupyter", "test"):
        assert recipes[name] and all(step.lstrip("@").startswith(f"$(BOOTSTRAP) {name}") for step in recipes[name]), \
            (name, recipes[name])
    assert "BOOTSTRAP := $(PYTHON) bootstrap.py" in (REPO / "Makefile").read_text(encoding="utf-8")


# The lab's text handling, in a process whose locale encoding is ASCII (PYTHONUTF8=0 keeps Python's UTF-8 mode
# off, LC_ALL=C PYTHONCOERCECLOCALE=0 keeps the C locale): any text file opened without encoding="utf-8" either
# fails on the non-ASCII text below or is reported by Python's EncodingWarning, made an error for the lab's code.
NON_UTF8_SCRIPT = r'''
import json, locale, sys, warnings
from pathlib import Path

assert locale.getpreferredencoding(False).lower() not in ("utf-8", "utf8"), locale.getpreferredencoding(False)
warnings.filterwarnings("error", category=EncodingWarning, module=r"lab(\..*)?$")
warnings.filterwarnings("error", category=EncodingWarning, module=r"sync_setup_cells$")
out = Path(sys.argv[1])
names = "José Müller, Zoë Ødegård, 李小龙"

import numpy as np
from lab import cache
from lab.course import autograde, notebooks, student
from lab.io import manifest

# A manifest written elsewhere with raw UTF-8 (not \u escapes): read and checked here.
(out / "data").mkdir()
(out / "data" / "notes.txt").write_bytes(names.encode("utf-8"))
manifest.write_manifest(out, ["data/notes.txt"], {"kind": "course files", "authors": names})
raw = json.loads((out / "manifest.json").read_bytes().decode("utf-8"))
(out / "manifest.json").write_bytes(json.dumps(raw, ensure_ascii=False).encode("utf-8"))
assert manifest.read_manifest(out)["authors"] == names
manifest.check_manifest(out)

# The result cache: an entry with non-ASCII information, stored and read back.
cache.store("platforms", "0" * 64, [np.arange(3)], {"who": names})
arrays, info = cache.load("platforms", "0" * 64)
assert info["who"] == names and arrays[0].tolist() == [0, 1, 2]

# The autograder's table: student names with accents.
table = autograde.write_csv([{"student": names, "notebook": "01_badnet.ipynb", "exercises": {
    "ex01": {"earned": 1.0, "possible": 2.0, "error": "Ungültig"}}}], out / "grades.csv")
assert names in table.read_bytes().decode("utf-8")

# A notebook (the lab's own titles hold non-ASCII, e.g. "01 · Meet the BadNet") exported to HTML.
import nbformat
node = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# 01 · {names}")])
nbformat.write(node, out / "names.ipynb")
html = notebooks.export_html(out / "names.ipynb")
assert names in html.read_bytes().decode("utf-8")

# A student copy (nbgrader's generate_assignment) of a notebook with a non-ASCII title, written and checked.
(out / "source").mkdir()
source = Path(sys.argv[2]).parent / "notebooks" / "01_badnet.ipynb"
(out / "source" / "01_badnet.ipynb").write_bytes(source.read_bytes())
written = student.write(out / "student", out / "source")
assert written and student.check(out / "student", out / "source") == []
assert "·" in (out / "student" / "01_badnet.ipynb").read_bytes().decode("utf-8")

# The setup-cell sync reads the README (non-ASCII) and the notebooks.
sys.path.insert(0, sys.argv[2])
import sync_setup_cells
assert sync_setup_cells.main(["--check"]) == 0
print("ok")
'''


def test_text_files_are_utf8_under_a_non_utf8_locale(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LC_", "PYTHON", "LANG"))}
    env.update({"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
                "PYTHONWARNDEFAULTENCODING": "1", "BADNET_LAB_CACHE": str(tmp_path / "cache"),
                "HOME": str(tmp_path / "home")})
    (tmp_path / "out").mkdir()
    script = tmp_path / "text_handling.py"  # a source file is UTF-8 whatever the locale (a -c argument is not)
    script.write_text(NON_UTF8_SCRIPT, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), str(REPO / "tools")],
                            capture_output=True, env=env, cwd=tmp_path, timeout=600)
    stderr = result.stderr.decode("utf-8", errors="replace")
    assert result.returncode == 0 and result.stdout.decode().strip().endswith("ok"), stderr[-3000:]


# Files whose implicit encodings are fixed by the engineer who owns them (the challenge and its sandbox); the
# test below fails when one of these no longer has any, so the list only shrinks.
IMPLICIT_ENCODING_ELSEWHERE = {"lab/course/challenge/key.py", "lab/course/challenge/make.py", "lab/course/sandbox.py"}


def _implicit_encodings(path) -> list[str]:
    """``file:line: call`` for each text-mode open/read_text/write_text (or text subprocess) without an encoding."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or any(keyword.arg == "encoding" for keyword in node.keywords):
            continue
        func, keywords = node.func, {keyword.arg: keyword.value for keyword in node.keywords}
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
        if name in ("read_text", "write_text"):
            found.append((node.lineno, name))
        elif name in ("open", "fdopen") and owner not in ("os", "Image", "h5py"):
            at = 1 if isinstance(func, ast.Name) or name == "fdopen" else 0  # open(path, mode), Path.open(mode)
            mode = node.args[at] if len(node.args) > at else keywords.get("mode")
            if not (isinstance(mode, ast.Constant) and "b" in str(mode.value)):
                found.append((node.lineno, f"{name}({ast.unparse(mode) if mode is not None else ''})"))
        elif name in ("run", "Popen", "check_output") and any(
                isinstance(keywords.get(flag), ast.Constant) and keywords[flag].value is True
                for flag in ("text", "universal_newlines")):
            found.append((node.lineno, f"{name}(text=True)"))
    return [f"{path.relative_to(REPO).as_posix()}:{line}: {call}" for line, call in sorted(found)]


def test_no_text_file_opened_without_an_encoding():
    paths = [REPO / "bootstrap.py", *sorted((REPO / "lab").rglob("*.py")), *sorted((REPO / "tools").glob("*.py"))]
    found = {path.relative_to(REPO).as_posix(): _implicit_encodings(path) for path in paths}
    assert not [line for name, lines in found.items() if name not in IMPLICIT_ENCODING_ELSEWHERE for line in lines]
    assert all(found[name] for name in IMPLICIT_ENCODING_ELSEWHERE), "fixed: take it out of the list"


WINDOWS_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$", re.IGNORECASE)


def _windows_refuses(name: str) -> bool:
    return bool(set(name) & set('<>:"|?*\\') or name.endswith((".", " ")) or WINDOWS_RESERVED.match(name)
                or any(ord(char) < 32 for char in name))


def test_file_names_windows_accepts():
    from lab.attacks import triggers
    from lab.defenses.pruning import threshold_filename

    if (REPO / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True,
                                 timeout=60).stdout.decode("utf-8").split("\0")
    else:  # a copy without git (an unpacked archive): its files, less what the lab builds or installs
        made_here = {".venv", "build", "data", "models", "__pycache__", ".pytest_cache"}
        tracked = [path.relative_to(REPO).as_posix() for path in REPO.rglob("*") if path.is_file()
                   and not made_here & set(path.relative_to(REPO).parts[:-1]) and ".egg-info" not in str(path)]
    parts = {part for path in tracked if path for part in path.split("/")}
    made = {threshold_filename(t) for t in (2, 2.5, 10, 0.125)} | {threshold_filename(4, ".keras")}
    made |= {f"bd_test_{name}.h5" for name in triggers.REGISTRY} | {"bd_test_blended@0.1.h5", "bd_test_warp@0.5.h5"}
    assert not sorted(name for name in parts | made if _windows_refuses(name))
    lowered = [path.lower() for path in tracked if path]
    assert len(lowered) == len(set(lowered)), "two tracked paths differ only in case (one file on Windows and macOS)"
