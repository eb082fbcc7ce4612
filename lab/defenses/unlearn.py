"""Unlearning a trigger: train on stamped clean images with their true labels, distilling from B on the rest.

Shared by Neural Cleanse's mitigation and the lab's iterative
reverse-and-unlearn. One compiled training step (:class:`UnlearnTrainer`):
cross-entropy on every image of the batch (stamped ones keep their true
label) plus ``distill_weight * T^2 * KL(B_T || student_T)`` on the unstamped
ones, where ``P_T`` is the softmax at temperature T (Hinton et al. 2015).
The models end in a softmax, so ``log p`` serves as logits: ``p^(1/T)``
renormalised is the tempered softmax.
"""

from __future__ import annotations

import numpy as np

from lab.defenses.augment import AugmentConfig, augment
from lab.defenses.fitting import compiled_step, fit_keep_best, step_parts
from lab.io.data import Dataset


def begin(clean_valid: Dataset, holdout_fraction: float, seed: int):
    """The common start of a repair's ``fit``: ``(started, rng, train, holdout)``.

    ``started`` is :func:`lab.cache.clock`; ``rng`` the numpy generator of
    ``seed``; train / holdout the per-class split of the clean validation
    data (:func:`lab.defenses.holdout.split_validation`).
    """
    from lab.cache import clock
    from lab.defenses.holdout import split_validation

    started = clock()
    return (started, np.random.default_rng(seed), *split_validation(clean_valid, holdout_fraction, seed))


def finish(defense, student, details: dict, started: float):
    """The common end of a repair's ``fit``: metadata on ``student`` and its :class:`DefenseResult`."""
    from lab.cache import clock
    from lab.defenses.base import DefenseResult

    student.metadata.update(defense=defense.name, best_epoch=details["best_epoch"])
    return DefenseResult(defense.name, defense.kind, student, clock() - started, details, student)


def copy_model(model):
    """A trainable copy of a ``LoadedModel`` (same architecture, weights copied; metadata copied)."""
    from lab.defenses.surgery import clone_model

    return clone_model(model)


class UnlearnTrainer:
    """Compiled training of ``student`` (a ``LoadedModel``) with optional distillation from ``teacher``.

    learning_rate: Adam's rate, cosine-decayed to 0 over ``total_steps``.
    temperature, distill_weight: the distillation term (weight 0: none).
    sharpness: > 0 makes every step an adaptive-SAM step of that radius
    (:func:`lab.defenses.fitting.sharpness_moves`; FT-SAM's rule applied to the unlearning loss).
    The step is :func:`lab.defenses.fitting.compiled_step` with one more
    input, the per-image weight of the distillation term (1 unstamped, 0 stamped).
    """

    def __init__(self, student, teacher=None, learning_rate: float = 1e-3, total_steps: int = 1000,
                 temperature: float = 2.0, distill_weight: float = 1.0, optimizer=None, sharpness: float = 0.0):
        import keras
        import tensorflow as tf

        self.student = student
        parts = step_parts(student, learning_rate, total_steps, optimizer)
        keras_model = parts.model
        self.optimizer = parts.optimizer
        teacher_model = teacher.model if teacher is not None and distill_weight else None
        t = np.float32(temperature)
        weight = np.float32(distill_weight)

        def tempered(probabilities):
            logits = tf.math.log(tf.maximum(probabilities, 1e-12)) / t
            return tf.nn.softmax(logits, axis=-1), tf.nn.log_softmax(logits, axis=-1)

        def loss_of(inputs, labels, clean_weight, teacher_out=None):
            probabilities = keras_model(inputs, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
            if teacher_out is not None:
                teacher_p, teacher_log = teacher_out
                _, student_log = tempered(probabilities)
                kl = tf.reduce_sum(teacher_p * (teacher_log - student_log), axis=-1)
                kl = tf.reduce_sum(kl * clean_weight) / tf.maximum(tf.reduce_sum(clean_weight), 1.0)
                loss = loss + weight * t * t * kl
            return loss

        def teacher_outputs(inputs, labels, clean_weight):
            return tempered(teacher_model(inputs, training=False))

        self._step = compiled_step(parts, loss_of, sharpness=sharpness,
                                   fixed=teacher_outputs if teacher_model is not None else None,
                                   more_spec=[tf.TensorSpec((None,), tf.float32)])

    def epoch(self, x: np.ndarray, y: np.ndarray, stamped: np.ndarray, batch_size: int,
              rng: np.random.Generator) -> float:
        """One pass over x (float32 (n, H, W, C) 0..255, already stamped where ``stamped`` is True); mean loss."""
        order = rng.permutation(len(x))
        clean_weight = (~np.asarray(stamped, bool)).astype(np.float32)
        losses = []
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            losses.append(float(self._step(x[rows], y[rows].astype(np.int64), clean_weight[rows])))
        return float(np.mean(losses)) if losses else float("nan")


# Light augmentation for unlearning: shift up to 2 pixels, horizontal flip, brightness +-10 %, Gaussian noise of
# standard deviation 4 pixel levels, no random erasing.
LIGHT_AUGMENT = AugmentConfig(max_shift=2, flip=True, brightness=0.1, noise=4.0, erase_probability=0.0)


def light_augment(x: np.ndarray, rng: np.random.Generator, config: AugmentConfig = LIGHT_AUGMENT) -> np.ndarray:
    """One augmented copy of x (float32 (n, H, W, 3) 0..255) by :func:`lab.defenses.augment.augment`."""
    return augment(x, rng, config)


def stamp_from_pool(x: np.ndarray, pool: list[tuple[np.ndarray, np.ndarray]], fraction: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stamp ``fraction`` of x with triggers drawn uniformly from ``pool`` ((mask (H,W,1), pattern (H,W,C)) pairs).

    Returns (stamped copy float32, bool (n,) which rows were stamped).
    """
    x = np.array(x, np.float32, copy=True)
    chosen = rng.random(len(x)) < fraction if pool else np.zeros(len(x), bool)
    if pool:
        which = rng.integers(0, len(pool), len(x))
        for index in np.flatnonzero(chosen):
            mask, pattern = pool[which[index]]
            x[index] = (1.0 - mask) * x[index] + mask * pattern
    return x, chosen


def percent_correct(model, dataset: Dataset) -> float:
    from lab.defenses.finepruning import _percent_correct

    return _percent_correct(model, dataset)


def train_keep_best(student, train: Dataset, holdout: Dataset, epochs: int, batch_size: int, step,
                    rng: np.random.Generator, augmentation: AugmentConfig | None = LIGHT_AUGMENT,
                    before_epoch=None) -> dict:
    """Run ``step(images, labels)`` (a compiled training step) over ``epochs`` passes; keep the best held-out epoch.

    ``before_epoch(epoch)`` runs first each epoch (e.g. an inner maximisation).
    Returns ``{"holdout_history", "best_epoch", "holdout_clean_accuracy"}``;
    ``student`` (a ``LoadedModel``) ends at the best epoch (1..epochs; later on ties).
    """
    def run_epoch(epoch):
        if before_epoch is not None:
            before_epoch(epoch)
        x = light_augment(train.x, rng, augmentation) if augmentation is not None else np.asarray(train.x, np.float32)
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            step(x[rows], train.y[rows].astype(np.int64))

    best, history = fit_keep_best(student.model, epochs, run_epoch, lambda epoch: percent_correct(student, holdout))
    return {"holdout_history": history, **best.summary()}
