"""NAD: Neural Attention Distillation (Li, Lyu, Koren, Lyu, Li, Ma: "Neural Attention Distillation: Erasing
Backdoor Triggers from Deep Neural Networks", ICLR 2021).

The paper: (1) fine-tune a copy of the backdoored model on the clean data
(the *teacher*, 10 epochs); (2) train the backdoored model (the *student*)
on the same clean data with cross-entropy plus an attention-distillation
loss at several layers: ``beta * || A_T / |A_T| - A_S / |A_S| ||^2`` with
the attention map ``A = mean_c |a_c|^p`` (p = 2) over the channels of a
layer's activation, flattened and L2-normalised; beta = 5000 per layer
(the paper's CIFAR value), 20 epochs.

Where the lab departs: DeepID has no residual groups, so attention is taken
at ``pool_2``, ``pool_3`` and ``conv_4`` (the three feature maps that feed
the head); the paper's SGD lr 0.1 (WideResNets with BatchNorm) is replaced
by the lab's Adam 1e-3 with cosine decay for both stages (DeepID has no
BatchNorm); the clean data are 6 images a class (the paper: 5 % of the
training set) with light augmentation, and the student's epoch is chosen
on the held-out part of the clean validation data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lab.io.data import Dataset
from lab.defenses.base import Defense, DefenseResult, register
from lab.defenses.augment import AugmentConfig
from lab.defenses.fitting import compiled_step, step_parts
from lab.defenses.unlearn import LIGHT_AUGMENT, begin, copy_model, finish, train_keep_best
from lab.constants import DEFAULT_SEED


@dataclasses.dataclass(frozen=True)
class NADConfig:
    """NAD's hyperparameters (the paper's unless the module docstring says otherwise)."""

    holdout_fraction: float = 1 / 3
    teacher_epochs: int = 10
    epochs: int = 20
    learning_rate: float = 1e-3
    batch_size: int = 32
    beta: float = 5000.0
    power: float = 2.0
    layers: tuple[str, ...] = ("pool_2", "pool_3", "conv_4")
    augment: AugmentConfig = LIGHT_AUGMENT


def _features(keras_model, layers):
    import keras

    return keras.Model(keras_model.inputs, [keras_model.output] + [keras_model.get_layer(n).output for n in layers])


def _steps(student, teacher, config: NADConfig, total_steps: int):
    import keras
    import tensorflow as tf

    student_net = _features(student.model, config.layers)
    teacher_net = _features(teacher.model, config.layers) if teacher is not None else None
    parts = step_parts(student, config.learning_rate, total_steps)
    beta, power = np.float32(config.beta), np.float32(config.power)

    def attention(a):
        a = tf.reduce_mean(tf.pow(tf.abs(a), power), axis=-1)
        return tf.math.l2_normalize(tf.reshape(a, (tf.shape(a)[0], -1)), axis=1)

    def loss_of(inputs, labels):
        outputs = student_net(inputs, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, outputs[0]))
        if teacher_net is not None:
            targets = teacher_net(inputs, training=False)
            for s, t in zip(outputs[1:], targets[1:]):
                loss = loss + beta * tf.reduce_mean(tf.square(attention(s) - attention(t)))
        return loss

    return compiled_step(parts, loss_of)


@register
class NAD(Defense):
    """Neural Attention Distillation (see the module docstring)."""

    name = "nad"
    kind = "repair"
    table_order = 90
    paper = "Li et al., Neural Attention Distillation: Erasing Backdoor Triggers from Deep Neural Networks, ICLR 2021"
    Config = NADConfig

    @classmethod
    def quick(cls, epochs=None, reverse_epochs=None, flow_restarts=None, holdout_fraction=1 / 3) -> dict:
        """``epochs`` for the student, half as many (at least one) for the teacher."""
        settings = {"holdout_fraction": holdout_fraction}
        if epochs is not None:
            settings.update(epochs=epochs, teacher_epochs=max(1, epochs // 2))
        return settings

    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        config = self.config
        started, rng, train, holdout = begin(clean_valid, config.holdout_fraction, seed)
        per_epoch = int(np.ceil(len(train) / config.batch_size))
        teacher = copy_model(badnet)
        teacher_log = train_keep_best(teacher, train, holdout, config.teacher_epochs, config.batch_size,
                                      _steps(teacher, None, config, per_epoch * config.teacher_epochs), rng,
                                      config.augment)
        student = copy_model(badnet)
        details = train_keep_best(student, train, holdout, config.epochs, config.batch_size,
                                  _steps(student, teacher, config, per_epoch * config.epochs), rng, config.augment)
        details["teacher_holdout_clean_accuracy"] = teacher_log["holdout_clean_accuracy"]
        return finish(self, student, details, started)
