"""The training core of the defenses that train: keep the best held-out epoch, and the compiled step.

:class:`BestEpoch` is the one rule by which every training loop of
:mod:`lab.defenses` chooses its epoch, and :func:`fit_keep_best` the one
loop that applies it (epoch by epoch, then back to the kept epoch);
:func:`step_parts` is what every compiled training step starts from (the
model, its trainable variables, a built optimizer, the input scale and the
input signature), and :func:`compiled_step` builds the step itself: input
scaled, loss taped over the variables that train, an optional (A)SAM
sharpness step (Foret et al. 2021; Kwon et al. 2021), gradients applied.
The variables that train default to the model's weights; a defense that
trains something else (masks on neurons, as ANP does, Wu and Wang 2021)
passes its own variables and an optimizer for them.

The defenses that train (fine-tuning and fine-pruning, the unlearning loops,
and every repair built on :func:`lab.defenses.unlearn.train_keep_best`)
train for a number of epochs and keep the weights of the epoch with the
highest clean held-out accuracy (a later epoch wins a tie), computed on the
held-out part of the clean validation split that never trains
(:func:`lab.defenses.holdout.split_validation`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

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


def fit_keep_best(keras_model, epochs: int, run_epoch: Callable[[int], Any], score: Callable[[int], float],
                  row: Callable[[int, Any, float], Any] | None = None,
                  progress: str | None = None) -> tuple[BestEpoch, list]:
    """Train ``keras_model`` epoch by epoch and end at its best held-out epoch: the lab's one training loop.

    ``run_epoch(epoch)`` trains one epoch (1..``epochs``) and returns what
    the history records of it (a loss, a dict, None). ``score(epoch)`` is
    the score that chooses, taken on the model as it is after that epoch
    (and once before training, as epoch 0): the held-out clean accuracy, or
    ``epoch`` itself where there is no held-out data (the last epoch wins).
    ``row(epoch, trained, score)`` makes the history's entry of an epoch
    (``trained`` is None at epoch 0); without it the entry is the score.
    ``progress``: a tqdm bar with that description over the epochs.

    Returns ``(best, history)``: the :class:`BestEpoch` whose weights the
    model now has (``best.epoch`` 1..epochs, the later on ties; 0 when
    ``epochs`` is 0 and the model is left as it is) and the history, one
    entry per epoch 0..epochs. The untrained start is recorded but never
    offered: by clean accuracy alone it would usually win and the defense
    would do nothing.
    """
    if row is None:
        def row(epoch, trained, value):
            return value

    history = [row(0, None, score(0))]
    best = BestEpoch(keras_model)
    numbers = range(1, epochs + 1)
    if progress:
        from tqdm.auto import tqdm

        numbers = tqdm(numbers, desc=progress, unit="epoch")
    for epoch in numbers:
        trained = run_epoch(epoch)
        value = score(epoch)
        history.append(row(epoch, trained, value))
        best.offer(epoch, value)
    best.restore()
    return best, history


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

    def compile(self, function, *more_spec):
        """``function(images, labels, *more)`` as a ``tf.function`` on :attr:`spec` plus ``more_spec``.

        Autograph is off: a step is a straight graph (Python ``if``s on
        settings are decided once, when it is traced).
        """
        import tensorflow as tf

        return tf.function(function, input_signature=[*self.spec, *more_spec], autograph=False)


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


def sharpness_moves(variables, gradients, rho: float, adaptive: bool = True):
    """(A)SAM's weight perturbation (Foret et al. 2021; adaptive: Kwon et al. 2021), one tensor per variable.

    ``e = rho * T^2 g / |T g|`` with ``T = |w|`` element-wise (adaptive), else
    ``rho * g / |g|``. Used in a TensorFlow graph: add ``e``, take the gradient
    there, subtract ``e``, step with that gradient (FT-SAM, :mod:`lab.defenses.ft_sam`).
    """
    import tensorflow as tf

    if adaptive:
        scaled = [tf.abs(v) * g for v, g in zip(variables, gradients)]
        norm = tf.linalg.global_norm(scaled) + 1e-12
        return [rho * tf.abs(v) * s / norm for v, s in zip(variables, scaled)]
    norm = tf.linalg.global_norm(gradients) + 1e-12
    return [rho * g / norm for g in gradients]


def at_sharpest(variables, gradients, rho: float, again, adaptive: bool = True):
    """``again()`` evaluated at the sharpest nearby weights: add :func:`sharpness_moves`, call, take them off.

    ``again`` returns ``(loss, gradients)`` at the current weights; one (A)SAM
    step then applies those gradients from the original weights.
    """
    moves = sharpness_moves(variables, gradients, rho, adaptive)
    for v, e in zip(variables, moves):
        v.assign_add(e)
    result = again()
    for v, e in zip(variables, moves):
        v.assign_sub(e)
    return result


def compiled_step(parts: StepParts, loss_fn, variables=None, optimizer=None, sharpness: float = 0.0,
                  adaptive: bool = True, fixed=None, after=None, more_spec=()):
    """One compiled training step: ``step(images, labels, *more) -> loss`` (a float32 scalar tensor).

    images float32 (b, H, W, C) in pixels 0..255, labels int64 (b,), then
    one tensor per ``more_spec`` entry (e.g. a per-image weight float32
    (b,)). In one graph: ``inputs = images * parts.scale`` (the model's
    input scale), ``loss = loss_fn(inputs, labels, *more)`` under a
    gradient tape over ``variables``, the optimizer step, then ``after()``
    (a projection run after every update: pruned channels back to zero, a
    kernel back to its norm).

    variables: what trains (default ``parts.variables``, the model's
    trainable weights; a mask-training defense passes its mask variables).
    optimizer: default ``parts.optimizer``; give one for other
    ``variables`` (it is built on them here if it is not built yet).
    sharpness: > 0 makes the step an (A)SAM step of that radius
    (:func:`at_sharpest`: the gradient is taken again at the sharpest
    nearby point and applied from the original weights; the loss returned
    is the one there); ``adaptive`` as in :func:`sharpness_moves`.
    fixed: ``fixed(inputs, labels, *more)`` computed once per step before
    the tape (e.g. a teacher's outputs, which do not train, shared by both
    gradients of a sharpness step) and passed to ``loss_fn`` as one more
    last argument.
    """
    import tensorflow as tf

    variables = parts.variables if variables is None else list(variables)
    if optimizer is None:
        optimizer = parts.optimizer
    elif not optimizer.built:
        optimizer.build(variables)
    scale = parts.scale
    rho = np.float32(sharpness)

    def gradient(inputs, labels, *more):
        with tf.GradientTape() as tape:
            loss = loss_fn(inputs, labels, *more)
        return loss, tape.gradient(loss, variables)

    def step(images, labels, *more):
        inputs = images * scale
        if fixed is not None:
            more = (*more, fixed(inputs, labels, *more))
        loss, gradients = gradient(inputs, labels, *more)
        if sharpness > 0:  # ascend to the sharpest nearby weights, take the gradient there, come back
            loss, gradients = at_sharpest(variables, gradients, rho, lambda: gradient(inputs, labels, *more),
                                          adaptive)
        optimizer.apply_gradients(zip(gradients, variables))
        if after is not None:
            after()
        return loss

    return parts.compile(step, *more_spec)
