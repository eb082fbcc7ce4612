"""The pruning sweep equals really zeroing weights; thresholds follow their stated rule; pruned models save."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import small_models as helpers
from lab.defenses import pruning
from lab.evaluation import activations
from lab.io import models
from lab.errors import LabInputError, RefuseOverwrite


@pytest.fixture(scope="module")
def badnet():
    return helpers.trained_deepid()


@pytest.fixture(scope="module")
def valid():
    return helpers.datasets()


def _assert_same_as_zeroing(model, x, channels, layer, measure, method):
    """Identical argmax and probabilities within 1e-6 of the really pruned model at every step."""
    expected = helpers.naive_step_outputs(model, x, channels, layer)
    got = list(pruning.step_outputs(model, x, channels, layer, measure, method))
    assert len(got) == len(expected) == len(channels) + 1
    for step, (ours, reference) in enumerate(zip(got, expected)):
        np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1), err_msg=f"step {step}")
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6, err_msg=f"step {step}")


def test_masked_deepid_sweep_equals_zeroing_weights_at_every_step(badnet, valid):
    clean, poisoned = valid
    x = np.concatenate([clean.x, poisoned.x])
    channels = pruning.rank_channels(activations.mean_channel_activation(badnet, clean.x, "pool_3"))
    _assert_same_as_zeroing(badnet, x, channels, "conv_3", "pool_3", "masked")


def _assert_fast_path_within_float32_rounding(fast, keras_float32, exact):
    """Same argmax as Keras, and no further from Keras' float32 result than that is from exact arithmetic (+1e-6).

    The fast path subtracts channel contributions (in float64) instead of
    recomputing sums, so it rounds differently from Keras; a fixed 1e-6 would
    be below Keras' own float32 error on larger logits (about 1e-6 on the
    test model, 1e-5 on the real Lab 3 model, measured against float64).
    """
    keras_rounding = max(np.abs(a - b).max() for a, b in zip(keras_float32, exact))
    for step, (ours, reference) in enumerate(zip(fast, keras_float32)):
        np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1), err_msg=f"step {step}")
        np.testing.assert_allclose(ours, reference, rtol=0, atol=keras_rounding + 1e-6, err_msg=f"step {step}")


def test_fast_deepid_sweep_equals_zeroing_weights_at_every_step(badnet, valid):
    clean, poisoned = valid
    x = np.concatenate([clean.x[:48], poisoned.x[:24]])  # float64 Keras is slow: fewer images, every step
    channels = pruning.rank_channels(activations.mean_channel_activation(badnet, clean.x, "pool_3"))
    fast = list(pruning.step_outputs(badnet, x, channels, method="fast"))
    _assert_fast_path_within_float32_rounding(fast, helpers.naive_step_outputs(badnet, x, channels, "conv_3"),
                                              helpers.naive_step_outputs(badnet, x, channels, "conv_3", "float64"))


@pytest.mark.parametrize("method", ["fast", "masked"])
def test_hits_the_sweep_counts_equal_zeroing_weights_at_every_step(badnet, valid, method):
    """The fast method's hits skip the output layer for images already wrong (a witness class): still exact."""
    clean, poisoned = valid
    channels = pruning.rank_channels(activations.mean_channel_activation(badnet, clean.x, "pool_3"))
    for dataset in (clean, poisoned):
        expected = helpers.naive_step_outputs(badnet, dataset.x, channels, "conv_3")
        got = list(pruning.step_hits(badnet, dataset.x, dataset.y, channels, method=method))
        assert len(got) == 61
        for step, (hits, reference) in enumerate(zip(got, expected)):
            np.testing.assert_array_equal(hits, reference.argmax(axis=1) == dataset.y, err_msg=f"step {step}")


def test_zero_weights_fallback_equals_zeroing_weights(badnet, valid):
    clean, _ = valid
    channels = pruning.rank_channels(activations.mean_channel_activation(badnet, clean.x, "pool_3"))[15:35]
    _assert_same_as_zeroing(badnet, clean.x[:40], channels, "conv_3", "pool_3", "zero-weights")


def test_general_path_on_a_non_deepid_model(valid):
    model = helpers.conv_relu_pool_model()
    assert pruning.plan_sweep(model, "conv_a", "pool_a").method == "masked"
    channels = pruning.rank_channels(activations.mean_channel_activation(model, valid[0].x, "pool_a"), "decreasing")
    _assert_same_as_zeroing(model, valid[0].x, channels, "conv_a", "pool_a", "masked")


@pytest.mark.parametrize("build, reason", [(helpers.batchnorm_model, "BatchNormalization"),
                                           (helpers.bypass_model, "bypass")])
def test_models_without_the_property_fall_back_to_zeroing_weights(valid, build, reason):
    model = build()
    plan = pruning.plan_sweep(model, "conv_a", "pool_a")
    assert plan.method == "zero-weights" and reason in plan.reason
    with pytest.raises(LabInputError, match="masked"):
        pruning.plan_sweep(model, "conv_a", "pool_a", method="masked")
    channels = list(range(plan.n_channels))[::-1]
    _assert_same_as_zeroing(model, valid[0].x, channels, "conv_a", "pool_a", "auto")


def test_plan_names_the_method_and_refuses_a_fast_path_that_does_not_apply(badnet):
    assert pruning.plan_sweep(badnet).method == "fast"
    with pytest.raises(LabInputError, match="DeepID-shaped"):
        pruning.plan_sweep(helpers.conv_relu_pool_model(), "conv_a", "pool_a", method="fast")
    with pytest.raises(LabInputError, match="a layer named 'conv_9'"):
        pruning.plan_sweep(badnet, layer="conv_9")
    with pytest.raises(LabInputError, match="Conv or Dense"):
        pruning.plan_sweep(badnet, layer="pool_3")
    with pytest.raises(LabInputError, match="one channel per channel"):
        pruning.plan_sweep(badnet, layer="conv_2", measure="pool_3")


def test_sweep_table(badnet, valid):
    clean, poisoned = valid
    table = pruning.sweep(badnet, clean, poisoned)
    assert list(table.columns) == ["channels_pruned", "fraction_pruned", "channel", "mean_activation",
                                   "clean_accuracy", "accuracy_drop", "attack_success_rate", "layer", "measure",
                                   "order"]
    assert set(table["layer"]) == {"conv_3"} and set(table["measure"]) == {"pool_3"}
    assert len(table) == 61 and table["channels_pruned"].tolist() == list(range(61))
    first = table.iloc[0]
    assert pd.isna(first["channel"]) and first["fraction_pruned"] == 0 and first["accuracy_drop"] == 0
    assert sorted(table["channel"].iloc[1:].tolist()) == list(range(60))
    assert table["mean_activation"].iloc[1:].is_monotonic_increasing
    np.testing.assert_allclose(table["accuracy_drop"], first["clean_accuracy"] - table["clean_accuracy"])
    # step 0 is the model as it is
    assert first["clean_accuracy"] == pytest.approx(100 * np.mean(badnet.predict_labels(clean.x) == clean.y))
    assert first["attack_success_rate"] == pytest.approx(100 * np.mean(badnet.predict_labels(poisoned.x) == 0))
    assert table.attrs["method"] == "fast" and table.attrs["order"] == "increasing"
    # the curve is not flat: the model is really degraded by pruning everything
    assert table["clean_accuracy"].iloc[-1] < first["clean_accuracy"] - 20


def test_sweep_matches_accuracies_of_really_pruned_models(badnet, valid):
    clean, _ = valid
    table = pruning.sweep(badnet, clean)
    for step in (0, 30, 45, 60):
        pruned = pruning.prune_model(badnet, pruning.pruned_channels(table, step))
        accuracy = 100 * np.mean(pruned.predict_labels(clean.x) == clean.y)
        assert table["clean_accuracy"].iloc[step] == pytest.approx(accuracy)


def test_a_sweep_on_test_data_follows_the_ranking_made_on_validation_data(badnet, valid):
    """Lab 3's plot: the order chosen on clean validation data, the rates measured on the test sets, exactly."""
    clean_valid, _ = valid
    clean_test, poisoned_test = helpers.datasets(seed=12)
    on_valid = pruning.sweep(badnet, clean_valid)
    on_test = pruning.sweep(badnet, clean_test, poisoned_test, channels=pruning.pruned_channels(on_valid, 60))
    assert on_test["channel"].equals(on_valid["channel"])
    assert not on_test["channel"].equals(pruning.sweep(badnet, clean_test)["channel"])  # the test data ranks otherwise
    with pytest.raises(LabInputError, match="every channel of conv_3"):
        pruning.sweep(badnet, clean_test, channels=[0, 1, 2])
    for step in (0, 20, 45):
        pruned = pruning.prune_model(badnet, pruning.pruned_channels(on_test, step))
        assert on_test["clean_accuracy"].iloc[step] == pytest.approx(
            100 * np.mean(pruned.predict_labels(clean_test.x) == clean_test.y))
        assert on_test["attack_success_rate"].iloc[step] == pytest.approx(
            100 * np.mean(pruned.predict_labels(poisoned_test.x) == poisoned_test.y))


def test_sweep_is_deterministic_and_poisoned_data_never_changes_a_choice(badnet, valid):
    clean, poisoned = valid
    with_poisoned = pruning.sweep(badnet, clean, poisoned)
    without = pruning.sweep(badnet, clean)
    again = pruning.sweep(badnet, clean, poisoned)
    pd.testing.assert_frame_equal(with_poisoned, again)
    assert without["attack_success_rate"].isna().all()
    pd.testing.assert_frame_equal(with_poisoned.drop(columns="attack_success_rate"),
                                  without.drop(columns="attack_success_rate"))


def test_decreasing_order_is_one_argument_away(badnet, valid):
    table = pruning.sweep(badnet, valid[0], order="decreasing")
    assert table["mean_activation"].iloc[1:].is_monotonic_decreasing
    with pytest.raises(LabInputError, match="--order"):
        pruning.sweep(badnet, valid[0], order="random")


def test_ranking_breaks_ties_by_channel_index():
    mean = np.array([0.5, 0.0, 0.2, 0.0, 0.5])
    assert pruning.rank_channels(mean).tolist() == [1, 3, 2, 0, 4]
    assert pruning.rank_channels(mean, "decreasing").tolist() == [0, 4, 2, 1, 3]


def test_prune_model_zeroes_only_the_given_channels_and_leaves_the_original(badnet):
    before = [w.copy() for w in badnet.model.get_layer("conv_3").get_weights()]
    pruned = pruning.prune_model(badnet, [4, 7])
    kernel, bias = pruned.model.get_layer("conv_3").get_weights()
    assert not kernel[..., [4, 7]].any() and not bias[[4, 7]].any()
    np.testing.assert_array_equal(np.delete(kernel, [4, 7], axis=-1), np.delete(before[0], [4, 7], axis=-1))
    for original, now in zip(before, badnet.model.get_layer("conv_3").get_weights()):
        np.testing.assert_array_equal(original, now)
    assert pruned.input_scale == badnet.input_scale


# ------------------------------------------------------------------ thresholds on hand-made tables


def _table(accuracies, asr=None):
    accuracies = np.asarray(accuracies, dtype=float)
    steps = np.arange(len(accuracies))
    return pd.DataFrame({"channels_pruned": steps, "fraction_pruned": steps / (len(steps) - 1),
                         "channel": pd.array([None, *range(len(steps) - 1)], dtype="Int64"),
                         "mean_activation": np.nan, "clean_accuracy": accuracies,
                         "accuracy_drop": accuracies[0] - accuracies,
                         "attack_success_rate": np.nan if asr is None else np.asarray(asr, float)})


#               step: 0     1     2     3     4     5     6     7
HAND_MADE = _table([90.0, 90.5, 89.0, 88.0, 86.0, 89.0, 80.0, 50.0],
                   asr=[100, 100, 100, 99, 98, 97, 60, 10])


def test_first_reach_is_the_assignments_rule():
    chosen = pruning.select_thresholds(HAND_MADE, [1, 2, 4, 10, 20])
    assert chosen["channels_pruned"].tolist() == [2, 3, 4, 6, 7]  # drop 1.0 reaches 1 exactly at step 2
    assert chosen["found"].all() and (chosen["rule"] == "first-reach").all()
    assert chosen["clean_accuracy"].tolist() == [89.0, 88.0, 86.0, 80.0, 50.0]
    assert chosen["attack_success_rate"].tolist() == [100, 99, 98, 60, 10]
    assert "assignment" in chosen.attrs["rule_text"]


def test_last_within_is_the_step_before_the_drop_first_reaches_x():
    chosen = pruning.select_thresholds(HAND_MADE, [1, 4, 10, 60], rule="last-within")
    # at 4: step 4 reaches 4.0, so step 3; the recovery at step 5 does not count (the drop already reached 4)
    assert chosen["channels_pruned"].tolist() == [1, 3, 5, 7]
    assert chosen["note"].iloc[-1].startswith("no step reaches a drop of 60")


def test_relative_rule_uses_percent_of_the_starting_accuracy():
    chosen = pruning.select_thresholds(HAND_MADE, [4, 10], rule="relative")
    # 4 % of 90 = 3.6 points: first at step 4 (drop 4); 10 % = 9 points: step 6 (drop 10)
    assert chosen["channels_pruned"].tolist() == [4, 6]


def test_a_threshold_no_step_reaches_picks_nothing_and_says_so():
    chosen = pruning.select_thresholds(HAND_MADE, [2, 45])
    unreached = chosen.iloc[1]
    assert not unreached["found"] and pd.isna(unreached["channels_pruned"]) and np.isnan(unreached["clean_accuracy"])
    assert "no step reaches a drop of 45" in unreached["note"] and "largest 40.00" in unreached["note"]


@pytest.mark.parametrize("thresholds, rule, match", [
    ([2], "median", "--rule"), ([0], "first-reach", "strictly between 0 and 100"),
    ([-4], "last-within", "strictly between 0 and 100"), ([], "first-reach", "at least one threshold"),
    ([100], "relative", "strictly between 0 and 100"), ([float("nan")], "first-reach", "strictly between 0 and 100"),
    ([2, 2.0, 4, 2], "first-reach", "found 2 given 3 times"), ([2, 2.0000001], "first-reach", "given 2 times")])
def test_bad_threshold_arguments(thresholds, rule, match):
    with pytest.raises(LabInputError, match=match):
        pruning.select_thresholds(HAND_MADE, thresholds, rule)


def test_save_pruned_models_by_threshold(tmp_path, badnet, valid):
    clean, poisoned = valid
    table = pruning.sweep(badnet, clean, poisoned)
    chosen = pruning.select_thresholds(table, [2, 10, 99])
    saved = pruning.save_pruned_models(badnet, table, chosen, tmp_path)
    found = saved[saved["found"]]
    assert [p.rsplit("/", 1)[-1] for p in found["model_path"]] == ["pruned_2.h5", "pruned_10.h5"]
    assert saved["model_path"].iloc[-1] is None and not (tmp_path / "pruned_99.h5").exists()
    reloaded = models.load_model(tmp_path / "pruned_2.h5")
    metadata = json.loads((tmp_path / "pruned_2.h5.lab.json").read_text())
    assert metadata["rule"] == "first-reach" and metadata["threshold"] == 2.0
    assert metadata["pruned_channels"] == pruning.pruned_channels(table, int(found["channels_pruned"].iloc[0]))
    assert reloaded.input_scale == "unit"
    accuracy = 100 * np.mean(reloaded.predict_labels(clean.x) == clean.y)
    assert accuracy == pytest.approx(found["clean_accuracy"].iloc[0])
    with pytest.raises(RefuseOverwrite):
        pruning.save_pruned_models(badnet, table, chosen, tmp_path)
    pruning.save_pruned_models(badnet, table, chosen, tmp_path, force=True)


def test_save_pruned_models_on_a_sweep_read_back_from_csv_prunes_the_swept_layer(tmp_path, badnet, valid):
    """sweep.csv keeps layer/measure/order as columns: a reloaded conv_2 sweep must not prune conv_3 (the default)."""
    clean, _ = valid
    table = pruning.sweep(badnet, clean, layer="conv_2", measure="pool_2")
    table.to_csv(tmp_path / "sweep.csv", index=False)
    reloaded = pd.read_csv(tmp_path / "sweep.csv")
    assert not reloaded.attrs and pruning.sweep_setting(reloaded, "layer") == "conv_2"
    chosen = pruning.select_thresholds(reloaded, [2], rule="last-within")
    saved = pruning.save_pruned_models(badnet, reloaded, chosen, tmp_path / "out")
    metadata = json.loads((tmp_path / "out" / "pruned_2.h5.lab.json").read_text())
    channels = pruning.pruned_channels(table, int(chosen["channels_pruned"].iloc[0]))
    assert metadata["pruned_layer"] == "conv_2" and metadata["pruned_channels"] == channels and channels
    assert metadata["order"] == "increasing"
    pruned = models.load_model(saved["model_path"].iloc[0])
    kernel, bias = pruned.model.get_layer("conv_2").get_weights()
    assert not kernel[..., channels].any() and not bias[channels].any()
    for name in ("conv_3", "conv_4"):  # every other layer exactly as in the BadNet
        for ours, original in zip(pruned.model.get_layer(name).get_weights(), badnet.model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, original)
    without = reloaded.drop(columns=["layer"])
    with pytest.raises(LabInputError, match="layer"):
        pruning.save_pruned_models(badnet, without, chosen, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_plots_return_figures_with_labels(tmp_path, badnet, valid):
    from matplotlib.figure import Figure

    from lab.evaluation import plots

    table = pruning.sweep(badnet, *valid)
    chosen = pruning.select_thresholds(table)
    for name, figure in {"sweep": plots.plot_sweep(table, chosen),
                         "activation": plots.plot_channel_activation(table)}.items():
        assert isinstance(figure, Figure)
        axes = figure.axes[0]
        assert axes.get_title() and "(" in axes.get_xlabel() and "(" in axes.get_ylabel()
        assert axes.get_legend() is not None
        figure.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


# ------------------------------------------------------------------ the real course models


@pytest.mark.fixtures
@pytest.mark.parametrize("name", ["lab3_sunglasses_bd_weights.h5", "sunglasses_bd_weights.h5"])
def test_real_course_badnets_sweep_exactly_at_1283_classes(name):
    path = helpers.fixture_path(name)
    if path is None:
        pytest.skip(f"real course fixtures not available: {helpers.FIXTURES} is absent")
    badnet = models.load_model(path)
    assert badnet.n_classes == 1283 and pruning.plan_sweep(badnet).method == "fast"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 55, 47, 3)).astype(np.float32)
    channels = pruning.rank_channels(activations.mean_channel_activation(badnet, x, "pool_3"))
    fast = list(pruning.step_outputs(badnet, x, channels, method="fast"))
    masked = list(pruning.step_outputs(badnet, x, channels, method="masked"))
    keras_float32 = helpers.naive_step_outputs(badnet, x, channels, "conv_3")
    _assert_fast_path_within_float32_rounding(fast, keras_float32,
                                              helpers.naive_step_outputs(badnet, x, channels, "conv_3", "float64"))
    targets = keras_float32[0].argmax(axis=1)  # the model's own answers: every image starts as a hit
    for step, hits in enumerate(pruning.step_hits(badnet, x, targets, channels)):
        np.testing.assert_array_equal(hits, keras_float32[step].argmax(axis=1) == targets, err_msg=f"step {step}")
    # The masked head runs as one compiled graph and the reference eagerly: some CPUs pick kernels that round
    # differently in the two (1283-class outputs off by up to 7e-7 on CI's), so the same bound as the fast path.
    _assert_fast_path_within_float32_rounding(masked, keras_float32,
                                              helpers.naive_step_outputs(badnet, x, channels, "conv_3", "float64"))
    for step in (0, 30, 60):
        reference = pruning.prune_model(badnet, channels[:step]).predict_proba(x)
        np.testing.assert_array_equal(masked[step].argmax(axis=1), reference.argmax(axis=1), err_msg=f"step {step}")
        np.testing.assert_allclose(masked[step], reference, rtol=0, atol=1e-6)


def test_bench_smoke():
    from lab.course import bench

    result = bench.run(n=24, naive_steps=1)
    report = bench.format_report(result)
    assert result["ours"]["method"] == "fast" and "our sweep / one forward pass" in report
    assert result["ours"]["table"]["channels_pruned"].iloc[-1] == 60
