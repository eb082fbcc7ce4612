"""Check, without installing, that every pin in requirements.txt has a wheel on every supported platform.

``python tools/check_platforms.py [--requirements requirements.txt] [--python 3.11 ...] [--platform NAME ...]
[--with-deps] [--keep DIR]``

For each supported platform and Python version it evaluates the pins'
environment markers *for that target* (tensorflow-cpu on Linux x86_64 and
Windows, tensorflow on macOS arm64 and Linux aarch64), then asks pip for a
wheel of each pin (``pip download --only-binary=:all: --no-deps --platform ...
--python-version ...``). A pin passes when pip finds a binary wheel for the
target (a pure-Python ``py3-none-any`` wheel passes everywhere). It prints
one table (pin x target) and exits 1 when any cell is missing.

``--with-deps`` also resolves the whole dependency tree for each target (one
``pip download`` without ``--no-deps``), which catches a transitive package
with no wheel; pip evaluates the *dependencies'* markers for this machine, not
the target, so platform-only dependencies (e.g. pywin32 on Windows) are not
covered by that pass.

It downloads several gigabytes (a TensorFlow wheel per platform and Python)
into a temporary folder that is deleted afterwards, so it runs on demand
(``make check-platforms``) when the pins change, not in CI.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.11", "3.12", "3.13")


def _manylinux(arch: str, glibc_minor: int = 28) -> list[str]:
    """pip's --platform takes exact tags: every manylinux tag a glibc 2.``glibc_minor`` machine accepts."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 16, -1)]
    return tags + [f"manylinux2014_{arch}"] + ([f"manylinux2010_{arch}", f"manylinux1_{arch}"] if arch == "x86_64" else [])


# name -> (pip --platform tags, marker environment). Baselines: glibc 2.28 (RHEL 8, Debian 10, Ubuntu 20.04
# and newer; Colab is 2.35), macOS 13 on Apple silicon (pip expands macosx_13_0 to every older macOS tag).
PLATFORMS = {
    "linux-x86_64": (_manylinux("x86_64"),
                     {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                      "os_name": "posix"}),
    "linux-aarch64": (_manylinux("aarch64"),
                      {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64",
                       "os_name": "posix"}),
    "macos-arm64": (["macosx_13_0_arm64"],
                    {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64",
                     "os_name": "posix"}),
    "windows-x86_64": (["win_amd64"],
                       {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64",
                        "os_name": "nt"}),
}


def read_pins(path: Path) -> list[Requirement]:
    """The ``name==version[; marker]`` lines of a requirements file (comments dropped)."""
    pins = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = re.sub(r"\s+#.*$", "", line).strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        if len(requirement.specifier) != 1 or next(iter(requirement.specifier)).operator != "==":
            raise SystemExit(f"error: {path}:{number}: expected an exact pin name==version, found {line!r}")
        pins.append(requirement)
    return pins


def marker_environment(platform: str, python: str) -> dict:
    """What ``packaging`` needs to evaluate a marker on ``platform`` under CPython ``python``."""
    environment = dict(PLATFORMS[platform][1])
    environment.update(python_version=python, python_full_version=f"{python}.0", implementation_name="cpython",
                       platform_python_implementation="CPython", implementation_version=f"{python}.0")
    return environment


def for_target(pins: list[Requirement], platform: str, python: str) -> list[str]:
    """``name==version`` of each pin whose marker holds on the target."""
    environment = marker_environment(platform, python)
    return [f"{pin.name}{pin.specifier}" for pin in pins if pin.marker is None or pin.marker.evaluate(environment)]


def _pip(args: list[str], platform: str, python: str, dest: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
               "--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--dest", str(dest)]
    for tag in PLATFORMS[platform][0]:
        command += ["--platform", tag]
    return subprocess.run(command + args, capture_output=True, text=True, encoding="utf-8", errors="replace")


def _wheel_tag(dest: Path, pin: str) -> str:
    """The platform part of the wheel pip picked for ``pin`` (newest file of that name in ``dest``)."""
    name, version = pin.split("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    files = [p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-")]
    if not files:
        return "?"
    newest = max(files, key=lambda p: p.stat().st_mtime)
    python_tag, abi, plat = newest.name[:-4].split("-")[-3:]
    return "any" if plat == "any" else f"{python_tag}/{plat}"


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip().startswith("ERROR")]
    return lines[0] if lines else (result.stderr.strip().splitlines() or ["pip failed"])[-1]


def check(pins: list[Requirement], platforms: list[str], pythons: list[str], dest: Path, with_deps: bool) -> int:
    """Print the pin x target table (and the dependency pass); returns the number of failures."""
    targets = [(platform, python) for platform in platforms for python in pythons]
    names = sorted({pin.name for pin in pins}, key=str.lower)
    cells: dict[tuple[str, str, str], str] = {}
    failures = []
    started = time.perf_counter()
    for platform, python in targets:
        for pin in for_target(pins, platform, python):
            name = pin.split("==")[0]
            result = _pip(["--no-deps", pin], platform, python, dest)
            if result.returncode == 0:
                cells[name, platform, python] = _wheel_tag(dest, pin)
            else:
                cells[name, platform, python] = "MISSING"
                failures.append(f"{pin} on {platform} cp{python.replace('.', '')}: {_error_line(result)}")
        print(f"  checked {platform} Python {python} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    # One target per line is readable in a terminal and in a closing note.
    print(f"wheels for {len(pins)} pins x {len(targets)} targets (a pin whose marker excludes a target is skipped):")
    for platform, python in targets:
        used = [(name, cells[name, platform, python]) for name in names if (name, platform, python) in cells]
        missing = [name for name, cell in used if cell == "MISSING"]
        binary = ", ".join(f"{name} {cell}" for name, cell in used if cell not in ("any", "MISSING"))
        status = "OK" if not missing else f"MISSING {', '.join(missing)}"
        print(f"{platform:15s} cp{python.replace('.', ''):4s} {status}: {len(used)} pins, "
              f"{sum(cell == 'any' for _, cell in used)} pure Python; binary: {binary}")

    if with_deps:
        print("dependency trees (pip resolves every transitive dependency for the target, wheels only):")
        for platform, python in targets:
            result = _pip(for_target(pins, platform, python), platform, python, dest)
            status = "OK" if result.returncode == 0 else f"FAILED: {_error_line(result)}"
            if result.returncode:
                failures.append(f"dependency tree on {platform} cp{python.replace('.', '')}: {_error_line(result)}")
            print(f"{platform:15s} cp{python.replace('.', ''):4s} {status}")
    for failure in failures:
        print(f"error: {failure}")
    print(f"{'all pins have wheels' if not failures else f'{len(failures)} failures'} "
          f"({time.perf_counter() - started:.0f} s)")
    return len(failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/check_platforms.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requirements", default=str(ROOT / "requirements.txt"), help="pins to check")
    parser.add_argument("--python", nargs="+", default=list(PYTHONS), choices=PYTHONS, help="Python versions")
    parser.add_argument("--platform", nargs="+", default=list(PLATFORMS), choices=list(PLATFORMS), help="platforms")
    parser.add_argument("--with-deps", action="store_true", help="also resolve each target's whole dependency tree")
    parser.add_argument("--keep", metavar="DIR", help="download into DIR and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    pins = read_pins(Path(args.requirements))
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        return 1 if check(pins, args.platform, args.python, Path(args.keep), args.with_deps) else 0
    with tempfile.TemporaryDirectory(prefix="check-platforms-") as dest:
        return 1 if check(pins, args.platform, args.python, Path(dest), args.with_deps) else 0


if __name__ == "__main__":
    sys.exit(main())
