"""How well a model does on clean and poisoned data.

All rates are percentages (0..100). Labels are int arrays (n,).
"""

from __future__ import annotations

import numpy as np


def clean_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Percent of clean inputs given their true label."""
    return 100.0 * float(np.mean(predicted == labels)) if len(labels) else float("nan")


def attack_success_rate(predicted: np.ndarray, target_labels: np.ndarray) -> float:
    """Percent of poisoned inputs sent to the attacker's target (the ``label`` of a poisoned file)."""
    return 100.0 * float(np.mean(predicted == target_labels)) if len(target_labels) else float("nan")
