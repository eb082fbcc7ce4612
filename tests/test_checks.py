"""The exercise checks: right answers pass, each typical mistake gets a message that names it."""

from __future__ import annotations

import numpy as np
import pytest

from lab.course import checks
from lab.defenses import pruning


def _raises(message, function, *args, **kwargs):
    with pytest.raises(checks.CheckFailed, match=message) as error:
        function(*args, **kwargs)
    assert isinstance(error.value, AssertionError)  # nbgrader scores a failed assert as a failed test
    return str(error.value)


def test_accuracy_right_and_typical_mistakes():
    def right(p, y):
        return 100.0 * np.mean(np.argmax(p, axis=1) == y)

    assert checks.check_accuracy_percent(right).startswith("ok")
    _raises("fraction", checks.check_accuracy_percent, lambda p, y: np.mean(np.argmax(p, axis=1) == y))
    _raises("one number", checks.check_accuracy_percent, lambda p, y: np.argmax(p, axis=1) == y)
    _raises("not done yet", checks.check_accuracy_percent, lambda p, y: (_ for _ in ()).throw(NotImplementedError()))


def test_attack_target_tie_and_share():
    def right(p):
        counts = np.bincount(np.argmax(p, axis=1), minlength=p.shape[1])
        return int(np.argmax(counts)), 100.0 * counts.max() / len(p)

    assert checks.check_attack_target(right).startswith("ok")
    _raises("fraction", checks.check_attack_target, lambda p: (right(p)[0], right(p)[1] / 100))

    def larger_on_tie(p):
        counts = np.bincount(np.argmax(p, axis=1), minlength=p.shape[1])
        return int(len(counts) - 1 - np.argmax(counts[::-1])), 100.0 * counts.max() / len(p)

    _raises("tie", checks.check_attack_target, larger_on_tie)


def test_rank_channels_names_the_wrong_order_and_unstable_ties():
    assert checks.check_rank_channels(lambda m: np.argsort(m, kind="stable")).startswith("ok")
    _raises("MOST active", checks.check_rank_channels, lambda m: np.argsort(-np.asarray(m), kind="stable"))
    _raises("sorted activations", checks.check_rank_channels, lambda m: np.sort(m))
    _raises("stable", checks.check_rank_channels,
            lambda m: np.lexsort((-np.arange(len(m)), m)))  # ties in reverse index order


def _prune_right(model, name, channel):
    layer = model.get_layer(name)
    kernel, bias = layer.get_weights()
    kernel[..., channel] = 0
    bias[channel] = 0
    layer.set_weights([kernel, bias])


def test_prune_channel_right_and_wrong_axis_and_copies():
    assert checks.check_prune_channel(_prune_right).startswith("ok")

    def input_axis(model, name, channel):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        kernel[:, :, channel, :] = 0
        bias[channel] = 0
        layer.set_weights([kernel, bias])

    _raises("input channel", checks.check_prune_channel, input_axis)

    def forgot_set(model, name, channel):
        kernel, bias = model.get_layer(name).get_weights()
        kernel[..., channel] = 0

    _raises("copies", checks.check_prune_channel, forgot_set)

    def no_bias(model, name, channel):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        kernel[..., channel] = 0
        layer.set_weights([kernel, bias])

    _raises("bias", checks.check_prune_channel, no_bias)


def test_threshold_rule_off_by_one_is_named():
    def right(drops, threshold):
        reached = np.flatnonzero(np.asarray(drops) >= threshold)
        return int(reached[0]) if reached.size else None

    assert checks.check_first_step_reaching(right).startswith("ok")
    message = _raises("step BEFORE", checks.check_first_step_reaching,
                      lambda d, t: None if right(d, t) is None else right(d, t) - 1)
    assert "last-within" in message
    _raises(">=, not >", checks.check_first_step_reaching,
            lambda d, t: (lambda r: int(r[0]) if r.size else None)(np.flatnonzero(np.asarray(d) > t)))
    _raises("return None", checks.check_first_step_reaching, lambda d, t: right(d, t) or len(d) - 1)


def test_threshold_rule_agrees_with_the_lab_on_a_sweep_table():
    import pandas as pd

    drops = np.array([0.0, 0.0, 1.0, 2.0, 5.0, 11.0])
    table = pd.DataFrame({"channels_pruned": range(6), "fraction_pruned": np.arange(6) / 5, "clean_accuracy": 90 - drops,
                          "accuracy_drop": drops, "attack_success_rate": np.full(6, 50.0)})
    message = checks.check_first_step_reaching(checks.reference_first_step_reaching, table, [2, 4, 10, 20])
    assert "2 pp -> 3, 4 pp -> 4, 10 pp -> 5, 20 pp -> none" in message
    selection = pruning.select_thresholds(table, [2, 4, 10, 20])
    assert selection["channels_pruned"].tolist()[:3] == [3, 4, 5]


def test_goodnet_decision_mistakes():
    def right(b, p):
        bl, pl = np.argmax(b, 1), np.argmax(p, 1)
        return np.where(bl == pl, bl, b.shape[1])

    assert checks.check_goodnet_decision(right).startswith("ok")
    _raises("not -1", checks.check_goodnet_decision, lambda b, p: np.where(right(b, p) == b.shape[1], -1, right(b, p)))
    _raises("swapped", checks.check_goodnet_decision,
            lambda b, p: np.where(np.argmax(b, 1) == np.argmax(p, 1), b.shape[1], np.argmax(b, 1)))


def test_anomaly_index_right_and_typical_mistakes():
    def right(l1):
        l1 = np.asarray(l1, np.float64)
        median = np.median(l1)
        return (median - l1) / (1.4826 * np.median(np.abs(l1 - median)))

    assert checks.check_anomaly_index(right, np.array([12.0, 30.0, 25.0, 28.0, 26.0])).startswith("ok")
    _raises("1.4826", checks.check_anomaly_index,
            lambda l1: (np.median(l1) - l1) / np.median(np.abs(l1 - np.median(l1))))
    _raises("one-sided", checks.check_anomaly_index,
            lambda l1: np.abs(l1 - np.median(l1)) / (1.4826 * np.median(np.abs(l1 - np.median(l1)))))
    _raises("wrong sign", checks.check_anomaly_index,
            lambda l1: (l1 - np.median(l1)) / (1.4826 * np.median(np.abs(l1 - np.median(l1)))))
    _raises("MEDIAN", checks.check_anomaly_index,
            lambda l1: (l1.mean() - l1) / (1.4826 * np.median(np.abs(l1 - np.median(l1)))))
    _raises("not done yet", checks.check_anomaly_index, lambda l1: (_ for _ in ()).throw(NotImplementedError()))


def test_flag_candidates_needs_a_large_index_and_a_small_mask():
    def right(candidates, l1, index):
        return [c for c, n, a in zip(candidates, l1, index) if a > 2 and n < np.median(l1)]

    assert checks.check_flag_candidates(right).startswith("ok")
    assert checks.check_flag_candidates(right, seed=5).startswith("ok")
    _raises("SMALL", checks.check_flag_candidates, lambda c, l1, index: [k for k, a in zip(c, index) if a > 2])
    _raises("expected", checks.check_flag_candidates,
            lambda c, l1, index: [k for k, n, a in zip(c, l1, index) if a >= 2 and n < np.median(l1)])


def test_strip_entropy_right_and_typical_mistakes():
    def terms(p):
        return np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)

    def right(p):
        return -terms(p).sum(axis=-1).mean(axis=1)

    assert checks.check_strip_entropy(right).startswith("ok")
    assert checks.check_strip_entropy(right, seed=3).startswith("ok")
    _raises("nats", checks.check_strip_entropy, lambda p: right(p) * np.log(2.0))
    _raises("MEAN", checks.check_strip_entropy, lambda p: -terms(p).sum(axis=-1).sum(axis=1))
    _raises("averaged prediction", checks.check_strip_entropy, lambda p: -terms(p.mean(axis=1)).sum(axis=-1))
    _raises("0 log 0", checks.check_strip_entropy, lambda p: -(p * np.log2(p)).sum(axis=-1).mean(axis=1))
    _raises("shape", checks.check_strip_entropy, lambda p: -terms(p).sum(axis=-1))
    _raises("not done yet", checks.check_strip_entropy, lambda p: (_ for _ in ()).throw(NotImplementedError()))


def test_strip_threshold_flags_what_the_labs_rule_flags():
    def right(entropy, frr):
        return np.quantile(entropy, frr / 100.0, method="lower")

    assert checks.check_strip_threshold(right).startswith("ok")
    assert checks.check_strip_threshold(right, np.linspace(0.0, 2.0, 50), seed=4).startswith("ok")
    # np.percentile interpolates: between the 2nd and 3rd of 37 values it flags 2 of them, 5.4 % for a 5 % budget
    _raises("over the budget", checks.check_strip_threshold, lambda e, frr: np.percentile(e, frr))
    _raises("upper tail", checks.check_strip_threshold, lambda e, frr: np.quantile(e, 1 - frr / 100.0, method="lower"))
    _raises("divide by 100", checks.check_strip_threshold, lambda e, frr: np.quantile(e, min(frr, 1.0)))
    _raises("over the budget", checks.check_strip_threshold, lambda e, frr: np.quantile(e, 2 * frr / 100.0))
    _raises("largest tau", checks.check_strip_threshold, lambda e, frr: float(e.min()))
