"""Finding the trigger from clean data: where universal perturbations flow, and Neural Cleanse reverse engineering.

Two tools shared by the repair defenses (:mod:`lab.defenses.neural_cleanse`,
:mod:`lab.defenses.reverse_unlearn`, :mod:`lab.defenses.gate`):

- :func:`perturbation_flow`: untargeted universal perturbations of clean
  images (L-infinity ``epsilon`` pixels, sign-gradient steps; the search of
  :class:`lab.defenses.perturbation.PerturbationSearch`). For a BadNet, the images
  pushed out of their class land almost all in the target class (the
  perturbation imitates the trigger); for a clean model they scatter. The
  landing counts rank candidate targets and their concentration says
  "backdoored or not". The cost does not depend on the number of classes.
- :class:`TriggerReverser`: Neural Cleanse's optimisation (Wang et al.,
  "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
  Networks", IEEE S&P 2019) for K candidate targets at once in one compiled
  step: mask ``m = (tanh a + 1) / 2`` over H x W, pattern
  ``p = 255 (tanh b + 1) / 2``, stamped ``x' = (1 - m) x + m p``, loss
  ``CE(model(x'), target) + c |m|_1``, Adam (lr 0.1, betas 0.5 / 0.9, the
  paper's values), with the paper's cost schedule (:func:`reverse_triggers`).
- :func:`masked_flow`: the same question asked with small *masked*
  triggers (Neural Cleanse's optimisation with no target: push images out
  of their own class); it finds patch triggers the L-infinity flow misses.
- :func:`anomaly_index`: the paper's MAD outlier test on mask L1 norms.

Pixels are 0..255 throughout; the model's input scale is applied inside.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lab.constants import DEFAULT_SEED

MAD_CONSISTENCY = 1.4826  # MAD -> standard deviation for normal data (the paper's constant)


# ---------------------------------------------------------------- where perturbations flow


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Untargeted universal perturbations: where clean images go when pushed out of their class.

    epsilon: L-infinity bound (pixels); restarts x steps sign-gradient steps of
    ``step_size`` pixels on random batches of ``batch_size`` clean images;
    max_images: at most this many images are searched and counted (cost stays
    flat at 1283 classes).
    """

    epsilon: float = 32.0
    step_size: float = 4.0
    restarts: int = 5
    steps: int = 40
    batch_size: int = 64
    max_images: int = 2000


@dataclasses.dataclass
class Flow:
    """Where clean images pushed out of their class by universal perturbations landed.

    counts: int64 (n_classes,), landings per class summed over restarts;
    pushed_out: images (x restarts) that left their true class; n_images:
    images searched x restarts; ranking: classes by decreasing count (ties by index).
    """

    counts: np.ndarray
    pushed_out: int
    n_images: int
    ranking: np.ndarray

    @property
    def top(self) -> int:
        return int(self.ranking[0])

    @property
    def concentration(self) -> float:
        """Share of pushed-out images that landed in the top class (0 when none left its class)."""
        return float(self.counts.max() / self.pushed_out) if self.pushed_out else 0.0

    def share(self, label: int) -> float:
        return float(self.counts[label] / self.pushed_out) if self.pushed_out else 0.0


def perturbation_flow(model, x: np.ndarray, y: np.ndarray, config: FlowConfig = FlowConfig(),
                      rng: np.random.Generator | None = None) -> Flow:
    """Rank candidate targets of ``model`` (a ``LoadedModel``) from clean ``x`` (float32 (n, H, W, 3), 0..255), ``y``.

    Computed once per identical model, data, config and ``rng`` state
    (:func:`lab.cache.memoize`: 06 and 07 share it); ``rng`` ends where the
    computation leaves it either way.
    """
    rng = rng or np.random.default_rng(DEFAULT_SEED)
    return _memoized_flow("flow", model, x, y, config, lambda: _perturbation_flow(model, x, y, config, rng), rng)


def _memoized_flow(kind: str, model, x, y, config, compute, rng: np.random.Generator) -> Flow:
    """A :class:`Flow` computed once per identical model, data, config and ``rng`` state (:func:`lab.cache.memoize`)."""
    from lab import cache

    return cache.memoize(
        kind, [cache.model_parts(model), np.asarray(x), np.asarray(y), dataclasses.asdict(config)], compute,
        lambda flow: ([flow.counts, flow.ranking], {"pushed_out": flow.pushed_out, "n_images": flow.n_images}),
        lambda arrays, info: Flow(arrays[0], info["pushed_out"], info["n_images"], arrays[1]), rng)


def _at_most(x, y, max_images: int, rng: np.random.Generator):
    """At most ``max_images`` of ``x``, ``y`` (a random subset in file order; all when fewer)."""
    if len(x) > max_images:
        chosen = np.sort(rng.choice(len(x), max_images, replace=False))
        return x[chosen], y[chosen]
    return x, y


def _landings(model, y: np.ndarray, perturbed, n_images: int) -> Flow:
    """Count where each batch of ``perturbed`` images (an iterable, consumed in order) lands when it leaves ``y``."""
    counts = np.zeros(model.n_classes, np.int64)
    pushed = 0
    for images in perturbed:
        predicted = model.predict_labels(images)
        moved = predicted != y
        pushed += int(moved.sum())
        counts += np.bincount(predicted[moved], minlength=model.n_classes)
    ranking = np.lexsort((np.arange(len(counts)), -counts))
    return Flow(counts, pushed, n_images, ranking)


def _perturbation_flow(model, x, y, config: FlowConfig, rng: np.random.Generator) -> Flow:
    from lab.defenses.perturbation import PerturbationSearch

    x, y = _at_most(x, y, config.max_images, rng)
    search = PerturbationSearch(model, config.epsilon, config.step_size)
    perturbed = (np.clip(x + search(x, y, config.steps, config.batch_size, rng), 0.0, 255.0)
                 for _ in range(config.restarts))
    return _landings(model, y, perturbed, len(x) * config.restarts)


# ---------------------------------------------------------------- Neural Cleanse reverse engineering


@dataclasses.dataclass(frozen=True)
class ReverseConfig:
    """Neural Cleanse's optimisation and cost schedule (the paper's defaults unless noted).

    learning_rate / beta_1 / beta_2: Adam on the tanh logits (0.1, 0.5, 0.9).
    batch_size: 32. steps_per_epoch: mini-batches per "epoch" of the schedule
    (the paper: one pass over its data; the lab: a fixed count, so the cost
    does not grow with the data). epochs: at most this many epochs.
    init_cost: c once the attack succeeds; threshold: attack success (0.99)
    that counts as "succeeds"; patience: epochs before c changes
    (x ``cost_up`` 1.5 while succeeding, / ``cost_down`` 1.5^1.5 while not);
    early_stop_patience: stop after this many epochs without a 1 % smaller
    successful mask once c has moved both ways (the paper: 10 epochs).
    """

    learning_rate: float = 0.1
    beta_1: float = 0.5
    beta_2: float = 0.9
    batch_size: int = 32
    steps_per_epoch: int = 10
    epochs: int = 40
    init_cost: float = 1e-3
    threshold: float = 0.99
    patience: int = 5
    cost_up: float = 1.5
    cost_down: float = 1.5 ** 1.5
    early_stop_patience: int = 10


class TriggerReverser:
    """Reverse-engineers one mask + pattern per target, for K targets in one compiled step.

    model: ``LoadedModel`` (read at every call, so a model being trained is
    always attacked as it is now). targets: K class indices. Variables
    ``mask_logit`` (K, H, W, 1) and ``pattern_logit`` (K, H, W, C) persist
    between calls (warm starts); :meth:`reset_optimizer` zeroes Adam's moments
    (only the moments: the learning rate stays, unlike IBM ART's reset).

    ``away=True``: untargeted (:func:`masked_flow`): each of the K triggers
    pushes images out of their *true* class (loss ``-log(1 - p_true)``, which
    is bounded, instead of ``CE(target)``), and "success" is the share pushed
    out; ``targets`` only counts the K restarts and :meth:`run` needs ``y``.
    """

    def __init__(self, model, targets: Sequence[int], config: ReverseConfig = ReverseConfig(),
                 rng: np.random.Generator | None = None, away: bool = False):
        import keras
        import tensorflow as tf

        from lab.io.models import SCALES

        rng = rng or np.random.default_rng(DEFAULT_SEED)
        self.config = config
        self.away = away
        self.targets = np.asarray(targets, np.int64)
        k = len(self.targets)
        height, width, channels = (int(d) for d in model.model.input_shape[1:])
        # The paper's start: uniform random mask and pattern, mapped into tanh space.
        mask0 = np.arctanh((rng.random((k, height, width, 1)) - 0.5) * (2 - 1e-6))
        pattern0 = np.arctanh((rng.random((k, height, width, channels)) - 0.5) * (2 - 1e-6))
        self.mask_logit = tf.Variable(mask0.astype(np.float32), trainable=False)
        self.pattern_logit = tf.Variable(pattern0.astype(np.float32), trainable=False)
        self.cost = tf.Variable(np.zeros(k, np.float32), trainable=False)
        self._moments = [tf.Variable(tf.zeros_like(v), trainable=False)
                         for v in (self.mask_logit, self.pattern_logit) for _ in range(2)]
        self._t = tf.Variable(0.0, trainable=False)
        scale = np.float32(SCALES[model.input_scale])
        keras_model = model.model
        target_tensor = tf.constant(self.targets)
        lr, b1, b2 = (np.float32(v) for v in (config.learning_rate, config.beta_1, config.beta_2))
        variables = (self.mask_logit, self.pattern_logit)
        moments, step_count, cost = self._moments, self._t, self.cost

        @tf.function(input_signature=[tf.TensorSpec((None, height, width, channels), tf.float32),
                                      tf.TensorSpec((None,), tf.int64)], autograph=False)
        def step(images, true_labels):
            n = tf.shape(images)[0]
            labels = tf.tile(true_labels, [k]) if away else tf.repeat(target_tensor, n)
            with tf.GradientTape() as tape:
                tape.watch(variables)
                mask = (tf.tanh(self.mask_logit) + 1.0) / 2.0
                pattern = 255.0 * (tf.tanh(self.pattern_logit) + 1.0) / 2.0
                stamped = (1.0 - mask[:, None]) * images[None] + (mask * pattern)[:, None]
                flat = tf.reshape(stamped, (-1, height, width, channels))
                probabilities = keras_model(flat * scale, training=False)
                if away:  # push out of the true class: -log(1 - p_true), bounded below by 0
                    true_p = tf.gather(probabilities, labels, batch_dims=1)
                    ce = -tf.math.log(tf.maximum(1.0 - true_p, 1e-7))
                else:
                    ce = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
                ce = tf.reduce_mean(tf.reshape(ce, (k, n)), axis=1)
                l1 = tf.reduce_sum(mask, axis=(1, 2, 3))
                loss = tf.reduce_sum(ce + cost * l1)
            gradients = tape.gradient(loss, variables)
            step_count.assign_add(1.0)
            t = step_count
            for i, (variable, gradient) in enumerate(zip(variables, gradients)):
                m, v = moments[2 * i], moments[2 * i + 1]
                m.assign(b1 * m + (1 - b1) * gradient)
                v.assign(b2 * v + (1 - b2) * tf.square(gradient))
                m_hat = m / (1 - tf.pow(b1, t))
                v_hat = v / (1 - tf.pow(b2, t))
                variable.assign_sub(lr * m_hat / (tf.sqrt(v_hat) + 1e-8))
            landed = tf.equal(tf.argmax(probabilities, axis=-1), labels)
            hits = tf.reshape(tf.cast(tf.logical_not(landed) if away else landed, tf.float32), (k, n))
            return ce, l1, tf.reduce_mean(hits, axis=1)

        self._step = step

    def reset_optimizer(self) -> None:
        for moment in self._moments:
            moment.assign(np.zeros(moment.shape, np.float32))
        self._t.assign(0.0)

    def masks(self) -> np.ndarray:
        """float32 (K, H, W, 1) in [0, 1]."""
        return ((np.tanh(self.mask_logit.numpy()) + 1.0) / 2.0).astype(np.float32)

    def patterns(self) -> np.ndarray:
        """float32 (K, H, W, C) in 0..255."""
        return (255.0 * (np.tanh(self.pattern_logit.numpy()) + 1.0) / 2.0).astype(np.float32)

    def run(self, x: np.ndarray, steps: int, rng: np.random.Generator, cost: np.ndarray | float | None = None,
            y: np.ndarray | None = None):
        """``steps`` Adam steps on random batches of ``x`` (and true labels ``y``, needed ``away``).

        Returns mean (loss, l1, attack success) per target.
        """
        if self.away and y is None:
            raise ValueError("an untargeted (away) search needs the images' true labels")
        labels = np.zeros(len(x), np.int64) if y is None else np.asarray(y, np.int64)
        if cost is not None:
            self.cost.assign(np.broadcast_to(np.asarray(cost, np.float32), self.cost.shape))
        totals = np.zeros((3, len(self.targets)))
        for _ in range(steps):
            chosen = rng.choice(len(x), min(self.config.batch_size, len(x)), replace=False)
            ce, l1, hits = self._step(np.asarray(x[chosen], np.float32), labels[chosen])
            totals += np.stack([ce.numpy(), l1.numpy(), hits.numpy()])
        return totals / max(1, steps)


@dataclasses.dataclass
class ReversedTriggers:
    """Best (smallest successful) mask and pattern per target.

    targets: int64 (K,); masks float32 (K, H, W, 1) in [0, 1]; patterns
    float32 (K, H, W, C) 0..255; l1: float64 (K,) mask L1 norms (inf where the
    attack never reached the threshold); success: attack success of the kept
    trigger on the batches it was optimised on; epochs: epochs run.
    """

    targets: np.ndarray
    masks: np.ndarray
    patterns: np.ndarray
    l1: np.ndarray
    success: np.ndarray
    epochs: int

    def trigger(self, target: int) -> tuple[np.ndarray, np.ndarray]:
        index = int(np.flatnonzero(self.targets == target)[0])
        return self.masks[index], self.patterns[index]


def reverse_triggers(model, x: np.ndarray, targets: Sequence[int], config: ReverseConfig = ReverseConfig(),
                     rng: np.random.Generator | None = None) -> ReversedTriggers:
    """Neural Cleanse for ``targets`` on clean images ``x`` with the paper's cost schedule, all targets at once.

    Per target, per epoch of ``config.steps_per_epoch`` batches: c starts at 0
    and is set to ``init_cost`` once the attack has succeeded (mean attack
    success >= threshold) for ``patience`` epochs; then c is multiplied by
    ``cost_up`` after ``patience`` successful epochs and divided by
    ``cost_down`` after ``patience`` failing ones. The smallest successful
    mask is kept. All targets stop when each has stopped improving
    (early stop) or after ``config.epochs``.
    """
    from lab import cache

    rng = rng or np.random.default_rng(DEFAULT_SEED)
    targets = [int(t) for t in targets]
    return cache.memoize(
        "reverse", [cache.model_parts(model), np.asarray(x), targets, dataclasses.asdict(config)],
        lambda: _reverse_triggers(model, x, targets, config, rng),
        lambda found: ([found.targets, found.masks, found.patterns, found.l1, found.success], {"epochs": found.epochs}),
        lambda arrays, info: ReversedTriggers(*arrays, info["epochs"]), rng)


def _reverse_triggers(model, x, targets, config: ReverseConfig, rng: np.random.Generator,
                      y: np.ndarray | None = None) -> ReversedTriggers:
    """The schedule of :func:`reverse_triggers`; with true labels ``y``, untargeted (``away``) triggers."""
    reverser = TriggerReverser(model, targets, config, rng, away=y is not None)
    k = len(reverser.targets)
    cost = np.zeros(k)
    set_counter, up, down = np.zeros(k, int), np.zeros(k, int), np.zeros(k, int)
    best_l1 = np.full(k, np.inf)
    best_masks, best_patterns = reverser.masks(), reverser.patterns()
    best_success = np.zeros(k)
    moved_up, moved_down = np.zeros(k, bool), np.zeros(k, bool)
    stale = np.zeros(k, int)
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        _, l1_mean, success = reverser.run(x, config.steps_per_epoch, rng, cost, y)
        masks, patterns = reverser.masks(), reverser.patterns()
        l1_now = masks.reshape(k, -1).sum(axis=1)
        reached = success >= config.threshold
        improved = reached & (l1_now < best_l1 * 0.99)
        for i in np.flatnonzero(reached & (l1_now < best_l1)):
            best_l1[i], best_masks[i], best_patterns[i], best_success[i] = l1_now[i], masks[i], patterns[i], success[i]
        stale = np.where(improved, 0, stale + 1)
        starting = cost == 0
        set_counter = np.where(starting & reached, set_counter + 1, 0)
        start_now = starting & (set_counter >= config.patience)
        up = np.where(~starting & reached, up + 1, 0)
        down = np.where(~starting & ~reached, down + 1, 0)
        raise_now, lower_now = up >= config.patience, down >= config.patience
        cost = np.where(start_now, config.init_cost, cost)
        cost = np.where(raise_now, cost * config.cost_up, cost)
        cost = np.where(lower_now, cost / config.cost_down, cost)
        moved_up |= raise_now
        moved_down |= lower_now
        up, down = np.where(raise_now, 0, up), np.where(lower_now, 0, down)
        done = moved_up & moved_down & (stale >= config.early_stop_patience)
        if done.all():
            break
    return ReversedTriggers(reverser.targets, best_masks, best_patterns, best_l1, best_success, epoch)


def quick_schedules(reverse_epochs: int | None = None, flow_restarts: int | None = None):
    """``(FlowConfig, ReverseConfig)`` with ``flow_restarts`` searches and ``reverse_epochs`` epochs (None: default).

    The shortened trigger-reversal schedules of :meth:`lab.defenses.base.Defense.quick`.
    """
    flow = FlowConfig() if flow_restarts is None else FlowConfig(restarts=flow_restarts)
    reversal = ReverseConfig() if reverse_epochs is None else ReverseConfig(epochs=reverse_epochs)
    return flow, reversal


def quick_unlearning(epochs_field: str, epochs: int | None, reverse_epochs: int | None, flow_restarts: int | None,
                     holdout_fraction: float) -> dict:
    """The quick ``Config`` overrides of a repair that reverses triggers, then unlearns for ``epochs_field`` epochs."""
    flow, reversal = quick_schedules(reverse_epochs, flow_restarts)
    settings = {"holdout_fraction": holdout_fraction, "flow": flow, "reverse": reversal}
    if epochs is not None:
        settings[epochs_field] = epochs
    return settings


def stamp(x: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """``(1 - m) x + m p`` for images x float32 (n, H, W, C) 0..255, mask (H, W, 1), pattern (H, W, C)."""
    return ((1.0 - mask) * x + mask * pattern).astype(np.float32)


# ---------------------------------------------------------------- where small masked triggers flow


@dataclasses.dataclass(frozen=True)
class MaskedFlowConfig:
    """Untargeted Neural-Cleanse-style triggers (:func:`masked_flow`).

    restarts: independent triggers (random starts); reverse: their
    optimisation and cost schedule, where "success" is the share of images
    pushed out of their class (``threshold`` 0.9: a universal trigger need
    not move every face); max_images: at most this many images are searched
    and counted.
    """

    restarts: int = 3
    reverse: ReverseConfig = ReverseConfig(epochs=10, threshold=0.9, patience=1)
    max_images: int = 2000


def masked_flow(model, x: np.ndarray, y: np.ndarray, config: MaskedFlowConfig = MaskedFlowConfig(),
                rng: np.random.Generator | None = None) -> Flow:
    """Where clean images land when a small *masked* trigger pushes them out of their class.

    The L-infinity flow (:func:`perturbation_flow`) imitates triggers that a
    faint change over the whole face can: sunglasses, lipstick, blends. A
    high-contrast patch is not one of them. Here each of ``config.restarts`` triggers is Neural
    Cleanse's mask and pattern pushing images *out of their true class* (no
    target), with the paper's cost schedule at patience 1 so the mask
    shrinks within a few epochs; a small mask that moves most faces is the
    backdoor's shortcut wherever one exists. Landings of every restart's
    smallest successful trigger are pooled into a :class:`Flow`; restarts
    that never pushed out ``threshold`` of the images count nothing.

    A one-target BadNet sends most pushed-out images to its target; a clean
    model spreads them, though its easiest class can draw a fair share; an
    all-to-all BadNet has no single target and concentrates nowhere. The
    gate (:mod:`lab.defenses.gate`) uses it to rank one more candidate.
    Cost: one reversal of ``restarts`` classes for ``reverse.epochs``
    epochs, whatever the number of classes.
    """
    rng = rng or np.random.default_rng(DEFAULT_SEED)
    return _memoized_flow("masked-flow", model, x, y, config, lambda: _masked_flow(model, x, y, config, rng), rng)


def _masked_flow(model, x, y, config: MaskedFlowConfig, rng: np.random.Generator) -> Flow:
    x, y = _at_most(x, np.asarray(y, np.int64), config.max_images, rng)
    found = _reverse_triggers(model, x, np.full(config.restarts, -1), config.reverse, rng, y)
    stamped = (stamp(x, mask, pattern) for mask, pattern, l1 in zip(found.masks, found.patterns, found.l1)
               if np.isfinite(l1))  # a restart that never pushed out enough images counts nothing
    return _landings(model, y, stamped, len(x) * config.restarts)


def anomaly_index(l1: np.ndarray) -> np.ndarray:
    """Neural Cleanse's anomaly index per norm, how far BELOW the median: (median - l1) / (1.4826 MAD), float64 (K,).

    One-sided, as the paper's test is: a backdoor target needs an unusually
    SMALL mask, so a norm below the median gets a positive index and a norm
    above it a negative one (a large mask never looks like a target). Flag
    a target when its index exceeds 2. Infinite norms (never succeeded)
    count as the largest finite norm.
    """
    l1 = np.asarray(l1, np.float64)
    finite = np.where(np.isfinite(l1), l1, np.nanmax(np.where(np.isfinite(l1), l1, np.nan)) if np.isfinite(l1).any()
                      else 0.0)
    median = np.median(finite)
    mad = MAD_CONSISTENCY * np.median(np.abs(finite - median))
    if mad == 0:
        return np.zeros_like(finite)
    return (median - finite) / mad
