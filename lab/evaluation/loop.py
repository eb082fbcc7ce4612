"""The one evaluation loop: models in, the CSR/CFR/ATR/DTR breakdown out, per model and per poisoned set.

:func:`model_breakdowns` is the loop; :func:`evaluate` (the course's
``eval.py``), :func:`comparison_table` and :func:`trigger_table` are views
of it. Anything with ``n_classes`` and ``predict_labels(x, batch_size)`` is a
model here (a ``LoadedModel``, a GoodNet, a detector: see
:class:`lab.defenses.base.Classifier`).

A GoodNet or detector has N+1 outputs; its last class N means "backdoor
detected". The lab recognises one only from what was recorded, never by
guessing from the class count: ``backdoor_class`` on the model or in the
metadata the lab saved beside it (:func:`lab.defenses.goodnet.save_goodnet`
writes it), or given by the caller (CLI ``evaluate --backdoor-class N``).
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from lab.constants import BATCH_SIZE
from lab.errors import LabInputError
from lab.evaluation import metrics
from lab.io.data import Dataset

POOLED = "all"  # the trigger name of every poisoned input of a multi-trigger attack together


def backdoor_class_of(model) -> int | None:
    """N for a GoodNet or detector (recorded on it or in its metadata), else None."""
    value = getattr(model, "backdoor_class", None)
    if value is None:
        value = (getattr(model, "metadata", None) or {}).get("backdoor_class")
    return None if value is None else int(value)


def _resolve_backdoor_class(model, backdoor_class: int | str | None) -> int | None:
    where = getattr(model, "path", None)
    if backdoor_class == "auto":
        backdoor_class = backdoor_class_of(model)
        if where:  # the recorded class comes from the sidecar: a wrong one is refused naming it
            where = f"{where}.lab.json"
    if backdoor_class is None:
        return None
    backdoor_class = int(backdoor_class)
    if not 0 < backdoor_class < model.n_classes:
        raise LabInputError(where, f"a backdoor class in 1..{model.n_classes - 1} (the model has "
                            f"{model.n_classes} outputs)", str(backdoor_class))
    return backdoor_class


def model_breakdowns(models: Mapping[str, object], clean: Dataset, poisoned: Mapping[str, Dataset] | None = None,
                     backdoor_class: int | None = None, batch_size: int = BATCH_SIZE,
                     pool: bool = False) -> Iterator[tuple[str, object, int, dict]]:
    """For every model: ``(name, model, backdoor class N, {poisoned set name: breakdown})``.

    models: ``{name: model}``; clean: :class:`Dataset` (pixels 0..255);
    poisoned: ``{name: Dataset}`` whose labels are the attacker's targets
    (None or empty: one breakdown under the key None, poisoned parts NaN).
    backdoor_class: N; by default each model's recorded backdoor class,
    else its class count (a class a plain model never answers, so its CFR
    and DTR are 0). ``pool``: with several poisoned sets, add
    :data:`POOLED` for all of them together. Each breakdown is
    :func:`lab.evaluation.metrics.breakdown` (percent). The clean set is
    predicted once per model.
    """
    poisoned = dict(poisoned or {})
    for name, model in models.items():
        backdoor = backdoor_class if backdoor_class is not None else backdoor_class_of(model)
        backdoor = model.n_classes if backdoor is None else backdoor
        clean_predicted = model.predict_labels(clean.x, batch_size)
        parts: dict = {}
        if not poisoned:
            parts[None] = metrics.breakdown(clean_predicted, clean.y, None, None, backdoor)
        pooled_predicted, pooled_targets = [], []
        for set_name, dataset in poisoned.items():
            predicted = model.predict_labels(dataset.x, batch_size)
            pooled_predicted.append(predicted)
            pooled_targets.append(dataset.y)
            parts[set_name] = metrics.breakdown(clean_predicted, clean.y, predicted, dataset.y, backdoor)
        if pool and len(poisoned) > 1:
            parts[POOLED] = metrics.breakdown(clean_predicted, clean.y, np.concatenate(pooled_predicted),
                                              np.concatenate(pooled_targets), backdoor)
        yield name, model, backdoor, parts


def comparison_table(models: Mapping[str, object], clean, poisoned=None, backdoor_class: int | None = None,
                     batch_size: int = BATCH_SIZE):
    """One row per model with the full breakdown, for tables and :func:`lab.evaluation.plots.plot_comparison`.

    models: ``{name: model}`` (BadNet, pruned models, GoodNets, detectors, ...).
    clean / poisoned: :class:`lab.io.data.Dataset` (pixels 0..255; poisoned optional).
    backdoor_class: see :func:`model_breakdowns`.
    Returns a ``pandas.DataFrame`` indexed by model name with the columns of
    :data:`lab.evaluation.metrics.BREAKDOWN_COLUMNS` (percent) plus
    ``n_classes`` and ``backdoor_class``.
    """
    import pandas as pd

    sets = None if poisoned is None else {"poisoned": poisoned}
    rows = [{"model": name, **next(iter(parts.values())), "n_classes": model.n_classes, "backdoor_class": backdoor}
            for name, model, backdoor, parts in model_breakdowns(models, clean, sets, backdoor_class, batch_size)]
    return pd.DataFrame(rows).set_index("model")


def trigger_table(models: Mapping[str, object], clean, poisoned: Mapping[str, object],
                  backdoor_class: int | None = None, batch_size: int = BATCH_SIZE):
    """Clean accuracy, ASR and detection for every model and every trigger (percent).

    models: ``{name: model}`` (BadNets, pruned models, GoodNets).
    clean: :class:`lab.io.data.Dataset`; poisoned: ``{trigger: Dataset}``
    (see :func:`lab.attacks.building.load_poisoned`). backdoor_class: see
    :func:`model_breakdowns`. Returns a ``pandas.DataFrame`` indexed by
    (model, trigger) with the columns of :data:`lab.evaluation.metrics.BREAKDOWN_COLUMNS`;
    the trigger ``"all"`` pools every poisoned input of a multi-trigger attack.
    """
    import pandas as pd

    rows = [{"model": name, "trigger": trigger, **breakdown}
            for name, _, _, parts in model_breakdowns(models, clean, poisoned, backdoor_class, batch_size, pool=True)
            for trigger, breakdown in parts.items()]
    return pd.DataFrame(rows).set_index(["model", "trigger"])


def evaluate(model, clean: Dataset, poisoned: Dataset | None = None, batch_size: int = BATCH_SIZE,
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
    if poisoned is not None:
        model.check_data(poisoned, label_classes)
    sets = None if poisoned is None else {"poisoned": poisoned}
    _, _, _, parts = next(model_breakdowns({"model": model}, clean, sets, backdoor, batch_size))
    parts = next(iter(parts.values()))
    result = {"clean_accuracy": parts["clean_accuracy"], "attack_success_rate": None, "n_clean": len(clean),
              "n_poisoned": 0}
    if poisoned is not None:
        result["attack_success_rate"] = parts["attack_success_rate"]
        result["n_poisoned"] = len(poisoned)
    if backdoor is not None:
        result["detection_rate"] = None if poisoned is None else parts["detection_rate"]
        result["clean_false_positive_rate"] = parts["clean_false_positive_rate"]
        result["backdoor_class"] = backdoor
    return result
