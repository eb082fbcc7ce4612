"""FST: feature shift tuning (Min, Qi, Ye, Chen, Tang: "Towards Stable Backdoor Purification through Feature
Shift Tuning", NeurIPS 2023).

The paper: plain fine-tuning on clean data barely moves the features a
backdoor uses, because the old classification head still fits them. FST
re-initialises the last dense layer (the head, weights ``W``), then
fine-tunes the whole network on the clean data with

    loss = CE(f(x), y) + alpha * <W, W_orig>

where ``<W, W_orig>`` is the inner product (sum of element-wise products)
of the new head's kernel with the original head's: minimising it pushes the
new head away from the original one, so the features under it shift. After
every step ``W`` is rescaled to the original kernel's Frobenius norm
(``W <- W * |W_orig| / |W|``), so the penalty cannot be lowered by growing
``W``. The paper's alpha is 0.1 to 0.2 and it trains 10 epochs.

Where the lab departs: the lab's Adam with cosine decay instead of SGD (as
for NAD and FT-SAM here), light augmentation, the new kernel drawn
Glorot-uniform (Keras' default for Dense) from the seed and scaled to the
original norm from the start, the bias reset to zero; the epoch is chosen on
the held-out part of the clean validation data (poisoned data never chooses
anything). Shapes (DeepID): the head ``output`` has kernel (160, N), bias (N,).
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
from lab.errors import LabInputError


@dataclasses.dataclass(frozen=True)
class FSTConfig:
    """FST's hyperparameters: ``alpha`` weighs the head's alignment ``<W, W_orig>`` with the original head;
    ``head``: the dense layer re-initialised (None: the model's last Dense layer, DeepID's ``output``);
    epochs / learning_rate / batch_size / augment: the fine-tuning of the whole network on clean data."""

    holdout_fraction: float = 1 / 3
    alpha: float = 0.2
    head: str | None = None
    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 32
    augment: AugmentConfig = LIGHT_AUGMENT


def head_layer(keras_model, name: str | None = None):
    """The dense layer FST re-initialises: ``name``, else the last ``keras.layers.Dense`` of the model."""
    import keras

    if name is not None:
        return keras_model.get_layer(name)
    dense = [layer for layer in keras_model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise LabInputError(None, "a model with a Dense output layer for FST to re-initialise",
                            f"layers {[type(layer).__name__ for layer in keras_model.layers]}")
    return dense[-1]


def reinitialise_head(head, rng: np.random.Generator) -> np.ndarray:
    """Draw a new kernel for ``head`` (Glorot-uniform, scaled to the old kernel's norm), bias 0; return the old kernel.

    Returns float32 (fan_in, fan_out), a copy of the kernel before.
    """
    weights = head.get_weights()
    original = np.array(weights[0], np.float32, copy=True)
    fan_in, fan_out = original.shape
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    fresh = rng.uniform(-limit, limit, original.shape).astype(np.float32)
    fresh *= np.float32(np.linalg.norm(original) / max(np.linalg.norm(fresh), 1e-12))
    head.set_weights([fresh] + [np.zeros_like(w) for w in weights[1:]])
    return original


def fst_step(student, head, original_kernel: np.ndarray, config: FSTConfig, total_steps: int):
    """A compiled FST step on ``student`` (a ``LoadedModel``): CE + alpha <W, W_orig>, then W rescaled to |W_orig|.

    images float32 (b, H, W, C) 0..255, labels int64 (b,) -> the batch's loss.
    """
    import keras
    import tensorflow as tf

    parts = step_parts(student, config.learning_rate, total_steps)
    model = parts.model
    alpha = np.float32(config.alpha)
    original = tf.constant(original_kernel, tf.float32)
    norm = tf.constant(np.linalg.norm(original_kernel), tf.float32)
    kernel = head.kernel

    def loss_of(inputs, labels):
        outputs = model(inputs, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, outputs))
        return loss + alpha * tf.reduce_sum(kernel * original)

    def rescale():  # back to the original norm
        kernel.assign(kernel * (norm / tf.maximum(tf.norm(kernel), 1e-12)))

    return compiled_step(parts, loss_of, after=rescale)


@register
class FST(Defense):
    """Feature shift tuning: a fresh head pushed away from the original one while the network fine-tunes."""

    name = "fst"
    kind = "repair"
    table_order = 105
    paper = "Min et al., Towards Stable Backdoor Purification through Feature Shift Tuning, NeurIPS 2023"
    Config = FSTConfig
    quick_epochs = "epochs"

    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        config = self.config
        started, rng, train, holdout = begin(clean_valid, config.holdout_fraction, seed)
        student = copy_model(badnet)
        head = head_layer(student.model, config.head)
        original = reinitialise_head(head, rng)
        steps = int(np.ceil(len(train) / config.batch_size)) * config.epochs
        details = train_keep_best(student, train, holdout, config.epochs, config.batch_size,
                                  fst_step(student, head, original, config, steps), rng, config.augment)
        kept = head.get_weights()[0]
        # Both kernels have the original norm, so this is the cosine between the kept head and the original.
        details.update(head=head.name, head_norm=float(np.linalg.norm(original)),
                       head_cosine=float(np.sum(kept * original) / max(float(np.sum(original * original)), 1e-12)))
        return finish(self, student, details, started)
