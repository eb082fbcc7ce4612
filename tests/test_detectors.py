"""The confidence detector and STRIP on crafted and small real models (no mocks): FAR/FRR arithmetic,
thresholds from clean data only, STRIP vectorised = a per-image loop, and both report like a GoodNet."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import small_models as helpers
from lab.defenses import detectors, finepruning, goodnet, pruning
from lab import evaluation
from lab.evaluation import metrics
from lab.io.data import Dataset
from lab.errors import LabInputError

RED, GREEN, BLUE = 0, 1, 2


def test_far_frr_on_crafted_flags():
    result = detectors.far_frr(np.array([True, False, False, False]), np.array([True, True, False, True, True]))
    assert result == {"far": pytest.approx(20.0), "frr": pytest.approx(25.0)}
    empty = detectors.far_frr(np.array([], bool), np.array([], bool))
    assert np.isnan(empty["far"]) and np.isnan(empty["frr"])


def test_choose_threshold_meets_the_budget_with_the_smallest_threshold():
    drops = np.array([0.9, 0.5, 0.5, 0.2, -0.1])  # drops of the 5 disagreeing inputs among 100 clean ones
    assert detectors.choose_threshold(drops, 100, 5.0) == float("-inf")  # all 5 fit: the GoodNet rule
    threshold = detectors.choose_threshold(drops, 100, 2.0)  # 2 may be flagged, but 0.5 appears twice
    assert np.sum(drops >= threshold) == 1 and threshold > 0.5 and threshold <= 0.9
    threshold = detectors.choose_threshold(drops, 100, 3.0)
    assert np.sum(drops >= threshold) == 3 and threshold > 0.2
    assert np.sum(drops >= detectors.choose_threshold(drops, 100, 0.0)) == 0


def test_confidence_detector_flags_confident_disagreements_only():
    badnet = helpers.colour_classifier((0, 1, 2), "badnet")
    repaired = helpers.colour_classifier((0, 2, 1), "repaired")  # agrees on red, disagrees on green and blue
    images = np.concatenate([helpers.colour_images([RED, GREEN, BLUE]),
                             helpers.colour_images([GREEN], value=40.0)])  # a dim green: B less sure
    scores = detectors.confidence_scores(badnet, repaired, images)
    assert scores["agree"].tolist() == [True, False, False, False]
    assert scores["drop"][1] > scores["drop"][3] > 0
    detector = detectors.ConfidenceDetector(badnet, repaired, threshold=float(scores["drop"][3]) + 1e-6,
                                            false_positive_budget=1.0)
    assert detector.flags(images).tolist() == [False, True, True, False]
    assert detector.n_classes == 4 and detector.metadata["backdoor_class"] == 3
    assert detector.predict_labels(images).tolist() == [0, 3, 3, 1]


def test_without_a_threshold_the_confidence_detector_is_the_goodnet():
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    repaired = pruning.prune_model(badnet, list(range(50)))
    detector = detectors.ConfidenceDetector(badnet, repaired, float("-inf"), 100.0)
    x = np.concatenate([clean.x, poisoned.x])
    np.testing.assert_array_equal(detector.predict_labels(x), goodnet.build_goodnet(badnet, repaired).predict_labels(x))


def test_confidence_detector_is_calibrated_on_clean_data_for_its_budget():
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    repaired = finepruning.fine_prune(badnet, clean, n_channels=45, seed=1,
                                      config=finepruning.RECIPES["augmented"].replace(epochs=2, batch_size=16)).model
    for budget in (0.0, 5.0, 50.0):
        detector = detectors.fit_confidence_detector(badnet, repaired, clean, budget)
        assert detector.calibration["false_positive_rate"] <= budget + 1e-9
        assert metrics.percent(detector.flags(clean.x)) == pytest.approx(detector.calibration["false_positive_rate"])
    table = evaluation.comparison_table({"confidence": detector}, clean, poisoned)
    assert table.loc["confidence", "backdoor_class"] == badnet.n_classes
    assert table.loc["confidence", "clean_false_positive_rate"] <= 50.0
    with pytest.raises(LabInputError, match="false_positive_budget"):
        detectors.fit_confidence_detector(badnet, repaired, clean, 100.0)


def _strip_entropy_one_by_one(model, x, overlays, alpha):
    """The slow reference: one forward pass per blended image."""
    result = []
    for image in x:
        entropies = []
        for overlay in overlays:
            blended = (alpha * image + (1 - alpha) * overlay)[None].astype(np.float32)
            p = model.predict_proba(blended)[0].astype(np.float64)
            entropies.append(-sum(q * np.log2(q) for q in p if q > 0))
        result.append(np.mean(entropies))
    return np.array(result)


def test_strip_entropy_is_vectorised_and_equals_a_per_image_loop():
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    x = np.concatenate([clean.x[:3], poisoned.x[:2]])
    overlays = clean.x[10:16]
    fast = detectors.strip_entropy(badnet, x, overlays, alpha=0.6, batch_size=8)  # chunks of one input
    np.testing.assert_allclose(fast, _strip_entropy_one_by_one(badnet, x, overlays, 0.6), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(detectors.strip_entropy(badnet, x, overlays, alpha=0.6), fast, rtol=1e-5, atol=1e-6)
    assert detectors.blend(x, overlays).shape == (5, 6, 55, 47, 3)


def test_entropy_in_bits():
    assert detectors.entropy_bits(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist() == pytest.approx([1.0, 0.0])
    assert detectors.entropy_bits(np.full((2, 3, 4), 0.25)).shape == (2, 3)


def test_strip_threshold_comes_from_clean_data_at_the_stated_rejection_rate():
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    calibration, overlays = Dataset(clean.x[:60], clean.y[:60], "calibration"), clean.x[60:70]
    for rate in (0.0, 5.0, 20.0):
        strip = detectors.fit_strip(badnet, calibration, overlays, rate)
        flagged = strip.flags(calibration.x)
        assert metrics.percent(flagged) <= rate + 1e-9
        assert strip.calibration["false_rejection_rate"] == pytest.approx(metrics.percent(flagged))
    assert strip.n_classes == badnet.n_classes + 1
    labels = strip.predict_labels(calibration.x)
    np.testing.assert_array_equal(labels[~flagged], badnet.predict_labels(calibration.x)[~flagged])
    assert np.all(labels[flagged] == badnet.n_classes)
    table = evaluation.comparison_table({"STRIP": strip}, clean, poisoned)
    rates = detectors.far_frr(strip.flags(clean.x), strip.flags(poisoned.x))
    assert table.loc["STRIP", "detection_rate"] == pytest.approx(100.0 - rates["far"])
    assert table.loc["STRIP", "clean_false_positive_rate"] == pytest.approx(rates["frr"])
    with pytest.raises(LabInputError, match="overlay"):
        detectors.fit_strip(badnet, calibration, overlays[:0])


def test_strip_sees_the_trigger_survive_blending():
    """The small BadNet's bright square survives a blend: triggered inputs are more certain than clean ones."""
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    overlays = clean.x[:10]
    clean_entropy = detectors.strip_entropy(badnet, clean.x[10:40], overlays)
    poisoned_entropy = detectors.strip_entropy(badnet, poisoned.x[:30], overlays)
    assert np.median(poisoned_entropy) < np.median(clean_entropy)


def test_calibration_functions_take_no_poisoned_data():
    for function in (detectors.fit_confidence_detector, detectors.fit_strip, detectors.choose_threshold):
        names = " ".join(inspect.signature(function).parameters)
        assert "poison" not in names, function.__name__
