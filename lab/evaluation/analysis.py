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
