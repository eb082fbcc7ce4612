"""Fine-pruning and the oracle on a real small DeepID BadNet (no mocks): pruned channels stay pruned,
poisoned data never chooses, reruns repeat, and the pieces do what their docstrings say."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import small_models as helpers
import lab
from lab.defenses import finepruning, oracle, pruning
from lab.evaluation import metrics
from lab.io import models
from lab.io.data import Dataset
from lab.errors import LabInputError, RefuseOverwrite

QUICK = finepruning.RECIPES["unlearning"].replace(epochs=2, unlearn_steps=2, batch_size=16)


def _weights_equal(first, second) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(first.model.get_weights(), second.model.get_weights()))


def test_split_is_per_class_disjoint_complete_and_deterministic():
    clean, _ = helpers.datasets()
    train, holdout = finepruning.split_validation(clean, 1 / 4, seed=5)
    assert len(train) + len(holdout) == len(clean)
    for label in np.unique(clean.y):
        assert np.sum(holdout.y == label) == round(np.sum(clean.y == label) / 4)
    rows = {tuple(image.ravel()[:40]) for image in train.x}
    assert not any(tuple(image.ravel()[:40]) in rows for image in holdout.x)
    again, _ = finepruning.split_validation(clean, 1 / 4, seed=5)
    np.testing.assert_array_equal(train.x, again.x)
    everything, nothing = finepruning.split_validation(clean, 0.0)
    assert len(everything) == len(clean) and len(nothing) == 0


def test_split_keeps_one_image_per_class_for_fine_tuning():
    tiny = Dataset(np.zeros((3, 55, 47, 3), np.float32), np.array([0, 1, 1]))
    train, holdout = finepruning.split_validation(tiny, 0.9)
    assert sorted(train.y.tolist()) == [0, 1] and holdout.y.tolist() == [1]
    with pytest.raises(LabInputError, match="holdout fraction"):
        finepruning.split_validation(tiny, 1.0)


def test_augmentations_keep_shape_range_and_repeat_with_the_same_generator():
    clean, _ = helpers.datasets()
    x = clean.x[:6]
    first = finepruning.augment(x, np.random.default_rng(1))
    second = finepruning.augment(x, np.random.default_rng(1))
    assert first.shape == x.shape and first.dtype == np.float32 and 0 <= first.min() and first.max() <= 255
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(finepruning.random_erase(x, np.random.default_rng(2), probability=0.0), x)
    erased = finepruning.random_erase(x, np.random.default_rng(2), probability=1.0)
    changed = (erased != x).any(axis=-1).mean(axis=(1, 2))  # share of pixels changed per image
    assert np.all(changed > 0.005) and np.all(changed < 0.3)


def test_universal_perturbation_is_bounded_and_raises_the_loss():
    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    delta = finepruning.universal_perturbation(badnet, clean.x, clean.y, epsilon=24.0, steps=8,
                                               rng=np.random.default_rng(0))
    assert delta.shape == (55, 47, 3) and np.abs(delta).max() <= 24.0 + 1e-4

    def loss(x):
        p = badnet.predict_proba(x)[np.arange(len(x)), clean.y]
        return float(-np.log(np.clip(p, 1e-12, 1)).mean())

    assert loss(np.clip(clean.x + delta, 0, 255)) > loss(clean.x)
    assert not finepruning.universal_perturbation(badnet, clean.x, clean.y, steps=0).any()


def test_fine_pruning_keeps_pruned_channels_zero_and_leaves_the_badnet_alone():
    badnet = helpers.trained_deepid()
    before = [w.copy() for w in badnet.model.get_weights()]
    clean, poisoned = helpers.datasets()
    result = finepruning.fine_prune(badnet, clean, n_channels=45, config=QUICK, seed=3)
    assert len(result.pruned_channels) == 45
    assert finepruning.pruned_channels_are_zero(result.model, "conv_3", result.pruned_channels)
    # The pruned channels contribute nothing: re-pruning the repaired model changes no prediction.
    again = pruning.prune_model(result.model, result.pruned_channels)
    np.testing.assert_array_equal(again.predict_proba(clean.x), result.model.predict_proba(clean.x))
    # ...while training did change the other weights.
    kernel = result.model.model.get_layer("conv_3").get_weights()[0]
    original = badnet.model.get_layer("conv_3").get_weights()[0]
    kept = [c for c in range(kernel.shape[-1]) if c not in result.pruned_channels]
    assert not np.array_equal(kernel[..., kept], original[..., kept])
    assert all(np.array_equal(a, b) for a, b in zip(before, badnet.model.get_weights()))
    assert list(result.history["epoch"]) == [0, 1, 2] and 1 <= result.best_epoch <= 2
    assert result.model.metadata["pruned_channels"] == result.pruned_channels


def test_the_threshold_rule_and_fine_tuning_alone():
    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    by_threshold = finepruning.fine_prune(badnet, clean, threshold=4.0, config=QUICK.replace(epochs=1), seed=3)
    expected = pruning.select_thresholds(by_threshold.sweep, [4.0])["channels_pruned"].iloc[0]
    assert len(by_threshold.pruned_channels) == expected
    alone = finepruning.fine_prune(badnet, clean, n_channels=0, config=QUICK.replace(epochs=1), seed=3)
    assert alone.pruned_channels == []
    with pytest.raises(LabInputError, match="channels to prune"):
        finepruning.fine_prune(badnet, clean, n_channels=61, config=QUICK)


def test_reruns_give_the_same_model_and_history():
    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    lab.set_seed(11)
    first = finepruning.fine_prune(badnet, clean, n_channels=40, config=QUICK, seed=9)
    lab.set_seed(11)
    second = finepruning.fine_prune(badnet, clean, n_channels=40, config=QUICK, seed=9)
    assert _weights_equal(first.model, second.model)
    assert first.history.equals(second.history)


def test_fine_tuning_results_are_reused_only_for_identical_inputs(tmp_path, monkeypatch):
    """lab.cache: a second identical call (07 after 05) reuses the stored B''; any change trains again."""
    monkeypatch.setenv("BADNET_LAB_CACHE", str(tmp_path / "cache"))
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    lab.set_seed(11)
    first = finepruning.fine_prune(badnet, clean, n_channels=40, config=QUICK, seed=9,
                                   report={"attack success": poisoned})
    entries = tmp_path / "cache" / "fine_tune"
    assert len(list(entries.iterdir())) == 1 and "cache" not in first.model.metadata
    again = finepruning.fine_prune(badnet, clean, n_channels=40, config=QUICK, seed=9)  # no report: still reused
    assert "reused" in again.model.metadata["cache"] and _weights_equal(first.model, again.model)
    assert again.history.equals(first.history.drop(columns=["attack success"]))
    assert again.best_epoch == first.best_epoch and again.pruned_channels == first.pruned_channels
    other = finepruning.fine_prune(badnet, clean, n_channels=40, config=QUICK, seed=10)
    assert "cache" not in other.model.metadata and len(list(entries.iterdir())) == 2
    train, holdout = finepruning.split_validation(clean, seed=9)
    changed = Dataset(train.x.copy(), train.y, train.path)
    changed.x[0, 0, 0, 0] += 1  # one pixel of one image
    key = finepruning._cache_key(badnet, train, holdout, QUICK, 9, {})
    assert key != finepruning._cache_key(badnet, changed, holdout, QUICK, 9, {})
    assert key != finepruning._cache_key(badnet, train, holdout, QUICK.replace(epochs=3), 9, {})
    assert key == finepruning._cache_key(badnet, train, holdout, QUICK, 9, {})


def test_poisoned_report_sets_are_measured_but_never_choose():
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    lab.set_seed(11)
    plain = finepruning.fine_prune(badnet, clean, n_channels=40, config=QUICK, seed=9)
    lab.set_seed(11)
    reported = finepruning.fine_prune(badnet, clean, n_channels=40, config=QUICK, seed=9,
                                      report={"attack success": poisoned})
    assert _weights_equal(plain.model, reported.model) and plain.best_epoch == reported.best_epoch
    assert reported.history["attack success"].between(0, 100).all()
    assert reported.history.loc[0, "attack success"] == pytest.approx(
        metrics.attack_success_rate(pruning.prune_model(badnet, reported.pruned_channels).predict_labels(poisoned.x),
                                    poisoned.y))


def test_nothing_that_chooses_takes_poisoned_data():
    for function in (finepruning.split_validation, finepruning.fine_tune, finepruning.fine_prune,
                     finepruning.universal_perturbation):
        names = " ".join(inspect.signature(function).parameters)
        assert "poison" not in names, function.__name__


def test_head_reinitialisation_and_frozen_layers():
    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    train, holdout = finepruning.split_validation(clean)
    config = QUICK.replace(epochs=1, reinitialize=("output",), trainable=("output",), unlearn_fraction=0.0)
    result = finepruning.fine_tune(badnet, train, holdout, config, seed=2)
    tuned, original = result.model.model, badnet.model
    assert not np.array_equal(tuned.get_layer("output").get_weights()[0], original.get_layer("output").get_weights()[0])
    for name in ("conv_1", "conv_3", "fc_1"):
        for a, b in zip(tuned.get_layer(name).get_weights(), original.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_saved_fine_pruned_model_reloads_with_its_metadata(tmp_path):
    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    result = finepruning.fine_prune(badnet, clean, n_channels=42, config=QUICK.replace(epochs=1), seed=3)
    path = finepruning.save_fine_pruned(result, tmp_path / "fine_pruned.h5")
    loaded = models.load_model(path)
    assert loaded.input_scale == badnet.input_scale
    assert loaded.metadata["pruned_channels"] == result.pruned_channels
    np.testing.assert_allclose(loaded.predict_proba(clean.x), result.model.predict_proba(clean.x), atol=1e-6)
    with pytest.raises(RefuseOverwrite):
        finepruning.save_fine_pruned(result, path)


def test_oracle_is_labelled_and_lowers_the_attack_within_its_budget():
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    ranking = oracle.attack_aware_ranking(badnet, clean, poisoned)
    assert set(ranking["layer"]) == set(oracle.ORACLE_LAYERS) and ranking["score"].is_monotonic_decreasing
    result = oracle.attack_aware_prune(badnet, clean, poisoned, max_accuracy_drop=10.0, max_candidates=30)
    assert "not a real defense" in result.label and result.model.metadata["oracle"] == result.label
    kept = result.steps.iloc[result.chosen_step]
    assert kept["accuracy_drop"] <= 10.0
    assert kept["attack_success_rate"] == result.steps["attack_success_rate"].min()
    measured = metrics.attack_success_rate(result.model.predict_labels(poisoned.x), poisoned.y)
    assert measured == pytest.approx(kept["attack_success_rate"])
    assert metrics.clean_accuracy(result.model.predict_labels(clean.x), clean.y) == pytest.approx(kept["clean_accuracy"])
