"""SHA-256 manifests: what a build wrote, with which parameters, and checking it later."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lab.errors import LabInputError, check_writable
from lab.io.models import sha256_file

MANIFEST_NAME = "manifest.json"


def jsonable(value):
    """``value`` for strict JSON: numpy scalars as Python ones, tuples as lists, NaN and +-inf as None.

    JSON has no NaN (``json.dumps`` would write the non-standard ``NaN``,
    which other JSON readers reject), so a rate that does not exist is null.
    """
    import numpy as np

    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value, **kwargs) -> str:
    """Strict JSON text of ``value`` (see :func:`jsonable`): never ``NaN`` or ``Infinity``."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)


def write_manifest(root: str | os.PathLike, files: list[str], info: dict, force: bool = False) -> Path:
    """Write ``root/manifest.json``: ``info`` plus ``files`` {relative path: SHA-256}."""
    root = Path(root)
    path = root / MANIFEST_NAME
    check_writable(path, force)
    record = {**info, "files": {rel: sha256_file(root / rel) for rel in sorted(files)}}
    path.write_text(dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest under ``root`` (raises one line when it is missing or not JSON)."""
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        raise LabInputError(path, "a manifest written by `python -m lab make-default`", "no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise LabInputError(path, "a JSON manifest", f"invalid JSON ({error.msg} at line {error.lineno})") from None


def verify_manifest(root: str | os.PathLike) -> dict[str, str]:
    """Check every file listed in the manifest: {relative path: 'ok' | 'missing' | 'changed'}."""
    root = Path(root)
    status = {}
    for rel, digest in read_manifest(root)["files"].items():
        path = root / rel
        if not path.exists():
            status[rel] = "missing"
        else:
            status[rel] = "ok" if sha256_file(path) == digest else "changed"
    return status


def check_manifest(root: str | os.PathLike) -> None:
    """Raise :class:`LabInputError` naming the first file that is missing or changed."""
    for rel, state in verify_manifest(root).items():
        if state != "ok":
            raise LabInputError(Path(root) / rel, f"the SHA-256 recorded in {Path(root) / MANIFEST_NAME}",
                                "a missing file" if state == "missing" else "different contents")
