"""FST (feature shift tuning, lab.defenses.fst) on a small real BadNet: a fresh head, pushed off the old one.

tests/test_defenses_contract.py already checks FST against the contract
(found by discovery, no poisoned data in any signature, its quick schedule).
"""

from __future__ import annotations

import numpy as np
import pytest

import small_models as helpers
from lab import defenses
from lab.defenses import fst
from lab.defenses.holdout import split_validation
from lab.defenses.unlearn import copy_model
from lab.errors import LabInputError
from lab.evaluation import metrics


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_fst_is_registered_as_a_repair_that_does_not_judge_the_model():
    assert defenses.get("fst") is fst.FST and "fst" in defenses.names("repair")
    assert fst.FST.kind == "repair" and not fst.FST.decides and "Feature Shift Tuning" in fst.FST.paper
    assert fst.FST.quick(epochs=2) == {"holdout_fraction": 1 / 3, "epochs": 2}


def test_the_head_is_reinitialised_at_the_original_norm_and_stays_there_while_the_penalty_pushes_it_away():
    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    head = fst.head_layer(badnet.model)
    assert head.name == "output"  # DeepID's last Dense layer
    kernel_before, bias_before = head.get_weights()
    students = {}
    for alpha in (0.0, 20.0):
        student = copy_model(badnet)
        student_head = fst.head_layer(student.model)
        original = fst.reinitialise_head(student_head, np.random.default_rng(0))
        fresh, bias = student_head.get_weights()
        assert np.array_equal(original, kernel_before) and not np.allclose(fresh, original)
        assert np.all(bias == 0) and np.linalg.norm(fresh) == pytest.approx(np.linalg.norm(original), rel=1e-5)
        # A larger learning rate than the default so that five steps move the head visibly.
        config = fst.FSTConfig(alpha=alpha, learning_rate=1e-2)
        step = fst.fst_step(student, student_head, original, config, total_steps=20)
        for start in range(0, 80, 16):
            loss = float(step(clean.x[start:start + 16], clean.y[start:start + 16]))
            assert np.isfinite(loss)
            # Renormalised after every step: the kernel keeps the original Frobenius norm.
            assert np.linalg.norm(student_head.get_weights()[0]) == pytest.approx(np.linalg.norm(original), rel=1e-4)
        students[alpha] = student_head.get_weights()[0]
    # B itself is untouched (FST works on a copy).
    assert np.array_equal(head.get_weights()[0], kernel_before) and np.array_equal(head.get_weights()[1], bias_before)
    # The same start and batches: only the penalty differs, and it lowers the head's alignment with the original.
    assert _cosine(students[20.0], kernel_before) < _cosine(students[0.0], kernel_before) - 0.1


def test_fst_repairs_the_small_badnet_from_clean_data_and_fills_the_result():
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    fresh_clean = helpers.datasets(n_per_class=16, seed=12)[0]  # clean images FST never saw
    result = defenses.build("fst", badnet, clean, seed=3)
    assert result.name == "fst" and result.kind == "repair" and result.model is result.classifier
    assert result.backdoored is None and result.targets == [] and result.method is None and result.seconds > 0
    repaired = result.model
    assert repaired.n_classes == badnet.n_classes and repaired.input_scale == badnet.input_scale
    assert repaired.metadata["defense"] == "fst"
    details = result.details
    assert details["head"] == "output" and 1 <= details["best_epoch"] <= fst.FSTConfig().epochs
    history = details["holdout_history"]
    assert len(history) == fst.FSTConfig().epochs + 1 and details["holdout_clean_accuracy"] == max(history[1:])
    # The fresh head starts near chance; fine-tuning brings clean accuracy back within 10 points of B's.
    _, holdout = split_validation(clean, 1 / 3, 3)
    assert history[0] < 50
    before = metrics.percent(badnet.predict_labels(fresh_clean.x) == fresh_clean.y)
    after = metrics.percent(repaired.predict_labels(fresh_clean.x) == fresh_clean.y)
    assert after >= before - 10, (before, after)
    assert details["holdout_clean_accuracy"] == pytest.approx(metrics.percent(repaired.predict_labels(holdout.x)
                                                                              == holdout.y))
    # The kept head has the original norm and has moved off the original head.
    kept = fst.head_layer(repaired.model).get_weights()[0]
    original = fst.head_layer(badnet.model).get_weights()[0]
    assert np.linalg.norm(kept) == pytest.approx(details["head_norm"], rel=1e-4)
    assert details["head_cosine"] == pytest.approx(_cosine(kept, original), abs=1e-4) and details["head_cosine"] < 0.5
    # Measured only (never used to choose): on this small BadNet the trigger no longer works.
    badnet_asr = metrics.percent(badnet.predict_labels(poisoned.x) == poisoned.y)
    assert badnet_asr > 90 and metrics.percent(repaired.predict_labels(poisoned.x) == poisoned.y) < 50
    # Deterministic: the same seed gives the same repaired weights.
    again = defenses.build("fst", badnet, clean, seed=3).model
    assert all(np.array_equal(a, b) for a, b in zip(repaired.model.get_weights(), again.model.get_weights()))


def test_a_model_without_a_dense_layer_is_one_clear_error():
    import keras

    inputs = keras.Input((55, 47, 3))
    features = keras.layers.Conv2D(4, 3)(inputs)
    outputs = keras.layers.Softmax()(keras.layers.GlobalAveragePooling2D()(features))
    with pytest.raises(LabInputError, match="Dense output layer for FST"):
        fst.head_layer(keras.Model(inputs, outputs))
