"""GoodNet: the repaired network G built from a BadNet B and its pruned copy B'.

G has N+1 outputs. On an input x it answers B's class when B and B' agree
(argmax B(x) == argmax B'(x)) and class N ("backdoor") when they disagree.
Its output vector is B's probabilities with 0 appended when they agree,
and the one-hot vector of class N when they disagree, so it still sums to 1
and ``argmax`` is G's decision: the course's ``eval.py`` contract (load the
model, ``predict``, argmax, labels in [0, N]) holds unchanged.

G is one Keras functional model: B and B' are cloned as two separate
sub-graphs (layers prefixed ``badnet_`` and ``pruned_``, weights copied)
reading the same input, and the decision is written with ``keras.ops`` in
the graph, not a ``Lambda`` layer, so the ``.keras`` file loads with plain
``keras.models.load_model`` in default safe mode, without importing ``lab``.
G takes the same input as B: B and B' must share an input scale, and G's
metadata records it.

Targeted GoodNet (``targets``: the suspected target classes a clean-data
decision named, e.g. the gate of :mod:`lab.defenses.gate`): G flags an input
only where B and B' disagree *and* B's answer is a suspected target. A
backdoor sends its inputs to its target, so a disagreement elsewhere is
ordinary model noise (a repaired model that lost a point or two of clean
accuracy disagrees with B on that many clean images); those inputs keep B's
answer. No threshold is involved: the rule is fixed a priori, and the
targets come from clean data only. The targets are a non-trainable
``Dense`` layer (an indicator over B's one-hot answer) in the graph, so the
file still loads in safe mode.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from lab.constants import DEFAULT_SEED
from lab.defenses.base import Defense, DefenseResult, register, resolve_repair
from lab.errors import LabInputError

BADNET_PREFIX = "badnet_"
PRUNED_PREFIX = "pruned_"


def _renaming_clone(prefix: str):
    """A ``clone_function`` giving every cloned layer the name ``prefix + name``."""

    def clone(layer):
        config = layer.get_config()
        config["name"] = prefix + layer.name
        return type(layer).from_config(config)

    return clone


def _clone_on(keras_model, inputs, prefix: str):
    """``keras_model`` rebuilt on ``inputs`` with prefixed layer names and its weights copied; returns its output."""
    import keras

    clone = keras.models.clone_model(keras_model, input_tensors=inputs, clone_function=_renaming_clone(prefix))
    for layer in keras_model.layers:
        if layer.weights:
            clone.get_layer(prefix + layer.name).set_weights(layer.get_weights())
    return clone.output


def clone_on(keras_model, inputs, prefix: str):
    """``keras_model`` rebuilt on the tensor ``inputs`` with layer names ``prefix + name`` and its weights; its output.

    Two networks placed on one input this way can be combined with
    ``keras.ops`` into one functional model (04's exercise does it for G).
    """
    return _clone_on(keras_model, inputs, prefix)


def _check_pair(badnet, pruned) -> int:
    if badnet.input_scale != pruned.input_scale:
        raise LabInputError(pruned.path, f"the BadNet's input scale {badnet.input_scale!r} (B and B' must take the "
                            "same input)", repr(pruned.input_scale))
    if tuple(badnet.model.input_shape[1:]) != tuple(pruned.model.input_shape[1:]):
        raise LabInputError(pruned.path, f"input shape {tuple(badnet.model.input_shape[1:])} like the BadNet",
                            str(tuple(pruned.model.input_shape[1:])))
    if badnet.n_classes != pruned.n_classes:
        raise LabInputError(pruned.path, f"{badnet.n_classes} classes like the BadNet", str(pruned.n_classes))
    return badnet.n_classes


def check_targets(targets, n_classes: int, source=None) -> list[int]:
    """``targets`` as a sorted list of distinct ints in [0, N); one-line :class:`LabInputError` otherwise."""
    chosen = sorted({int(t) for t in targets})
    bad = [t for t in chosen if not 0 <= t < n_classes]
    if not chosen or bad:
        raise LabInputError(source, f"suspected target classes in 0..{n_classes - 1}",
                            repr(bad) if bad else "none")
    return chosen


def build_goodnet(badnet, pruned, name: str = "goodnet", targets=None):
    """G from B and B' (both ``LoadedModel``, N classes, same input scale); a ``LoadedModel`` with N+1 classes.

    G's input is B's input (float32 (n, 55, 47, 3) scaled as ``badnet.input_scale``);
    its output float32 (n, N+1) as described in the module docstring.
    ``metadata["backdoor_class"]`` is N. ``targets`` (suspected target
    classes): the targeted GoodNet, which flags only disagreements where B
    answers one of them (module docstring); ``metadata["targets"]`` records them.
    """
    import keras
    import numpy as np
    from keras import ops

    from lab.io.models import LoadedModel

    n_classes = _check_pair(badnet, pruned)
    inputs = keras.Input(shape=badnet.model.input_shape[1:], name="input")
    badnet_probabilities = _clone_on(badnet.model, inputs, BADNET_PREFIX)
    pruned_probabilities = _clone_on(pruned.model, inputs, PRUNED_PREFIX)
    badnet_answer = ops.argmax(badnet_probabilities, axis=-1)
    agree = ops.equal(badnet_answer, ops.argmax(pruned_probabilities, axis=-1))
    agree = ops.expand_dims(ops.cast(agree, badnet_probabilities.dtype), axis=-1)  # (n, 1): 1.0 agree, 0.0 not
    flag = 1.0 - agree
    if targets is not None:
        targets = check_targets(targets, n_classes)
        indicator = np.zeros((n_classes, 1), np.float32)
        indicator[targets] = 1.0
        suspected = keras.layers.Dense(1, use_bias=False, trainable=False, name="suspected_targets")
        on_target = suspected(ops.one_hot(badnet_answer, n_classes, dtype=badnet_probabilities.dtype))
        suspected.set_weights([indicator])
        flag = flag * on_target  # (n, 1): 1.0 only where they disagree and B answers a suspected target
    outputs = ops.concatenate([badnet_probabilities * (1.0 - flag), flag], axis=-1)
    goodnet = keras.Model(inputs, outputs, name=name)
    metadata = {"backdoor_class": n_classes, "badnet": badnet.path, "pruned": pruned.path}
    if targets is not None:
        metadata["targets"] = targets
    return LoadedModel(goodnet, badnet.input_scale, None, f"the BadNet's ({badnet.scale_source})", metadata)


def check_goodnet_path(path: str | os.PathLike) -> Path:
    """``path`` if it names a ``.keras`` file (the ops in G's graph need the native format); one line otherwise."""
    path = Path(path)
    if path.suffix != ".keras":
        raise LabInputError(path, "a GoodNet file name ending in .keras (the ops in its graph need the native format)",
                            f"suffix {path.suffix or 'none'!r}")
    return path


def save_goodnet(goodnet, path: str | os.PathLike, force: bool = False) -> Path:
    """Save G (a ``LoadedModel`` from :func:`build_goodnet`) as ``.keras`` with the lab's metadata beside it.

    The metadata records the input scale and ``backdoor_class`` (N), which
    ``lab.evaluation`` reads to report detection and false-positive rates.
    """
    from lab.io.models import save_model

    path = check_goodnet_path(path)
    n_classes = goodnet.metadata["backdoor_class"]
    return save_model(goodnet.model, path, goodnet.input_scale,
                      f"GoodNet: B's class when B and B' agree, class {n_classes} (backdoor) otherwise",
                      force=force, extra=dict(goodnet.metadata))


@register
class GoodNetDefense(Defense):
    """G(B, R): B's answer where B and a repaired model R agree, class N where they disagree (a detector)."""

    name = "goodnet"
    kind = "detector"
    table_order = 40
    paper = "NYU ML for Cyber Security Lab 3 / CSAW-HackML 2020 (after Liu, Dolan-Gavitt, Garg, Fine-Pruning, RAID 2018)"
    wraps_repair = True
    takes_targets = True

    @dataclasses.dataclass(frozen=True)
    class Config:
        """repair: the repair R, a registered repair's name (fit with ``repair_config``, None: its defaults)
        or a :class:`DefenseResult` already fit on the same B and clean data (its seconds are counted).
        suspects_only: the targeted GoodNet on the suspected targets the repair named from clean data
        (``auto``, ``neural-cleanse``, ``reverse-unlearn``, or a given repair whose details carry
        ``targets``); when it named none (``auto``'s gate said clean, so R is B) G is the plain one.
        The config takes no class numbers: a defense gets nothing but B and clean data."""

        repair: Any = "pruning"
        repair_config: Any = None
        suspects_only: bool = False

    @classmethod
    def detect_config(cls, options: dict):
        """``detect --method goodnet``: G on the given R; with ``--targets`` the targeted GoodNet."""
        return cls.Config(repair=options["repair"], suspects_only=bool(options["targets"]))

    def fit(self, badnet, clean_valid, seed: int = DEFAULT_SEED) -> DefenseResult:
        from lab.defenses.base import REGISTRY

        repair = resolve_repair(self.config.repair, self.config.repair_config, badnet, clean_valid, seed)
        started = time.perf_counter()
        targets = None
        if self.config.suspects_only:
            if repair.backdoored is None:
                deciding = ", ".join(name for name, defense in REGISTRY.items() if defense.decides)
                raise LabInputError(None, f"a repair that names suspected targets ({deciding}) for suspects_only",
                                    repair.name)
            targets = list(repair.targets) or None
        goodnet = build_goodnet(badnet, repair.model, targets=targets)
        return DefenseResult(self.name, self.kind, goodnet, repair.seconds + time.perf_counter() - started,
                             {"repair": repair.name, "repair_result": repair, "targets": targets})
