"""Looking at a BadNet from its outputs: the attacker's target, per-class accuracy, confidence, self-checks."""

from __future__ import annotations

import numpy as np

from lab.io.data import Dataset


def attack_target(poisoned: Dataset) -> tuple[int, float]:
    """The attacker's target read from a poisoned file: (most common label, % of labels equal to it).

    The course files label every poisoned image with the target, so an
    all-to-one attack gives 100 %; less means an all-to-all or mixed attack.
    """
    if not len(poisoned):
        raise ValueError(f"{poisoned.path}: no poisoned images to read a target from")
    values, counts = np.unique(poisoned.y, return_counts=True)
    best = int(np.argmax(counts))
    return int(values[best]), 100.0 * float(counts[best]) / len(poisoned)


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy (%) of each class 0..n_classes-1: float64 (n_classes,), NaN for classes absent from ``labels``."""
    hits = np.bincount(labels, weights=(predicted == labels).astype(np.float64), minlength=n_classes)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 100.0 * hits / counts, np.nan)


def confidence_table(probabilities: dict[str, np.ndarray]):
    """Long table of the top-class probability of each input, one row per input, for seaborn.

    probabilities: ``{set name: float32 (n, classes)}``. Returns a DataFrame
    with columns ``set`` and ``confidence`` (0..1).
    """
    import pandas as pd

    frames = [pd.DataFrame({"set": name, "confidence": np.max(values, axis=1)}) for name, values in probabilities.items()]
    return pd.concat(frames, ignore_index=True)


def check_range(name: str, value: float, expected: tuple[float, float], hint: str = "") -> str:
    """A self-check for students: raise ``ValueError`` with a helpful message when ``value`` is outside ``expected``.

    Returns a one-line "ok" message to print when it is inside.
    """
    low, high = expected
    if not low <= value <= high:
        raise ValueError(f"{name} is {value:.2f}, expected between {low:g} and {high:g}. {hint}".strip())
    return f"ok: {name} = {value:.2f} (expected {low:g}..{high:g})"


def expected_range(expected: tuple[float, float], root, key: str | None = None, model=None, n: int | None = None,
                   margin: float = 3.0) -> tuple[float, float]:
    """A notebook's self-check range (percent): ``expected``, or what it means for a smaller embedded default.

    The ranges a notebook states are the embedded default's at its full size
    (:class:`lab.synthetic.default.DefaultConfig`, 100 identities). A default
    built with fewer identities (``$BADNET_LAB_IDENTITIES``, for a quick try)
    learns from fewer faces and is evaluated on fewer, so for it:

    - ``key`` (``"clean_test_accuracy"``, ``"attack_success_rate_test"``):
      the lower end is ``margin`` points under what its own build measured
      (``results[key]`` of ``root/manifest.json``) whenever that is lower;
    - ``n``, the number of images the rate is computed over: each end moves out
      by the sampling error of a rate at that end over ``n`` images,
      1.96 sqrt(p (1 - p) / n) (95 %), so a rate its few images cannot tell
      from the range is not refused.

    Any other data (the course files, a full-size default) or a ``model``
    that is not the default's own (SHA-256 against the manifest) keeps
    ``expected``.
    """
    import math
    from pathlib import Path

    from lab.errors import LabInputError
    from lab.io import manifest
    from lab.synthetic.default import DefaultConfig

    low, high = expected
    try:
        record = manifest.read_manifest(Path(root))
    except (LabInputError, OSError):  # no manifest (the course files, say): nothing recorded to go by
        return low, high
    if not isinstance(record, dict):
        return low, high
    smaller = record.get("kind", "").startswith("BadNet Pruning Lab embedded default") and \
        record.get("parameters", {}).get("n_identities", DefaultConfig.n_identities) < DefaultConfig.n_identities
    own_model = model is None or model.metadata.get("sha256") == record.get("files", {}).get("models/bd_net.h5")
    if not (smaller and own_model):
        return low, high
    measured = record.get("results", {}).get(key) if key else None
    if isinstance(measured, (int, float)):
        low = min(low, math.floor((measured - margin) * 10) / 10)
    if n:
        def error(percent: float) -> float:
            rate = min(max(percent / 100.0, 0.0), 1.0)
            return 196.0 * math.sqrt(rate * (1.0 - rate) / n)

        low = max(0.0, math.floor((low - error(low)) * 10) / 10)
        high = min(100.0, math.ceil((high + error(high)) * 10) / 10)
    return low, high
