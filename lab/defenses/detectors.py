"""Run-time backdoor detectors: flag an input instead of repairing the model.

Two detectors, both calibrated on clean validation data only, for a stated
budget of false alarms on clean inputs:

- :class:`ConfidenceDetector` (from a course report): compare the BadNet B
  with a repaired model R (B' or B''). An input is flagged when the two
  disagree *and* R has lost confidence in B's answer:
  ``p_B(b) - p_R(b) >= threshold`` with ``b = argmax B(x)``. With
  ``threshold = -inf`` this is exactly the GoodNet rule; the threshold keeps
  only the confident disagreements, which is what a trigger causes (B is
  sure of the target), so the false-positive rate meets the budget.
- :class:`StripDetector` (STRIP, Gao et al. 2019): blend the input with
  clean images and look at the entropy of B's predictions. A clean face
  blended with other faces gives uncertain answers (high entropy); a
  triggered face keeps answering the target whatever it is blended with
  (low entropy). Inputs whose mean entropy is below a threshold are flagged.

Both are wrappers with ``n_classes`` (N + 1) and ``predict_labels(x)``
returning B's answer, or N for a flagged input, so
:func:`lab.evaluation.comparison_table` reports them like a GoodNet: clean
accuracy, clean false-positive rate, attack success rate, detection rate.
The detector literature's names: FRR (false rejection rate) = clean inputs
flagged = clean false-positive rate; FAR (false acceptance rate) = poisoned
inputs not flagged = 100 - detection rate.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from lab.constants import BATCH_SIZE, DEFAULT_SEED
from lab.defenses.base import Defense, DefenseResult, register, resolve_repair
from lab.defenses.holdout import split_validation
from lab.errors import LabInputError
from lab.io.data import Dataset



def far_frr(clean_flagged: np.ndarray, poisoned_flagged: np.ndarray) -> dict[str, float]:
    """FAR and FRR in percent from bool flags.

    clean_flagged: bool (n_clean,), True where a clean input was flagged.
    poisoned_flagged: bool (n_poisoned,), True where a poisoned input was flagged.
    Returns ``{"far": % poisoned not flagged, "frr": % clean flagged}`` (NaN for an empty set).
    """
    clean_flagged, poisoned_flagged = np.asarray(clean_flagged, bool), np.asarray(poisoned_flagged, bool)
    frr = 100.0 * float(clean_flagged.mean()) if clean_flagged.size else float("nan")
    far = 100.0 * float((~poisoned_flagged).mean()) if poisoned_flagged.size else float("nan")
    return {"far": far, "frr": frr}


def _check_budget(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 100.0:
        raise LabInputError(None, f"{name} in [0, 100) percent", repr(value))
    return value


class _FlaggingWrapper:
    """Shared by both detectors: B's answer, or N where :meth:`flags` is True."""

    badnet: object

    @property
    def n_classes(self) -> int:
        return self.badnet.n_classes + 1

    @property
    def backdoor_class(self) -> int:
        return self.badnet.n_classes

    @property
    def metadata(self) -> dict:
        return {"backdoor_class": self.backdoor_class}

    def flags(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def predict_labels(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """int64 (n,): B's label, or N (``n_classes - 1``) for a flagged input. x: float32 (n, 55, 47, 3), 0..255."""
        labels = self.badnet.predict_labels(x, batch_size)
        return np.where(self.flags(x, batch_size), self.backdoor_class, labels).astype(np.int64)


# ---------------------------------------------------------------- confidence detector


def confidence_scores(badnet, repaired, x: np.ndarray, batch_size: int = BATCH_SIZE) -> dict[str, np.ndarray]:
    """What the confidence detector looks at, per input (x: float32 (n, 55, 47, 3), 0..255).

    Returns ``badnet_label`` / ``repaired_label`` (int64 (n,)),
    ``badnet_confidence`` (B's top probability), ``repaired_confidence``
    (R's top probability), ``agree`` (bool) and ``drop`` = p_B(b) - p_R(b),
    how much less R believes B's answer b (float64 in [-1, 1]).
    """
    badnet_probabilities = badnet.predict_proba(x, batch_size)
    repaired_probabilities = repaired.predict_proba(x, batch_size)
    if badnet_probabilities.shape[1] != repaired_probabilities.shape[1]:
        raise LabInputError(getattr(repaired, "path", None), f"{badnet_probabilities.shape[1]} classes like the BadNet",
                            str(repaired_probabilities.shape[1]))
    rows = np.arange(len(x))
    badnet_label = badnet_probabilities.argmax(axis=1)
    repaired_label = repaired_probabilities.argmax(axis=1)
    return {"badnet_label": badnet_label.astype(np.int64), "repaired_label": repaired_label.astype(np.int64),
            "badnet_confidence": badnet_probabilities[rows, badnet_label].astype(np.float64),
            "repaired_confidence": repaired_probabilities[rows, repaired_label].astype(np.float64),
            "agree": badnet_label == repaired_label,
            "drop": (badnet_probabilities[rows, badnet_label].astype(np.float64)
                     - repaired_probabilities[rows, badnet_label].astype(np.float64))}


def _flag_rule(scores: dict, threshold: float) -> np.ndarray:
    return (~scores["agree"]) & (scores["drop"] >= threshold)


def choose_threshold(clean_drops_where_disagree: np.ndarray, n_clean: int, budget: float) -> float:
    """The smallest drop threshold that flags at most ``budget`` % of ``n_clean`` clean inputs.

    clean_drops_where_disagree: the ``drop`` of the clean inputs on which B
    and R disagree (only those can be flagged). ``-inf`` when every
    disagreement fits in the budget (the GoodNet rule).
    """
    allowed = int(np.floor(budget / 100.0 * n_clean + 1e-9))
    drops = np.sort(np.asarray(clean_drops_where_disagree, np.float64))[::-1]
    if len(drops) <= allowed:
        return float("-inf")
    return float(np.nextafter(drops[allowed], np.inf))  # strictly above the first drop that must stay unflagged


@dataclasses.dataclass
class ConfidenceDetector(_FlaggingWrapper):
    """Flags x when B and R disagree and ``p_B(b) - p_R(b) >= threshold`` (see the module docstring).

    Build it with :func:`fit_confidence_detector`. ``calibration`` records
    the clean data, budget and the false-positive rate reached there.
    """

    badnet: object
    repaired: object
    threshold: float
    false_positive_budget: float
    calibration: dict = dataclasses.field(default_factory=dict)

    def scores(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> dict[str, np.ndarray]:
        return confidence_scores(self.badnet, self.repaired, x, batch_size)

    def flags(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """bool (n,): True where x is flagged as backdoored."""
        return _flag_rule(self.scores(x, batch_size), self.threshold)

    def predict_labels(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        scores = self.scores(x, batch_size)  # one pass of each model, not two
        return np.where(_flag_rule(scores, self.threshold), self.backdoor_class, scores["badnet_label"]).astype(np.int64)


def fit_confidence_detector(badnet, repaired, clean_valid: Dataset, false_positive_budget: float = 2.0,
                            batch_size: int = BATCH_SIZE) -> ConfidenceDetector:
    """Choose the drop threshold on clean validation data so at most ``false_positive_budget`` % are flagged.

    badnet, repaired: ``LoadedModel`` with the same classes. clean_valid:
    clean images the repaired model was *not* fine-tuned on (e.g. the
    held-out part of :func:`lab.defenses.finepruning.split_validation`): on its own
    training images R agrees with B more often than on new ones, which
    would understate false alarms. No poisoned data: the signature has none.
    """
    budget = _check_budget("false_positive_budget", false_positive_budget)
    scores = confidence_scores(badnet, repaired, clean_valid.x, batch_size)
    threshold = choose_threshold(scores["drop"][~scores["agree"]], len(clean_valid), budget)
    flagged = _flag_rule(scores, threshold)
    calibration = {"data": clean_valid.path, "n": len(clean_valid), "budget_percent": budget,
                   "false_positive_rate": 100.0 * float(flagged.mean()) if len(flagged) else float("nan"),
                   "disagreement_rate": 100.0 * float((~scores["agree"]).mean()) if len(flagged) else float("nan")}
    return ConfidenceDetector(badnet, repaired, threshold, budget, calibration)


# ---------------------------------------------------------------- STRIP


def blend(x: np.ndarray, overlays: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Every input blended with every overlay: float32 (n, k, H, W, 3) = alpha * x + (1 - alpha) * overlay.

    x: float32 (n, H, W, 3), overlays: float32 (k, H, W, 3), both 0..255.
    """
    x = np.asarray(x, np.float32)[:, None]
    overlays = np.asarray(overlays, np.float32)[None]
    return np.float32(alpha) * x + np.float32(1.0 - alpha) * overlays


def entropy_bits(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of each row of ``probabilities`` (..., classes): float64 (...); 0 log 0 = 0."""
    p = np.clip(np.asarray(probabilities, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1)


def strip_entropy(model, x: np.ndarray, overlays: np.ndarray, alpha: float = 0.5,
                  batch_size: int = 2048) -> np.ndarray:
    """Mean entropy (bits) of ``model``'s predictions over x blended with each overlay: float64 (n,).

    Vectorised: inputs are processed in chunks so that every forward pass
    carries about ``batch_size`` blended images (n * k images in all, not n
    separate calls of k). model: ``LoadedModel``; x (n, H, W, 3) and
    overlays (k, H, W, 3) float32, 0..255.
    """
    overlays = np.asarray(overlays, np.float32)
    if len(overlays) == 0:
        raise LabInputError(None, "at least one clean overlay image for STRIP", "none")
    per_chunk = max(1, batch_size // len(overlays))
    result = np.empty(len(x), np.float64)
    for start in range(0, len(x), per_chunk):
        chunk = blend(x[start:start + per_chunk], overlays, alpha)
        n, k = chunk.shape[:2]
        probabilities = model.predict_proba(chunk.reshape(n * k, *chunk.shape[2:]), batch_size)
        result[start:start + n] = entropy_bits(probabilities.reshape(n, k, -1)).mean(axis=1)
    return result


@dataclasses.dataclass
class StripDetector(_FlaggingWrapper):
    """STRIP around B: flags x when its mean blended-prediction entropy is below ``threshold`` (bits).

    Build it with :func:`fit_strip`. Costs ``len(overlays)`` forward passes per input.
    """

    badnet: object
    overlays: np.ndarray
    threshold: float
    false_rejection_rate: float
    alpha: float = 0.5
    calibration: dict = dataclasses.field(default_factory=dict)

    def entropy(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """float64 (n,): mean entropy in bits (see :func:`strip_entropy`)."""
        return strip_entropy(self.badnet, x, self.overlays, self.alpha, batch_size)

    def flags(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """bool (n,): True where x is flagged (entropy strictly below the threshold)."""
        return self.entropy(x) < self.threshold


def fit_strip(badnet, clean_valid: Dataset, overlays: np.ndarray, false_rejection_rate: float = 1.0,
              alpha: float = 0.5) -> StripDetector:
    """STRIP with the entropy threshold at the ``false_rejection_rate`` % quantile of clean validation entropies.

    clean_valid: clean inputs to calibrate on; overlays: float32 (k, H, W, 3)
    clean images to blend with (take them from other clean images than
    ``clean_valid``: an image blended with itself looks more certain).
    At most ``false_rejection_rate`` % of ``clean_valid`` falls strictly below
    the threshold. No poisoned data: the signature has none.
    """
    rate = _check_budget("false_rejection_rate", false_rejection_rate)
    if not len(clean_valid):
        raise LabInputError(clean_valid.path, "clean images to calibrate STRIP on", "none")
    overlays = np.asarray(overlays, np.float32)
    entropy = strip_entropy(badnet, clean_valid.x, overlays, alpha)
    threshold = float(np.quantile(entropy, rate / 100.0, method="lower")) if rate > 0 else float("-inf")
    calibration = {"data": clean_valid.path, "n": len(clean_valid), "n_overlays": len(overlays),
                   "false_rejection_rate_target": rate,
                   "false_rejection_rate": 100.0 * float(np.mean(entropy < threshold)),
                   "clean_entropy_mean": float(entropy.mean()), "clean_entropy": entropy}
    return StripDetector(badnet, overlays, threshold, rate, alpha, calibration)


# ---------------------------------------------------------------- the defense contract


@register
class ConfidenceDefense(Defense):
    """The confidence detector around B and a repair R, calibrated on the clean held-out part for a budget."""

    name = "confidence"
    kind = "detector"
    table_order = 50
    paper = "a CSAW-HackML 2020 course report (confidence-drop rule on top of fine-pruning)"
    wraps_repair = True
    default_budget = 2.0
    threshold_unit = "(drop of B's confidence)"

    @dataclasses.dataclass(frozen=True)
    class Config:
        """repair: R, a registered repair's name (fit with ``repair_config``) or a :class:`DefenseResult`
        (see :class:`lab.defenses.goodnet.GoodNetDefense`); false_positive_budget: % of clean held-out
        inputs it may flag; holdout_fraction: the held-out share it calibrates on (R never trained on it)."""

        repair: Any = "fine-pruning"
        repair_config: Any = None
        false_positive_budget: float = 2.0
        holdout_fraction: float = 1 / 3

    @classmethod
    def detect_config(cls, options: dict):
        """``detect --method confidence``: around the given R, ``--budget`` % of clean held-out inputs flagged."""
        return cls.Config(repair=options["repair"], false_positive_budget=options["budget"],
                          holdout_fraction=options["holdout_fraction"])

    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        config = self.config
        repair = resolve_repair(config.repair, config.repair_config, badnet, clean_valid, seed)
        started = time.perf_counter()
        _, holdout = split_validation(clean_valid, config.holdout_fraction, seed)
        detector = fit_confidence_detector(badnet, repair.model, holdout, config.false_positive_budget)
        return DefenseResult(self.name, self.kind, detector, repair.seconds + time.perf_counter() - started,
                             {"repair": repair.name, "repair_result": repair, "threshold": detector.threshold,
                              "calibration": detector.calibration})


@register
class StripDefense(Defense):
    """STRIP around B: overlays from the clean fine-tuning part, threshold from the clean held-out part."""

    name = "strip"
    kind = "detector"
    table_order = 60
    paper = "Gao et al. STRIP: A Defence Against Trojan Attacks on Deep Neural Networks. ACSAC 2019"
    default_budget = 1.0
    threshold_unit = "bits (mean blended entropy)"

    @dataclasses.dataclass(frozen=True)
    class Config:
        """false_rejection_rate: % of clean held-out inputs it may flag; n_overlays: clean images each
        input is blended with (drawn with the seed from the fine-tuning part); alpha: the input's weight
        in each blend; holdout_fraction: the held-out share it calibrates on."""

        false_rejection_rate: float = 1.0
        n_overlays: int = 20
        alpha: float = 0.5
        holdout_fraction: float = 1 / 3

    @classmethod
    def detect_config(cls, options: dict):
        """``detect --method strip``: ``--budget`` % false rejections, ``--overlays`` blends of weight ``--alpha``."""
        return cls.Config(false_rejection_rate=options["budget"], n_overlays=options["n_overlays"],
                          alpha=options["alpha"], holdout_fraction=options["holdout_fraction"])

    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        config = self.config
        started = time.perf_counter()
        train, holdout = split_validation(clean_valid, config.holdout_fraction, seed)
        overlays = train.x[np.random.default_rng(seed).permutation(len(train))[:config.n_overlays]]
        detector = fit_strip(badnet, holdout, overlays, config.false_rejection_rate, alpha=config.alpha)
        return DefenseResult(self.name, self.kind, detector, time.perf_counter() - started,
                             {"threshold": detector.threshold, "calibration": detector.calibration,
                              "n_overlays": len(overlays)})
