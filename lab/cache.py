"""Artifacts computed once and reused when their inputs are identical (e.g. 07 reusing the B'' that 05 trained).

An entry lives in ``build/cache/<kind>/<key>/`` (``$BADNET_LAB_CACHE``: another
folder, or ``off``), where ``key`` is the SHA-256 of everything that
determines the artifact: input arrays (bytes, dtype, shape), model weights,
parameters (as canonical JSON), the source of the code that computes it and
the library versions. Any difference gives another key, so an entry is reused
only for identical inputs and otherwise rebuilt; nothing is ever looked up by
name or date. Entries hold plain arrays (``.npz``, loaded without pickle) and
JSON, never code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

VARIABLE = "BADNET_LAB_CACHE"


def _feed(hasher, part) -> None:
    """Add ``part`` to ``hasher`` unambiguously (type and length tagged), arrays nested at any depth included."""
    if isinstance(part, np.ndarray):
        data = np.ascontiguousarray(part)
        hasher.update(f"ndarray:{data.dtype.str}:{data.shape}:".encode())
        hasher.update(data.tobytes())
    elif isinstance(part, (bytes, bytearray)):
        hasher.update(f"bytes:{len(part)}:".encode())
        hasher.update(part)
    elif isinstance(part, (list, tuple)):
        hasher.update(f"seq:{len(part)}:".encode())
        for item in part:
            _feed(hasher, item)
    elif isinstance(part, dict):
        hasher.update(f"dict:{len(part)}:".encode())
        for name in sorted(part, key=str):
            _feed(hasher, str(name))
            _feed(hasher, part[name])
    else:
        text = json.dumps(part, sort_keys=True, default=str)
        hasher.update(f"json:{len(text)}:".encode())
        hasher.update(text.encode())


def digest(*parts) -> str:
    """SHA-256 (hex) of ``parts``: arrays, bytes, JSON-able values, sequences of those."""
    hasher = hashlib.sha256()
    for part in parts:
        _feed(hasher, part)
    return hasher.hexdigest()


def source_digest(module) -> str:
    """SHA-256 of a module's source file: a changed algorithm never reuses an old result."""
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()


def cache_dir() -> Path | None:
    """Where entries live: ``$BADNET_LAB_CACHE`` (``off``/``0``: no cache), else ``build/cache`` of the project."""
    value = os.environ.get(VARIABLE, "").strip()
    if value.lower() in ("off", "0", "no", "false"):
        return None
    if value:
        return Path(value).expanduser()
    from lab.paths import build_dir

    return build_dir() / "cache"


def load(kind: str, key: str) -> tuple[list[np.ndarray], dict] | None:
    """``(arrays, info)`` of the entry, or None when there is none (or the cache is off or unreadable)."""
    root = cache_dir()
    if root is None:
        return None
    entry = root / kind / key
    try:
        info = json.loads((entry / "info.json").read_text(encoding="utf-8"))
        with np.load(entry / "arrays.npz", allow_pickle=False) as archive:
            arrays = [archive[f"a{i}"] for i in range(info["n_arrays"])]
    except (OSError, ValueError, KeyError):  # absent, half-written by a crash, or from an older layout
        return None
    return arrays, info


def store(kind: str, key: str, arrays: list[np.ndarray], info: dict) -> Path | None:
    """Write an entry atomically (a temporary folder renamed into place); returns its folder, None when off."""
    root = cache_dir()
    if root is None:
        return None
    (root / kind).mkdir(parents=True, exist_ok=True)
    entry = root / kind / key
    staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root / kind))
    try:
        from lab.io.manifest import jsonable  # numpy scalars and arrays as numbers and lists; NaN kept

        np.savez(staging / "arrays.npz", **{f"a{i}": array for i, array in enumerate(arrays)})
        (staging / "info.json").write_text(json.dumps(jsonable({**info, "n_arrays": len(arrays), "key": key},
                                                               strict=False)) + "\n", encoding="utf-8")
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry


# ---------------------------------------------------------------- memoized computations (flow, reversal, unlearning)

_REUSED_SECONDS = [0.0]


def clock() -> float:
    """``time.perf_counter()`` plus what every reused result originally cost: a defense timed with it
    reports what its result cost to compute, whether or not parts of it came from the cache."""
    import time

    return time.perf_counter() + _REUSED_SECONDS[0]


def code_digest(*package_names: str) -> str:
    """SHA-256 of every ``.py`` file under the named packages/modules (``lab.defenses``, ``lab.io.models``)."""
    import importlib

    hasher = hashlib.sha256()
    for name in package_names:
        module = importlib.import_module(name)
        files = sorted(Path(module.__file__).parent.rglob("*.py")) if hasattr(module, "__path__") \
            else [Path(module.__file__)]
        for path in files:
            hasher.update(path.name.encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()


def model_parts(model) -> list:
    """What identifies a ``LoadedModel`` for a key: layer classes and names, weights, input scale."""
    keras_model = model.model
    return [[(type(layer).__name__, layer.name) for layer in keras_model.layers], keras_model.get_weights(),
            model.input_scale, model.n_classes]


def memoize(kind: str, parts: list, compute, encode, decode, rng=None):
    """``compute()``, or its stored result when ``parts`` (and ``rng``'s state) are identical.

    encode(result) -> (arrays, info JSON); decode(arrays, info) -> result.
    The numpy generator ``rng`` is part of the key and, on a hit, is moved to
    the state the computation left it in, so a caller cannot tell a reused
    result from a computed one (apart from the time). The key also holds the
    lab's defense code, the library versions and ``kind``.
    """
    import keras
    import tensorflow as tf

    import lab

    key = digest(kind, parts, None if rng is None else rng.bit_generator.state,
                 code_digest("lab.defenses", "lab.io.models", "lab.cache"),
                 [lab.__version__, tf.__version__, keras.__version__, np.__version__])
    found = load(kind, key)
    if found is not None:
        arrays, info = found
        if rng is not None:
            rng.bit_generator.state = info["rng_after"]
        _REUSED_SECONDS[0] += float(info["seconds"])
        return decode(arrays, info["value"])
    started = clock()  # a computation that itself reuses results counts them at their original cost
    result = compute()
    arrays, value = encode(result)
    store(kind, key, list(arrays), {"value": value, "seconds": clock() - started,
                                    "rng_after": None if rng is None else rng.bit_generator.state})
    return result
