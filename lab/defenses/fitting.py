"""The training core of the defenses that train: keep the best held-out epoch, and the parts of a compiled step.

:class:`BestEpoch` is the one rule by which every training loop of
:mod:`lab.defenses` chooses its epoch; :func:`step_parts` is what every
compiled training step starts from (the model, its trainable variables, a
built optimizer, the input scale and the input signature).

The defenses that train (fine-tuning and fine-pruning, the unlearning loops,
and every repair built on :func:`lab.defenses.unlearn.train_keep_best`)
train for a number of epochs and keep the weights of the epoch with the
highest clean held-out accuracy (a later epoch wins a tie), computed on the
held-out part of the clean validation split that never trains
(:func:`lab.defenses.holdout.split_validation`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class BestEpoch:
    """The weights of ``keras_model`` at the epoch with the highest score offered so far.

    ``offer(epoch, score)`` after each epoch (a score >= the best so far
    wins, so a later epoch wins a tie); ``restore()`` puts the kept weights
    back (nothing kept: the model stays as it is). ``epoch`` is 0 and
    ``score`` -inf until an epoch is kept.
    """

    def __init__(self, keras_model):
        self.model = keras_model
        self.epoch = 0
        self.score = -np.inf
        self.weights = None

    def offer(self, epoch: int, score: float) -> bool:
        """Keep this epoch's weights if ``score`` is at least the best so far; True when kept."""
        if score < self.score:
            return False
        self.epoch, self.score, self.weights = epoch, score, [w.copy() for w in self.model.get_weights()]
        return True

    def restore(self) -> None:
        """Set the model to the kept epoch's weights (no-op when none was kept)."""
        if self.weights is not None:
            self.model.set_weights(self.weights)

    def summary(self) -> dict:
        """``{"best_epoch", "holdout_clean_accuracy"}`` (the kept score as a float) for a defense's details."""
        return {"best_epoch": self.epoch, "holdout_clean_accuracy": float(self.score)}


@dataclasses.dataclass
class StepParts:
    """What a compiled training step on a ``LoadedModel`` needs.

    model: its Keras model; variables: the model's trainable variables;
    optimizer: built on those variables; scale: float32 factor from pixels
    0..255 to the model's input; shape: the input shape (H, W, C); spec: the
    ``tf.function`` input signature of (images float32 (b, H, W, C), labels int64 (b,)).
    """

    model: Any
    variables: list
    optimizer: Any
    scale: np.float32
    shape: tuple
    spec: list


def step_parts(student, learning_rate: float | None = None, total_steps: int = 1, optimizer=None) -> StepParts:
    """:class:`StepParts` for ``student`` (a ``LoadedModel``).

    ``optimizer``: used as given; else Adam with ``learning_rate`` decayed to 0
    by a cosine over ``total_steps`` (the lab's schedule for every repair
    that fine-tunes). Either way it is built on the trainable variables.
    """
    import keras
    import tensorflow as tf

    from lab.io.models import SCALES

    model = student.model
    variables = model.trainable_variables
    if optimizer is None:
        optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps)))
    optimizer.build(variables)
    shape = tuple(int(d) for d in model.input_shape[1:])
    spec = [tf.TensorSpec((None, *shape), tf.float32), tf.TensorSpec((None,), tf.int64)]
    return StepParts(model, variables, optimizer, np.float32(SCALES[student.input_scale]), shape, spec)
