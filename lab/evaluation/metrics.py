"""How well a model does on clean and poisoned data.

All rates are percentages (0..100). ``predicted`` and labels are int arrays (n,).
``backdoor_class`` is N, the extra class a GoodNet (N+1 outputs) answers when
it flags an input as backdoored; a plain N-class model never answers N.

The breakdown used in the course reports splits each set into parts that
add up to 100 (every input falls in exactly one part, because true and
target labels are < N):

- clean inputs: **CSR** (clean success rate) = answered the true label (this
  is the clean accuracy); **CFR** (clean flag rate) = answered N, a false
  alarm (the clean false-positive rate); ``clean_other`` = any other wrong
  label. CSR + CFR + clean_other = 100.
- poisoned inputs: **ATR** (attack success rate) = answered the attacker's
  target; **DTR** (detection rate) = answered N, the backdoor was caught;
  ``poisoned_other`` = any other label. Poisoned files carry only the target,
  not the true identity, so ``poisoned_other`` mixes "restored to the true
  label" with plain mistakes. ATR + DTR + poisoned_other = 100.
"""

from __future__ import annotations

import numpy as np

# Short names from the course reports -> the lab's column names.
SHORT_NAMES = {"CSR": "clean_accuracy", "CFR": "clean_false_positive_rate",
               "ATR": "attack_success_rate", "DTR": "detection_rate"}
BREAKDOWN_COLUMNS = ("clean_accuracy", "clean_false_positive_rate", "clean_other",
                     "attack_success_rate", "detection_rate", "poisoned_other")


def percent(hits: np.ndarray) -> float:
    """Percent of true values in a bool array (NaN when empty): every rate below is one."""
    return 100.0 * float(np.mean(hits)) if len(hits) else float("nan")


def clean_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Percent of clean inputs given their true label (CSR)."""
    return percent(np.asarray(predicted) == np.asarray(labels))


def attack_success_rate(predicted: np.ndarray, target_labels: np.ndarray) -> float:
    """Percent of poisoned inputs sent to the attacker's target (ATR; the ``label`` of a poisoned file)."""
    return percent(np.asarray(predicted) == np.asarray(target_labels))


def detection_rate(predicted: np.ndarray, backdoor_class: int) -> float:
    """Percent of poisoned inputs sent to class N, the GoodNet's "backdoor" answer (DTR)."""
    return percent(np.asarray(predicted) == backdoor_class)


def clean_false_positive_rate(predicted: np.ndarray, backdoor_class: int) -> float:
    """Percent of clean inputs sent to class N, i.e. flagged as backdoored by mistake (CFR)."""
    return percent(np.asarray(predicted) == backdoor_class)


def breakdown(clean_predicted: np.ndarray, clean_labels: np.ndarray, poisoned_predicted: np.ndarray | None,
              target_labels: np.ndarray | None, backdoor_class: int) -> dict[str, float]:
    """The six parts of the CSR/CFR and ATR/DTR breakdown (percent; see the module docstring).

    Keys: ``clean_accuracy`` (CSR), ``clean_false_positive_rate`` (CFR),
    ``clean_other``, ``attack_success_rate`` (ATR), ``detection_rate`` (DTR),
    ``poisoned_other``. Each triple sums to 100. Poisoned keys are NaN
    without poisoned data.
    """
    csr = clean_accuracy(clean_predicted, clean_labels)
    cfr = clean_false_positive_rate(clean_predicted, backdoor_class)
    result = {"clean_accuracy": csr, "clean_false_positive_rate": cfr, "clean_other": 100.0 - csr - cfr,
              "attack_success_rate": float("nan"), "detection_rate": float("nan"), "poisoned_other": float("nan")}
    if poisoned_predicted is not None and target_labels is not None and len(target_labels):
        atr = attack_success_rate(poisoned_predicted, target_labels)
        dtr = detection_rate(poisoned_predicted, backdoor_class)
        result.update(attack_success_rate=atr, detection_rate=dtr, poisoned_other=100.0 - atr - dtr)
    return result
