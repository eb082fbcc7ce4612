"""Checks for the notebooks' exercises: fast, and they say what is wrong, not just that it is.

Each exercise of the notebooks asks the student to write one piece of the
algorithm (a function). Its autograded test cell calls one ``check_*``
function here with the student's function: the check runs it on small
crafted inputs whose answer is known, then on the lab's data against the
lab's own implementation (the reference), and raises :class:`CheckFailed`
(an ``AssertionError``, so nbgrader counts the cell as failed) with a
message that names the likely mistake: a fraction instead of percent, the
wrong channel axis, the step before the threshold, ... On success it
returns a one-line ``"ok: ..."`` to print.

The checks never write to stderr (nbgrader scores a test cell with stderr
output as failed), so warnings raised while they run are silenced.

Exercises and their reference (what the narrative cells call afterwards):

==========  ==============================  ==========================================
notebook    student function                reference in the lab
==========  ==============================  ==========================================
01          ``accuracy_percent``            :func:`lab.evaluation.metrics.clean_accuracy`
01          ``attack_target_from_predictions``  most common predicted class
02          ``mean_activation_per_channel`` :func:`lab.evaluation.activations.mean_channel_activation`
03          ``rank_channels``               :func:`lab.defenses.pruning.rank_channels`
03          ``prune_channel``               :func:`lab.defenses.pruning.prune_model`
03          ``slow_sweep``                  :func:`lab.defenses.pruning.sweep` (exact)
03          ``first_step_reaching``         :func:`lab.defenses.pruning.select_thresholds` (first-reach)
04          ``goodnet_decision``            G's argmax (:func:`lab.defenses.goodnet.build_goodnet`)
04          ``build_goodnet_model``         :func:`lab.defenses.goodnet.build_goodnet`
05          ``fine_tune_one_epoch``         :func:`lab.defenses.finepruning.fine_tune`
06          ``anomaly_index``               :func:`lab.defenses.reverse.anomaly_index`
06          ``flag_candidates``             Neural Cleanse's rule (index > 2, small mask)
07          ``strip_entropy_bits``          :func:`lab.defenses.detectors.strip_entropy` (from probabilities)
07          ``strip_threshold``             :func:`lab.defenses.detectors.fit_strip`'s quantile
==========  ==============================  ==========================================
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np


class CheckFailed(AssertionError):
    """An exercise's answer is wrong; the message says how."""


@contextlib.contextmanager
def _quiet():
    """No warnings to stderr while a check runs (nbgrader fails a test cell that writes to stderr)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _fail(exercise: str, message: str) -> None:
    __tracebackhide__ = True  # IPython and pytest leave this helper out of the traceback a student reads
    raise CheckFailed(f"[{exercise}] {message}")


def _call(exercise: str, function, *args):
    """Call the student's function; a NotImplementedError says the exercise is not done yet."""
    __tracebackhide__ = True
    try:
        with _quiet():
            return function(*args)
    except NotImplementedError:
        _fail(exercise, "not done yet: replace `raise NotImplementedError()` in the exercise cell with your code "
                        "and run that cell again")


def run_exercise(function, exercise: str, *args):
    """Call a student's function from a test cell: "not done yet" instead of a bare NotImplementedError."""
    __tracebackhide__ = True
    return _call(exercise, function, *args)


def _number(exercise: str, value, what: str) -> float:
    array = np.asarray(value)
    if array.ndim != 0:
        _fail(exercise, f"{what} must be one number, found an array of shape {array.shape} "
                        "(did you forget to average, e.g. np.mean(...)?)")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        _fail(exercise, f"{what} must be a number, found {type(value).__name__}")
    return float(array)


# ---------------------------------------------------------------- 01: accuracy, ASR, target


def _reference_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    from lab.evaluation import metrics

    return metrics.clean_accuracy(np.argmax(probabilities, axis=1), labels)


def check_accuracy_percent(accuracy_percent, clean_probabilities=None, clean_labels=None,
                           poisoned_probabilities=None, poisoned_targets=None, seed: int = 0) -> str:
    """01: ``accuracy_percent(probabilities (n, classes), labels int (n,)) -> float`` in percent.

    Crafted case first (4 images, 3 classes, 2 right: 50 %), then random
    cases from ``seed``, then the lab's clean and poisoned predictions
    (clean accuracy and attack success rate) against :mod:`lab.evaluation.metrics`.
    """
    exercise = "01 accuracy_percent"
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.4, 0.35, 0.25]], np.float32)
    labels = np.array([0, 1, 1, 2])
    value = _number(exercise, _call(exercise, accuracy_percent, probabilities, labels), "the accuracy")
    if abs(value - 0.5) < 1e-9:
        _fail(exercise, "returned 0.5 for 2 right out of 4: that is a fraction; return percent (0..100), 50.0")
    if abs(value - 50.0) > 1e-6:
        predicted = probabilities.argmax(axis=1)
        _fail(exercise, f"returned {value:g} for 4 images whose predicted classes (argmax over axis 1) are "
                        f"{predicted.tolist()} and labels {labels.tolist()}: 2 of 4 are right, 50.0 %. "
                        "Take np.argmax(probabilities, axis=1) first, then compare with the labels")
    rng = np.random.default_rng(seed)
    for _ in range(5):
        n, classes = int(rng.integers(1, 40)), int(rng.integers(2, 12))
        probabilities = rng.random((n, classes)).astype(np.float32)
        labels = rng.integers(0, classes, n)
        expected = _reference_accuracy(probabilities, labels)
        value = _number(exercise, _call(exercise, accuracy_percent, probabilities, labels), "the accuracy")
        if abs(value - expected) > 1e-6:
            _fail(exercise, f"returned {value:g} on {n} random images with {classes} classes, expected {expected:g}")
    results = []
    for name, probs, truth in (("clean accuracy", clean_probabilities, clean_labels),
                               ("attack success rate", poisoned_probabilities, poisoned_targets)):
        if probs is None:
            continue
        expected = _reference_accuracy(probs, truth)
        value = _number(exercise, _call(exercise, accuracy_percent, probs, truth), name)
        if abs(value - expected) > 1e-6:
            _fail(exercise, f"{name} on the lab's data: yours {value:.4f} %, the lab's {expected:.4f} %")
        results.append(f"{name} {value:.2f} %")
    return "ok: accuracy_percent" + (f" ({', '.join(results)})" if results else "")


def _reference_target(probabilities: np.ndarray) -> tuple[int, float]:
    predicted = np.argmax(probabilities, axis=1)
    counts = np.bincount(predicted, minlength=probabilities.shape[1])
    return int(np.argmax(counts)), 100.0 * float(counts.max()) / len(predicted)


def check_attack_target(attack_target_from_predictions, poisoned_probabilities=None, seed: int = 0) -> str:
    """01: ``attack_target_from_predictions(probabilities) -> (class int, share % float)``.

    The most common predicted class on poisoned inputs and its share of
    them (percent); on a tie the smaller class (what ``np.bincount(...).argmax()``
    gives).
    """
    exercise = "01 attack_target_from_predictions"
    probabilities = np.eye(5, dtype=np.float32)[[3, 3, 1, 3, 0, 3, 2, 3]]
    answer = _call(exercise, attack_target_from_predictions, probabilities)
    if not isinstance(answer, tuple) or len(answer) != 2:
        _fail(exercise, f"return a pair (target class, share in %), found {type(answer).__name__} {answer!r}")
    target, share = answer
    if np.asarray(target).ndim != 0 or not float(target).is_integer():
        _fail(exercise, f"the target must be one class number, found {target!r}")
    share = _number(exercise, share, "the share")
    if int(target) != 3:
        _fail(exercise, f"8 inputs predicted {probabilities.argmax(1).tolist()}: the most common class is 3, "
                        f"you returned {int(target)} (count the argmax classes, e.g. np.bincount, then take the largest)")
    if abs(share - 0.625) < 1e-9:
        _fail(exercise, "share 0.625 is a fraction: return percent, 62.5")
    if abs(share - 62.5) > 1e-6:
        _fail(exercise, f"class 3 is predicted for 5 of 8 inputs, 62.5 %; you returned {share:g}")
    tie = np.eye(4, dtype=np.float32)[[2, 1, 2, 1]]
    target, _ = _call(exercise, attack_target_from_predictions, tie)
    if int(target) != 1:
        _fail(exercise, f"on a tie (classes 1 and 2 twice each) return the smaller class, 1 (as np.argmax does); "
                        f"you returned {int(target)}")
    rng = np.random.default_rng(seed)
    cases = [rng.random((int(rng.integers(1, 50)), int(rng.integers(2, 9)))).astype(np.float32) for _ in range(5)]
    if poisoned_probabilities is not None:
        cases.append(np.asarray(poisoned_probabilities))
    for probabilities in cases:
        expected = _reference_target(probabilities)
        target, share = _call(exercise, attack_target_from_predictions, probabilities)
        if int(target) != expected[0] or abs(float(share) - expected[1]) > 1e-6:
            _fail(exercise, f"on {len(probabilities)} inputs: yours ({int(target)}, {float(share):.2f}), "
                            f"expected ({expected[0]}, {expected[1]:.2f})")
    return f"ok: attack_target_from_predictions (B's most common answer on poisoned data: class {expected[0]}, " \
           f"{expected[1]:.1f} %)"


# ---------------------------------------------------------------- 02: mean activation per channel


def check_mean_activation(mean_activation_per_channel, model, x: np.ndarray, layer_name: str = "pool_3") -> str:
    """02: ``mean_activation_per_channel(model, x, layer_name) -> float (C,)`` against the lab's batched version."""
    from lab.evaluation import activations

    exercise = "02 mean_activation_per_channel"
    with _quiet():
        expected = activations.mean_channel_activation(model, x, layer_name)
    value = np.asarray(_call(exercise, mean_activation_per_channel, model, x, layer_name), dtype=np.float64)
    channels = len(expected)
    if value.shape != expected.shape:
        shape = activations.get_layer(model, layer_name).output.shape
        hint = ""
        if value.shape == (len(x),):
            hint = " You averaged each image over its channels: average over images and positions, keep channels"
        elif value.shape == tuple(shape[1:]):
            hint = " You averaged over images only: also average over the positions (axes 1 and 2)"
        elif value.ndim == 1 and len(value) == shape[1]:
            hint = " Channels are the LAST axis of a Keras activation (n, height, width, channels)"
        _fail(exercise, f"expected one mean per channel of {layer_name}, shape ({channels},); found shape "
                        f"{value.shape} (the layer's output is (n, {', '.join(str(s) for s in shape[1:])})).{hint}")
    scale = float(np.max(np.abs(expected))) or 1.0
    if not np.allclose(value, expected, rtol=1e-4, atol=1e-5 * scale):
        if np.allclose(value * 255.0, expected, rtol=1e-3, atol=1e-4 * scale) or \
                np.allclose(value, expected * 255.0, rtol=1e-3, atol=1e-3 * scale):
            _fail(exercise, "off by a factor 255: feed the model what it expects, model.preprocess(x), "
                            f"(this model's input scale is {model.input_scale!r})")
        if np.allclose(np.sort(value), np.sort(expected), rtol=1e-4, atol=1e-5 * scale):
            _fail(exercise, "the right values in the wrong order: keep channel c at position c (do not sort)")
        worst = int(np.argmax(np.abs(value - expected)))
        _fail(exercise, f"channel {worst}: yours {value[worst]:.5f}, the lab's {expected[worst]:.5f} "
                        f"(mean over all {len(x)} images and all positions)")
    return f"ok: mean_activation_per_channel ({channels} channels of {layer_name}, {len(x)} images; " \
           f"{int(np.sum(expected == 0))} never fire)"


# ---------------------------------------------------------------- 03: ranking, pruning, sweep, threshold rule


def check_rank_channels(rank_channels, mean_activation=None, seed: int = 0) -> str:
    """03: ``rank_channels(mean_activation float (C,)) -> int (C,)``: least active first, ties by channel index."""
    from lab.defenses import pruning

    exercise = "03 rank_channels"
    means = np.array([0.5, 0.0, 2.0, 0.0, 1.0])
    order = np.asarray(_call(exercise, rank_channels, means))
    expected = pruning.rank_channels(means)
    if order.shape != expected.shape:
        _fail(exercise, f"return one channel index per channel, shape {expected.shape}; found {order.shape}")
    if not np.issubdtype(order.dtype, np.integer):
        if np.array_equal(np.sort(means), order):
            _fail(exercise, "you returned the sorted activations; return the channel indices in that order (np.argsort)")
        _fail(exercise, f"return channel indices (integers), found dtype {order.dtype}")
    if np.array_equal(order, pruning.rank_channels(means, "decreasing")) or np.array_equal(order, expected[::-1]):
        _fail(exercise, f"means {means.tolist()}: you rank the MOST active channel first ({order.tolist()}); "
                        f"pruning removes the least active first: {expected.tolist()}")
    if not np.array_equal(order, expected):
        if sorted(order.tolist()) == sorted(expected.tolist()) and np.array_equal(means[order], means[expected]):
            _fail(exercise, f"means {means.tolist()}: ties (the two channels at 0.0) must keep channel order, "
                            f"{expected.tolist()}; you gave {order.tolist()}. Use a stable sort: "
                            "np.argsort(..., kind='stable')")
        _fail(exercise, f"means {means.tolist()}: expected order {expected.tolist()}, found {order.tolist()}")
    rng = np.random.default_rng(seed)
    cases = [np.round(rng.random(int(rng.integers(1, 64))) * 3, 1) * (rng.random() > 0.3) for _ in range(5)]
    if mean_activation is not None:
        cases.append(np.asarray(mean_activation, dtype=np.float64))
    for means in cases:
        order = np.asarray(_call(exercise, rank_channels, means))
        if not np.array_equal(order, pruning.rank_channels(means)):
            _fail(exercise, f"on {len(means)} channels your order differs from the lab's at position "
                            f"{int(np.argmax(order != pruning.rank_channels(means))) if order.shape == means.shape else 0}")
    return f"ok: rank_channels ({len(cases[-1])} channels, first pruned: {pruning.rank_channels(cases[-1])[:5].tolist()} ...)"


def _toy_conv_model(seed: int):
    """A small model with a Conv2D named ``conv_3`` (3x3 kernel, 4 input channels, 6 filters), random weights."""
    import keras

    inputs = keras.Input((6, 5, 4))
    conv = keras.layers.Conv2D(6, 3, activation="relu", name="conv_3")(inputs)
    outputs = keras.layers.Dense(3, name="output")(keras.layers.Flatten()(conv))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) + 0.1 for w in model.get_weights()])
    return model


def check_prune_channel(prune_channel, seed: int = 0) -> str:
    """03: ``prune_channel(keras_model, layer_name, channel)`` zeroes that channel's kernel and bias in place."""
    exercise = "03 prune_channel"
    with _quiet():
        model = _toy_conv_model(seed)
    before = [w.copy() for w in model.get_layer("conv_3").get_weights()]
    channel = 2
    _call(exercise, prune_channel, model, "conv_3", channel)
    kernel, bias = model.get_layer("conv_3").get_weights()
    if np.array_equal(kernel, before[0]) and np.array_equal(bias, before[1]):
        _fail(exercise, "the model did not change. layer.get_weights() returns copies: change them, then "
                        "layer.set_weights([kernel, bias])")
    if np.all(kernel[:, :, channel, :] == 0) and not np.all(kernel[..., channel] == 0):
        _fail(exercise, "you zeroed input channel 2 (kernel[:, :, 2, :]); a Conv2D kernel is (height, width, "
                        "in_channels, out_channels), and a channel of conv_3's output is its LAST axis: kernel[..., 2]")
    if not np.all(kernel[..., channel] == 0):
        _fail(exercise, "channel 2's kernel (kernel[..., 2]) is not all zero")
    if bias[channel] != 0:
        _fail(exercise, f"channel 2's bias is {bias[channel]:g}, not 0: a zero kernel with a bias still fires "
                        "(ReLU(bias) > 0); zero the bias too")
    others = [c for c in range(kernel.shape[-1]) if c != channel]
    if not (np.array_equal(kernel[..., others], before[0][..., others]) and np.array_equal(bias[others], before[1][others])):
        _fail(exercise, "other channels changed: zero only the one channel asked for")
    _call(exercise, prune_channel, model, "conv_3", 4)
    kernel, bias = model.get_layer("conv_3").get_weights()
    if not (np.all(kernel[..., [2, 4]] == 0) and np.all(bias[[2, 4]] == 0)):
        _fail(exercise, "pruning channel 4 after channel 2 must keep channel 2 pruned (work on the model's current weights)")
    return "ok: prune_channel (kernel[..., c] and bias[c] set to 0, other channels untouched)"


def check_slow_sweep(slow_sweep, model, dataset, channel_order, n_steps: int = 5) -> str:
    """03: ``slow_sweep(model, dataset, channel_order, n_steps) -> list of n_steps + 1 accuracies (%)``.

    Compared with the lab's exact fast sweep restricted to the same data and
    the same first ``n_steps`` channels (it is exact, so equal to 1e-9).
    """
    from lab.defenses import pruning

    exercise = "03 slow_sweep"
    channel_order = [int(c) for c in channel_order]
    with _quiet():
        hits = list(pruning.step_hits(model, dataset.x, dataset.y, channel_order[:n_steps]))
    expected = np.array([100.0 * float(np.mean(h)) for h in hits])
    original = [w.copy() for w in model.model.get_weights()]
    value = _call(exercise, slow_sweep, model, dataset, channel_order, n_steps)
    if any(not np.array_equal(a, b) for a, b in zip(original, model.model.get_weights())):
        _fail(exercise, "the BadNet itself was pruned: prune a copy (keras.models.clone_model + set_weights), "
                        "B must stay as it is for the rest of the notebook")
    value = np.asarray(value, dtype=np.float64).ravel()
    if len(value) == n_steps and np.allclose(value, expected[1:], atol=1e-6):
        _fail(exercise, f"{n_steps} values: the list must start with step 0 (nothing pruned, "
                        f"{expected[0]:.2f} %) and end with step {n_steps}: {n_steps + 1} values")
    if len(value) == n_steps and np.allclose(value, expected[:-1], atol=1e-6):
        _fail(exercise, f"{n_steps} values: you stopped one step early; include step {n_steps}")
    if len(value) != n_steps + 1:
        _fail(exercise, f"expected {n_steps + 1} accuracies (steps 0..{n_steps}), found {len(value)}")
    if np.allclose(value, expected / 100.0, atol=1e-8) and not np.allclose(value, expected, atol=1e-6):
        _fail(exercise, "fractions: return percent (0..100)")
    wrong = np.flatnonzero(np.abs(value - expected) > 1e-6)
    if wrong.size:
        step = int(wrong[0])
        _fail(exercise, f"step {step} (channels {channel_order[:step]} pruned): yours {value[step]:.4f} %, the "
                        f"exact sweep {expected[step]:.4f} %. Pruning is cumulative: step k has the first k channels "
                        "of the order pruned, all at once")
    return f"ok: slow_sweep ({n_steps} steps on {len(dataset)} images: " + \
           ", ".join(f"{v:.1f}" for v in value) + " %)"


def reference_first_step_reaching(accuracy_drops, threshold: float) -> int | None:
    """The first-reach rule: index of the first drop >= threshold, None if none."""
    reached = np.flatnonzero(np.asarray(accuracy_drops, dtype=np.float64) >= threshold)
    return int(reached[0]) if reached.size else None


def check_first_step_reaching(first_step_reaching, sweep_table=None, thresholds=(2, 4, 10), seed: int = 0) -> str:
    """03: ``first_step_reaching(accuracy_drops, threshold) -> int | None``: the first step whose drop reaches X.

    With ``sweep_table``, also compares with :func:`lab.defenses.pruning.select_thresholds`
    (``first-reach``) for ``thresholds``.
    """
    from lab.defenses import pruning

    exercise = "03 first_step_reaching"
    drops = np.array([0.0, 0.0, 0.5, 1.0, 2.0, 2.5, 4.5, 12.0])
    cases = [(2.0, 4), (1.0, 3), (4.0, 6), (0.5, 2), (20.0, None)]
    rng = np.random.default_rng(seed)
    for _ in range(6):
        random_drops = np.concatenate([[0.0], np.cumsum(rng.choice([0.0, 0.0, 0.25, 1.0, 3.0], 25))])
        threshold = float(rng.choice(random_drops[1:])) if rng.random() < 0.5 else float(rng.uniform(0.1, 20))
        cases.append((threshold, reference_first_step_reaching(random_drops, threshold), random_drops))
    for case in cases:
        threshold, expected = case[0], case[1]
        steps = case[2] if len(case) == 3 else drops
        found = _call(exercise, first_step_reaching, steps, threshold)
        if found is not None and (np.asarray(found).ndim != 0 or not float(found).is_integer()):
            _fail(exercise, f"return one step number (an int) or None, found {found!r}")
        found = None if found is None else int(found)
        if found == expected:
            continue
        shown = f"drops {steps.tolist()} and threshold {threshold:g}"
        if expected is None:
            _fail(exercise, f"{shown}: no step reaches the threshold, so return None (no model is saved); you returned {found}")
        if found is None:
            _fail(exercise, f"{shown}: step {expected} reaches it (drop {steps[expected]:g} >= {threshold:g}); you returned None")
        if found == expected - 1:
            _fail(exercise, f"{shown}: you returned step {found}, the step BEFORE the first one whose drop reaches "
                            f"{threshold:g} (step {expected}, drop {steps[expected]:g}). That is the last-within rule; "
                            "the assignment saves the first step whose drop is at least X")
        if found == expected + 1 or (steps[expected] == threshold and found > expected):
            _fail(exercise, f"{shown}: you returned step {found}; step {expected} already has drop "
                            f"{steps[expected]:g} >= {threshold:g} (reaching means >=, not >)")
        _fail(exercise, f"{shown}: expected step {expected}, you returned {found}")
    checked = ""
    if sweep_table is not None:
        selection = pruning.select_thresholds(sweep_table, list(thresholds), "first-reach")
        steps = sweep_table["accuracy_drop"].to_numpy(dtype=np.float64)
        for row in selection.itertuples():
            found = _call(exercise, first_step_reaching, steps, row.threshold)
            expected = int(row.channels_pruned) if row.found else None
            if (None if found is None else int(found)) != expected:
                _fail(exercise, f"on the sweep, threshold {row.threshold:g}: yours {found}, the lab's {expected}")
        checked = " and on the sweep: " + ", ".join(
            f"{row.threshold:g} pp -> {'none' if not row.found else int(row.channels_pruned)}"
            for row in selection.itertuples())
    return "ok: first_step_reaching (the first step whose drop reaches X)" + checked


# ---------------------------------------------------------------- 04: GoodNet


def reference_goodnet_decision(badnet_probabilities, pruned_probabilities) -> np.ndarray:
    """G's answer: B's class where argmaxes agree, N (= number of B's classes) where they do not."""
    badnet_labels = np.argmax(badnet_probabilities, axis=1)
    agree = badnet_labels == np.argmax(pruned_probabilities, axis=1)
    return np.where(agree, badnet_labels, np.asarray(badnet_probabilities).shape[1]).astype(np.int64)


def check_goodnet_decision(goodnet_decision, badnet_probabilities=None, pruned_probabilities=None,
                           seed: int = 0) -> str:
    """04: ``goodnet_decision(badnet_probabilities (n, N), pruned_probabilities (n, N)) -> int (n,)`` in 0..N."""
    exercise = "04 goodnet_decision"
    eye = np.eye(4, dtype=np.float32)
    badnet = eye[[0, 1, 2, 3, 1]]
    pruned = eye[[0, 2, 2, 1, 1]]
    expected = np.array([0, 4, 2, 4, 1])
    value = np.asarray(_call(exercise, goodnet_decision, badnet, pruned))
    if value.shape != expected.shape:
        _fail(exercise, f"return one class per input, shape {expected.shape}; found {value.shape} "
                        "(argmax over axis 1, the classes)")
    if not np.array_equal(value, expected):
        if np.array_equal(value, np.where(expected == 4, -1, expected)):
            _fail(exercise, "disagreements must be class N = 4 here (the number of B's classes, G's extra class), not -1")
        if np.array_equal(value, np.where(expected == 4, 5, expected)):
            _fail(exercise, "disagreements must be class N = 4 (classes 0..3 are B's, 4 is the extra one), not N+1")
        if np.array_equal(value, np.where(expected == 4, np.argmax(pruned, 1), expected)):
            _fail(exercise, "where B and B' disagree you answered B''s class; G answers N (backdoor)")
        if np.array_equal(value, np.where(expected == 4, np.argmax(badnet, 1), 4)):
            _fail(exercise, "agree and disagree are swapped: G keeps B's class where they AGREE")
        _fail(exercise, f"B says {np.argmax(badnet, 1).tolist()}, B' says {np.argmax(pruned, 1).tolist()}: "
                        f"G must say {expected.tolist()}; you said {value.tolist()}")
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(4):
        n, classes = int(rng.integers(1, 30)), int(rng.integers(2, 10))
        cases.append((rng.random((n, classes)), rng.random((n, classes))))
    if badnet_probabilities is not None:
        cases.append((np.asarray(badnet_probabilities), np.asarray(pruned_probabilities)))
    for badnet, pruned in cases:
        value = np.asarray(_call(exercise, goodnet_decision, badnet, pruned))
        if not np.array_equal(value, reference_goodnet_decision(badnet, pruned)):
            _fail(exercise, f"on {len(badnet)} inputs with {badnet.shape[1]} classes your answers differ from G's")
    flagged = float(np.mean(value == badnet.shape[1])) * 100.0
    return f"ok: goodnet_decision ({len(value)} inputs, {flagged:.1f} % sent to class {badnet.shape[1]})"


def check_goodnet_model(goodnet_file, badnet, pruned, x: np.ndarray) -> str:
    """04: the student's G, saved as ``.keras``, loads in safe mode and answers like the lab's G on ``x``."""
    import keras

    from lab.defenses import goodnet

    exercise = "04 build_goodnet_model"
    from pathlib import Path

    path = Path(goodnet_file)
    if not path.exists():
        _fail(exercise, f"{path} does not exist: save your model with model.save({str(path)!r})")
    if path.suffix != ".keras":
        _fail(exercise, f"save G as a .keras file (the ops in its graph need Keras' native format), found {path.name}")
    try:
        with _quiet():
            loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001  (any load failure is the student's to fix; say which)
        _fail(exercise, f"{path.name} does not load with keras.models.load_model(..., safe_mode=True): "
                        f"{type(error).__name__}: {str(error).splitlines()[0][:200]} (no Lambda layers)")
    n_classes = badnet.n_classes
    if loaded.output_shape[-1] != n_classes + 1:
        _fail(exercise, f"G needs N+1 = {n_classes + 1} outputs (B's {n_classes} classes and 'backdoor'), "
                        f"found {loaded.output_shape[-1]}")
    with _quiet():
        outputs = np.asarray(loaded.predict(badnet.preprocess(x), verbose=0))
        expected = reference_goodnet_decision(badnet.predict_proba(x), pruned.predict_proba(x))
        reference = goodnet.build_goodnet(badnet, pruned).predict_labels(x)
    if not np.array_equal(expected, reference):  # the check's own reference must agree with the lab's G
        raise RuntimeError("the lab's GoodNet and its decision rule disagree; report this")
    answers = outputs.argmax(axis=1)
    if not np.array_equal(answers, expected):
        wrong = int(np.flatnonzero(answers != expected)[0])
        _fail(exercise, f"input {wrong}: your G says {answers[wrong]}, G should say {expected[wrong]} "
                        f"({int(np.sum(answers != expected))} of {len(x)} inputs differ)")
    return f"ok: {path.name} loads in safe mode, {n_classes + 1} outputs, same answers as the lab's G on {len(x)} inputs"


# ---------------------------------------------------------------- 05: one fine-tuning epoch


def reference_fine_tune_one_epoch(keras_model, x, y, optimizer, layer, channels, batch_size=32) -> float:
    """One epoch in order: mean cross-entropy per batch, gradients applied, ``channels`` of ``layer`` zeroed after each step."""
    import keras
    import tensorflow as tf

    losses = []
    pruned_layer = keras_model.get_layer(layer)
    for start in range(0, len(x), batch_size):
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                y[start:start + batch_size], keras_model(x[start:start + batch_size], training=True)))
        gradients = tape.gradient(loss, keras_model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, keras_model.trainable_variables))
        kernel, bias = pruned_layer.get_weights()
        kernel[..., channels] = 0.0
        bias[channels] = 0.0
        pruned_layer.set_weights([kernel, bias])
        losses.append(float(loss))
    return float(np.mean(losses))


def check_fine_tune_one_epoch(fine_tune_one_epoch, model, dataset, layer: str, channels, batch_size: int = 32) -> str:
    """05: ``fine_tune_one_epoch(keras_model, x, y, optimizer, layer, channels, batch_size) -> mean loss``.

    Runs it on a copy of ``model`` (a ``LoadedModel``, pruned) with plain SGD
    (no optimizer state, so the result is determined by the gradients) and
    checks: a finite mean loss, weights that moved, pruned channels still
    exactly zero, and the same weights and loss as the reference epoch.
    """
    import keras

    exercise = "05 fine_tune_one_epoch"
    channels = [int(c) for c in channels]

    def fresh():
        with _quiet():
            copy = keras.models.clone_model(model.model)
            copy.set_weights(model.model.get_weights())
        # Start the pruned channels slightly off zero, as a step with weight decay or momentum could leave them:
        # after the epoch they must be exactly zero again (with ReLU, all-zero channels get zero gradients, so
        # only a start off zero shows whether the function zeroes them after every step).
        pruned_layer = copy.get_layer(layer)
        kernel, bias = pruned_layer.get_weights()[:2]
        bias[channels] = 0.01
        pruned_layer.set_weights([kernel, bias, *pruned_layer.get_weights()[2:]])
        return copy

    x = model.preprocess(dataset.x)
    y = np.asarray(dataset.y)
    student_model, reference_model = fresh(), fresh()
    before = [w.copy() for w in student_model.get_weights()]
    value = _number(exercise, _call(exercise, fine_tune_one_epoch, student_model, x, y, keras.optimizers.SGD(0.01),
                                    layer, list(channels), batch_size), "the epoch's mean loss")
    if not np.isfinite(value):
        _fail(exercise, f"mean loss {value}: not finite")
    if all(np.array_equal(a, b) for a, b in zip(before, student_model.get_weights())):
        _fail(exercise, "no weight changed: apply the gradients (optimizer.apply_gradients(zip(gradients, "
                        "model.trainable_variables)))")
    kernel, bias = student_model.get_layer(layer).get_weights()[:2]
    if not (np.all(kernel[..., channels] == 0) and np.all(bias[channels] == 0)):
        _fail(exercise, f"pruned channels of {layer} are no longer zero after training: set their kernel and bias "
                        "back to 0 after EVERY optimizer step, or the pruned neurons come back")
    with _quiet():
        expected = reference_fine_tune_one_epoch(reference_model, x, y, keras.optimizers.SGD(0.01), layer, channels,
                                                 batch_size)
    if abs(value - expected) > 1e-4 * max(1.0, abs(expected)):
        batches = int(np.ceil(len(x) / batch_size))
        _fail(exercise, f"mean loss {value:.5f}, expected {expected:.5f} (the mean over the {batches} batches of "
                        "each batch's mean cross-entropy, computed before that batch's update, batches in order)")
    for mine, theirs, variable in zip(student_model.get_weights(), reference_model.get_weights(),
                                      student_model.weights):
        if not np.allclose(mine, theirs, rtol=1e-3, atol=1e-5):
            _fail(exercise, f"after one epoch {variable.path} differs from one epoch of plain minibatch training "
                            "(batches in order, one optimizer step per batch, no shuffling)")
    return f"ok: fine_tune_one_epoch (mean loss {value:.4f} over {len(x)} images, {len(channels)} pruned channels " \
           "still zero, same weights as the reference epoch)"


# ---------------------------------------------------------------- 06: Neural Cleanse's outlier test


def check_anomaly_index(anomaly_index, l1=None, seed: int = 0) -> str:
    """``anomaly_index(l1)`` -> float (K,): (median - l1) / (1.4826 MAD), as :func:`lab.defenses.reverse.anomaly_index`.
    """
    __tracebackhide__ = True
    from lab.defenses.reverse import MAD_CONSISTENCY, anomaly_index as reference

    exercise = "06 anomaly_index"
    rng = np.random.default_rng(seed)
    cases = [np.array([10.0, 12.0, 11.0, 40.0, 9.0, 13.0]), rng.uniform(5, 60, size=9)]
    if l1 is not None and np.isfinite(np.asarray(l1, np.float64)).all():
        cases.append(np.asarray(l1, np.float64))
    for norms in cases:
        found = np.asarray(_call(exercise, anomaly_index, norms.copy()), np.float64)
        expected = reference(norms)
        if found.shape != expected.shape:
            _fail(exercise, f"expected one index per candidate, shape {expected.shape}, found shape {found.shape}")
        if np.allclose(found, expected):
            continue
        median = np.median(norms)
        mad = np.median(np.abs(norms - median))
        if np.allclose(found, (median - norms) / mad):
            _fail(exercise, f"the MAD must be scaled by {MAD_CONSISTENCY} (the consistency constant of the normal "
                            "distribution) before dividing")
        if np.allclose(found, np.abs(norms - median) / (MAD_CONSISTENCY * mad)):
            _fail(exercise, "the index is one-sided, how far BELOW the median a norm is: (median - l1) / (1.4826 MAD); "
                            "with the absolute value a large mask gets a large index too")
        if np.allclose(found, (norms - median) / (MAD_CONSISTENCY * mad)):
            _fail(exercise, "wrong sign: a SMALL mask (below the median) must get a large positive index, "
                            "(median - l1) / (1.4826 MAD)")
        if np.allclose(found, (norms.mean() - norms) / (MAD_CONSISTENCY * mad)):
            _fail(exercise, "deviations are measured from the MEDIAN of the norms, not their mean")
        _fail(exercise, f"for norms {np.round(norms, 2).tolist()} expected {np.round(expected, 3).tolist()}, "
                        f"found {np.round(found, 3).tolist()}")
    return f"ok: anomaly_index matches the lab's on {len(cases)} sets of norms"


def check_flag_candidates(flag_candidates, seed: int = 0) -> str:
    """``flag_candidates(candidates, l1, index)`` -> list of flagged classes: index > 2 and l1 below the median."""
    __tracebackhide__ = True
    exercise = "06 flag_candidates"
    candidates = [4, 7, 1, 9, 3, 0]
    cases = [
        (np.array([10.0, 12.0, 11.0, 40.0, 9.0, 13.0]), np.array([0.2, 0.6, 0.2, 7.0, 0.6, 1.0]), []),
        (np.array([3.0, 12.0, 11.0, 13.0, 12.5, 11.5]), np.array([5.1, 0.3, 0.3, 0.8, 0.6, 0.0]), [4]),
        (np.array([3.0, 12.0, 11.0, 13.0, 12.5, 11.5]), np.array([2.0, 0.3, 0.3, 0.8, 0.6, 0.0]), []),
    ]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))
    for l1, index, expected in cases:
        shuffled = [candidates[i] for i in order]
        found = _call(exercise, flag_candidates, shuffled, l1[order], index[order])
        found = sorted(int(c) for c in found)
        if found == sorted(expected):
            continue
        big = [candidates[i] for i in range(len(candidates)) if index[i] > 2]
        if found == sorted(big):
            _fail(exercise, f"flagged {found}: a large index alone is not enough, the mask must also be SMALL "
                            "(l1 below the median); a large trigger is not a backdoor shortcut")
        _fail(exercise, f"l1 {l1.tolist()}, index {index.tolist()}, candidates {candidates}: expected "
                        f"{sorted(expected)}, found {found} (rule: index > 2 and l1 below the median)")
    return "ok: flag_candidates applies Neural Cleanse's rule"


# ---------------------------------------------------------------- 07: STRIP's entropy and its threshold


def _probability_rows(rng, n: int, k: int, classes: int) -> np.ndarray:
    """float64 (n, k, classes) softmax rows, some nearly one-hot (a triggered input's certain answers), one exact."""
    logits = rng.normal(size=(n, k, classes)) * rng.uniform(0.5, 8.0, size=(n, 1, 1))
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    p[0, 0] = np.eye(classes)[0]  # an exact one-hot row: 0 log 0 must count as 0
    return p


def check_strip_entropy(strip_entropy_bits, probabilities=None, seed: int = 0) -> str:
    """``strip_entropy_bits(p)``: p float (n, K, C), B's class probabilities on each input's K blends -> float (n,).

    The reference is STRIP's H(x): the entropy in bits of each blend's
    prediction, averaged over the K blends
    (:func:`lab.defenses.detectors.entropy_bits` then ``mean(axis=1)``).
    ``probabilities``: also check on these (e.g. B's answers on real blends).
    """
    __tracebackhide__ = True
    from lab.defenses.detectors import entropy_bits

    exercise = "07 strip_entropy_bits"
    cases = [_probability_rows(np.random.default_rng(seed), 6, 5, 7)]
    if probabilities is not None:
        cases.append(np.asarray(probabilities, np.float64))
    for p in cases:
        found = np.asarray(_call(exercise, strip_entropy_bits, p.copy()), np.float64)
        per_blend = entropy_bits(p)
        expected = per_blend.mean(axis=1)
        if found.shape != expected.shape:
            _fail(exercise, f"expected one entropy per input, shape {expected.shape} (n,), found shape {found.shape}")
        if not np.isfinite(found).all():
            _fail(exercise, "found nan or inf: a class with probability 0 contributes 0 (0 log 0 = 0), not nan")
        if np.allclose(found, expected, rtol=1e-6, atol=1e-9):
            continue
        if np.allclose(found, expected * np.log(2.0), rtol=1e-6, atol=1e-9):
            _fail(exercise, "these are nats: STRIP's entropy is in bits, log base 2 (np.log2)")
        if np.allclose(found, per_blend.sum(axis=1), rtol=1e-6, atol=1e-9):
            _fail(exercise, "summed over the K blends: H(x) is their MEAN (divide by K)")
        if np.allclose(found, entropy_bits(p.mean(axis=1)), rtol=1e-6, atol=1e-9):
            _fail(exercise, "that is the entropy of the averaged prediction; H(x) averages each blend's entropy")
        if np.allclose(found, -expected, rtol=1e-6, atol=1e-9):
            _fail(exercise, "wrong sign: entropy is -sum p log2 p, which is >= 0")
        _fail(exercise, f"expected {np.round(expected[:4], 4).tolist()} ... (bits, mean over blends), "
                        f"found {np.round(found[:4], 4).tolist()} ...")
    return "ok: strip_entropy_bits matches the lab's on crafted probabilities" + (" and on B's blends" if len(cases) > 1 else "")


def check_strip_threshold(strip_threshold, clean_entropy=None, seed: int = 0) -> str:
    """``strip_threshold(clean_entropy, frr)`` -> tau: flags (H < tau) at most ``frr`` % of the clean inputs.

    The lab's rule (:func:`lab.defenses.detectors.fit_strip`): tau is the
    ``frr`` % quantile of the clean entropies (``method="lower"``), so at most
    ``frr`` % of them fall strictly below it. A tau passes when it flags at
    least the clean inputs the lab's rule flags and no more than the budget
    allows (a linearly interpolated quantile may flag one more, still within it).
    """
    __tracebackhide__ = True
    exercise = "07 strip_threshold"
    rng = np.random.default_rng(seed)
    cases = [(rng.gamma(4.0, 0.5, size=200), 1.0), (rng.gamma(4.0, 0.5, size=200), 10.0),
             (rng.uniform(0.0, 3.0, size=37), 5.0)]
    if clean_entropy is not None:
        cases.append((np.asarray(clean_entropy, np.float64), 1.0))
    for entropy, frr in cases:
        tau = float(_call(exercise, strip_threshold, entropy.copy(), frr))
        reference = float(np.quantile(entropy, frr / 100.0, method="lower"))
        flagged, expected = entropy < tau, entropy < reference
        allowed = int(np.floor(frr / 100.0 * len(entropy) + 1e-9))  # the most clean inputs the budget lets it flag
        if expected.sum() <= flagged.sum() <= allowed:
            continue
        share = 100.0 * flagged.mean()
        if np.array_equal(flagged, entropy < np.quantile(entropy, 1.0 - frr / 100.0, method="lower")):
            _fail(exercise, f"tau flags {share:.1f} % of the clean inputs: that is the upper tail; STRIP flags LOW "
                            f"entropy (too certain), so tau is the {frr:g} % quantile, not the {100 - frr:g} % one")
        if share > 50 and abs(share - min(100.0, frr * 100.0)) < 5:
            _fail(exercise, f"tau flags {share:.1f} % of the clean inputs: frr is in percent, np.quantile wants a "
                            "fraction (divide by 100)")
        if share > frr:
            _fail(exercise, f"tau flags {share:.1f} % of the clean inputs (H < tau), over the budget of {frr:g} %")
        _fail(exercise, f"tau flags {share:.1f} % of the clean inputs, the lab's rule {100.0 * expected.mean():.1f} %: "
                        f"take the largest tau that keeps at most {frr:g} % of them strictly below it")
    return "ok: strip_threshold keeps within the budget on crafted entropies" + (" and on B's" if len(cases) > 3 else "")
