"""Evaluate a loaded model on course data sets (what the course's eval.py does)."""

from __future__ import annotations

from lab import metrics
from lab.data import Dataset


def evaluate(model, clean: Dataset, poisoned: Dataset | None = None, batch_size: int = 512) -> dict:
    """Clean accuracy and attack success rate (percent) of ``model`` (a ``LoadedModel``).

    Returns ``{"clean_accuracy", "attack_success_rate" (None without poisoned
    data), "n_clean", "n_poisoned"}``. Data are checked against the model first.
    """
    model.check_data(clean)
    result = {"clean_accuracy": metrics.clean_accuracy(model.predict_labels(clean.x, batch_size), clean.y),
              "attack_success_rate": None, "n_clean": len(clean), "n_poisoned": 0}
    if poisoned is not None:
        model.check_data(poisoned)
        result["attack_success_rate"] = metrics.attack_success_rate(model.predict_labels(poisoned.x, batch_size), poisoned.y)
        result["n_poisoned"] = len(poisoned)
    return result
