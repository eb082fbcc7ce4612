"""Universal adversarial perturbations from clean data: one bounded pattern that fools a model on many images.

For a BadNet the easiest universal perturbation is the one that imitates
the trigger, so unlearning it (training on perturbed images with their true
labels, in the spirit of I-BAU, Zeng et al. 2022) reaches a backdoor without
knowing the trigger, the target or any poisoned image.
"""

from __future__ import annotations

import numpy as np

from lab.constants import DEFAULT_SEED


class PerturbationSearch:
    """Finds universal perturbations for one model; its compiled step is traced once and reused every epoch."""

    def __init__(self, model, epsilon: float = 32.0, step_size: float | None = None):
        import keras
        import tensorflow as tf

        from lab.io.models import SCALES

        self.epsilon = float(epsilon)
        height, width, channels = (int(d) for d in model.model.input_shape[1:])
        self.delta = tf.Variable(np.zeros((height, width, channels), np.float32), trainable=False)
        scale = np.float32(SCALES[model.input_scale])
        step_size = np.float32(epsilon / 4.0 if step_size is None else step_size)  # pixels per sign step
        keras_model, delta = model.model, self.delta

        @tf.function(input_signature=[tf.TensorSpec((None, height, width, channels), tf.float32),
                                      tf.TensorSpec((None,), tf.int64)], autograph=False)
        def ascend(images, labels):
            with tf.GradientTape() as tape:
                tape.watch(delta)  # not a trainable variable, so not watched by default
                probabilities = keras_model(tf.clip_by_value(images + delta, 0.0, 255.0) * scale, training=False)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
            gradient = tape.gradient(loss, delta)
            delta.assign(tf.clip_by_value(delta + step_size * tf.sign(gradient), -epsilon, epsilon))
            return loss

        self._ascend = ascend

    def __call__(self, x: np.ndarray, y: np.ndarray, steps: int = 10, batch_size: int = 64,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        """A fresh search from zero on ``x`` (float32 (n, H, W, 3), 0..255) with labels ``y``; float32 (H, W, 3)."""
        rng = rng or np.random.default_rng(DEFAULT_SEED)
        self.delta.assign(np.zeros(self.delta.shape, np.float32))
        labels = np.asarray(y, np.int64)
        for _ in range(steps):
            chosen = rng.choice(len(x), min(batch_size, len(x)), replace=False)
            self._ascend(np.asarray(x[chosen], np.float32), labels[chosen])
        return self.delta.numpy()


def universal_perturbation(model, x: np.ndarray, y: np.ndarray, epsilon: float = 32.0, steps: int = 10,
                           batch_size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """One perturbation for all images that makes ``model`` misclassify clean images: float32 (H, W, 3), pixels.

    Sign-gradient ascent on the mean cross-entropy of ``model`` (a
    ``LoadedModel``) over random batches of ``x`` (float32 (n, H, W, 3),
    0..255) with true labels ``y``, kept within ``[-epsilon, epsilon]``.
    Uses clean data only; for a BadNet the easiest universal perturbation
    is the one that imitates the trigger, which is what makes it useful for
    unlearning. ``steps=0`` returns zeros.
    """
    return PerturbationSearch(model, epsilon)(x, y, steps, batch_size, rng)
