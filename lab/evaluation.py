"""Evaluate a loaded model on course data sets (what the course's eval.py does).

A GoodNet has N+1 outputs; its last class N means "backdoor detected". The
lab recognises one only from what was recorded, never by guessing from the
class count: ``backdoor_class`` in the metadata the lab saved beside the
model (:func:`lab.goodnet.save_goodnet` writes it), or given by the caller
(CLI ``evaluate --backdoor-class N``).
"""

from __future__ import annotations

from lab import metrics
from lab.data import Dataset
from lab.errors import LabInputError


def backdoor_class_of(model) -> int | None:
    """N for a GoodNet the lab built (recorded in its metadata), else None."""
    value = (getattr(model, "metadata", None) or {}).get("backdoor_class")
    return None if value is None else int(value)


def _resolve_backdoor_class(model, backdoor_class: int | str | None) -> int | None:
    where = model.path
    if backdoor_class == "auto":
        backdoor_class = backdoor_class_of(model)
        where = f"{model.path}.lab.json" if model.path else None  # the recorded class comes from the sidecar
    if backdoor_class is None:
        return None
    backdoor_class = int(backdoor_class)
    if not 0 < backdoor_class < model.n_classes:
        raise LabInputError(where, f"a backdoor class in 1..{model.n_classes - 1} (the model has "
                            f"{model.n_classes} outputs)", str(backdoor_class))
    return backdoor_class


def evaluate(model, clean: Dataset, poisoned: Dataset | None = None, batch_size: int = 512,
             backdoor_class: int | str | None = "auto") -> dict:
    """Clean accuracy and attack success rate (percent) of ``model`` (a ``LoadedModel``).

    Returns ``{"clean_accuracy", "attack_success_rate" (None without poisoned
    data), "n_clean", "n_poisoned"}``. For a GoodNet (``backdoor_class`` N,
    by default read from the lab's metadata, see the module docstring) it
    also returns ``detection_rate`` (poisoned sent to N, None without poisoned
    data), ``clean_false_positive_rate`` (clean sent to N) and
    ``backdoor_class``; labels must then lie in 0..N-1. Data are checked
    against the model first.
    """
    backdoor = _resolve_backdoor_class(model, backdoor_class)
    label_classes = backdoor  # a GoodNet's labels stop below its backdoor class N; None: the model's classes
    model.check_data(clean, label_classes)
    clean_predicted = model.predict_labels(clean.x, batch_size)
    result = {"clean_accuracy": metrics.clean_accuracy(clean_predicted, clean.y),
              "attack_success_rate": None, "n_clean": len(clean), "n_poisoned": 0}
    poisoned_predicted = None
    if poisoned is not None:
        model.check_data(poisoned, label_classes)
        poisoned_predicted = model.predict_labels(poisoned.x, batch_size)
        result["attack_success_rate"] = metrics.attack_success_rate(poisoned_predicted, poisoned.y)
        result["n_poisoned"] = len(poisoned)
    if backdoor is not None:
        result["detection_rate"] = (None if poisoned_predicted is None
                                    else metrics.detection_rate(poisoned_predicted, backdoor))
        result["clean_false_positive_rate"] = metrics.clean_false_positive_rate(clean_predicted, backdoor)
        result["backdoor_class"] = backdoor
    return result
