"""SHA-256 manifests: what a build wrote, with which parameters, and checking it later."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from lab.errors import LabInputError, check_writable
from lab.io.models import sha256_file

MANIFEST_NAME = "manifest.json"


def jsonable(value, strict: bool = True, drop: bool = False, flat: bool = False, array_limit: int | None = None):
    """``value`` as plain JSON data (dict, list, str, int, float, bool, None): the lab's one JSON sanitizer.

    numpy scalars become Python numbers, numpy arrays and tuples lists, pandas'
    missing values (``NA``, ``NaT``) None, dict keys strings. ``strict``: NaN
    and +-inf become None, because JSON has no NaN (``json.dumps`` would write
    the non-standard ``NaN``, which other JSON readers reject) and a rate that
    does not exist is null; ``strict=False`` keeps them (a cache entry's own
    JSON, read back only by the lab). Anything else is passed through as it is
    (``json.dumps`` then names its type), unless:

    - ``drop``: a dict entry whose value is no JSON data (a model, a table) is
      left out, and so is an array of more than ``array_limit`` elements;
    - ``flat``: the outer dict keeps only the entries that are one Python
      value or a list of numbers and strings (what a table row holds); nested
      dicts, arrays, numpy values and objects are left out.
    """
    import numpy as np

    def convert(item, top: bool):
        if isinstance(item, dict):
            kept = {}
            for key, entry in item.items():
                if (drop and not _is_data(entry, array_limit)) or (flat and top and not _is_flat(entry)):
                    continue
                kept[key if isinstance(key, str) else str(key)] = convert(entry, False)
            return kept
        if isinstance(item, (list, tuple)):
            return [convert(entry, False) for entry in item]
        if isinstance(item, np.ndarray):
            return convert(item.tolist(), False)
        if isinstance(item, np.generic):
            item = item.item()
        if isinstance(item, float) and strict and not math.isfinite(item):
            return None
        if _is_missing(item):
            return None
        return item

    return convert(value, True)


def _is_data(value, array_limit: int | None) -> bool:
    """Whether ``value`` is JSON data for :func:`jsonable`'s ``drop`` (arrays up to ``array_limit`` elements)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return array_limit is None or value.size <= array_limit
    return isinstance(value, (dict, list, tuple, str, int, float, bool, type(None), np.generic))


def _is_flat(value) -> bool:
    """A Python number, string, bool or None, or a list or tuple of numbers and strings: what ``flat`` keeps."""
    scalar = (int, float, str)
    return isinstance(value, (*scalar, type(None))) or (isinstance(value, (list, tuple)) and
                                                        all(isinstance(v, scalar) for v in value))


def _is_missing(value) -> bool:
    """pandas' missing scalars (``NA``, ``NaT``); pandas is only asked when some code has imported it."""
    pandas = sys.modules.get("pandas")
    if pandas is None or isinstance(value, (str, bytes, bool, int, float, type(None))):
        return False
    try:
        return bool(pandas.api.types.is_scalar(value) and pandas.isna(value))
    except (TypeError, ValueError):
        return False


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
