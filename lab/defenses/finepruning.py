"""Fine-pruning (Liu, Dolan-Gavitt, Garg 2018): prune, then fine-tune on clean validation data.

The defender has the BadNet B and clean validation data, nothing else. The
recipe, every step chosen from clean data only:

1. split the clean validation set per class into a fine-tuning part and a
   held-out part (:func:`split_validation`; default 2/3 and 1/3);
2. prune ``conv_3`` as in :mod:`lab.defenses.pruning`, ranking channels and picking
   the threshold on the fine-tuning part only;
3. fine-tune the pruned model on the fine-tuning part (:func:`fine_tune`);
   the pruned channels stay pruned: their kernel and bias are set back to
   exactly zero after every optimizer step (inside the compiled training step, so the saved model
   needs no custom constraint to load);
4. keep the epoch whose held-out clean accuracy is highest.

Poisoned data may be passed as ``report`` sets: their accuracy (for a
poisoned file, the attack success rate) is recorded per epoch for teaching
and never chooses anything.

What fine-tuning needs to reach a pruning-aware backdoor (``05_fine_pruning``
shows it on the embedded default): the paper's small learning rate
leaves it intact; a larger learning rate with augmentation removes most of it
but it creeps back as clean accuracy recovers. Two generic ingredients push
it further, both from clean data only: **random erasing** (a standard
augmentation; the default BadNet answers the target for many randomly
occluded faces, so correct labels on erased faces unlearn that shortcut) and
**universal-perturbation unlearning** (in the spirit of I-BAU, Zeng et al.
2022: each epoch, find one perturbation of bounded size that makes the
current model misclassify as many clean images as possible, which for a
BadNet points towards the trigger, and train on perturbed images with their
true labels). Neither uses the trigger, the target or poisoned data.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Sequence

import numpy as np

from lab.constants import DEFAULT_LAYER, DEFAULT_MEASURE, DEFAULT_SEED
from lab.defenses import pruning
from lab.defenses.augment import AugmentConfig, augment, random_erase  # noqa: F401  (lab.defenses.finepruning.augment)
from lab.defenses.base import Defense, DefenseResult, register
from lab.defenses.fitting import compiled_step, fit_keep_best, step_parts
from lab.defenses.holdout import split_validation
from lab.defenses.perturbation import PerturbationSearch, universal_perturbation  # noqa: F401
from lab.defenses.surgery import clone_model, zero_channels
from lab.errors import LabInputError
from lab.evaluation import metrics
from lab.io.data import Dataset

HEAD_LAYERS = ("fc_1", "fc_2", "output")


@dataclasses.dataclass(frozen=True)
class FineTuneConfig(AugmentConfig):
    """How :func:`fine_tune` trains. Pixel quantities are in 0..255 units.

    epochs: passes over the fine-tuning data (0: no training).
    learning_rate / schedule: Adam's rate, ``"cosine"`` (decays to 0 over
    all steps) or ``"constant"``. weight_decay > 0 switches to AdamW.
    augment: apply :func:`lab.defenses.augment.augment` with the fields this
    class inherits from :class:`AugmentConfig`: random shifts (up to
    ``max_shift`` pixels), horizontal flips, brightness/contrast
    (``brightness``, relative) and Gaussian ``noise`` (standard deviation),
    then random erasing with ``erase_probability`` (a rectangle of 2-25 % of
    the image filled with uniform noise).
    unlearn_fraction: share of each epoch's images that get the epoch's
    universal perturbation (0 switches unlearning off); ``unlearn_epsilon``
    bounds it (L-infinity, pixels), ``unlearn_steps`` sign-gradient steps
    on batches of ``unlearn_batch`` find it.
    reinitialize: layers given fresh random weights before training.
    trainable: layers that train (None: all).
    """

    epochs: int = 40
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    batch_size: int = 32
    weight_decay: float = 0.0
    augment: bool = True
    unlearn_fraction: float = 0.5
    unlearn_epsilon: float = 32.0
    unlearn_steps: int = 10
    unlearn_batch: int = 64
    reinitialize: tuple[str, ...] = ()
    trainable: tuple[str, ...] | None = None

    def replace(self, **changes) -> "FineTuneConfig":
        """A copy with ``changes`` (e.g. ``config.replace(epochs=3)`` for a quick run)."""
        return dataclasses.replace(self, **changes)


# The variants compared in 05_fine_pruning (numbers there and in the module docstring).
RECIPES = {
    "paper": FineTuneConfig(epochs=10, learning_rate=1e-4, schedule="constant", augment=False,
                            erase_probability=0.0, unlearn_fraction=0.0),
    "augmented": FineTuneConfig(epochs=30, unlearn_fraction=0.0),
    "unlearning": FineTuneConfig(),
}


@dataclasses.dataclass
class FineTuneResult:
    """What :func:`fine_tune` returns.

    model: the fine-tuned copy (``LoadedModel``) at ``best_epoch``.
    history: one row per epoch (0 = before training): ``epoch``,
    ``learning_rate`` (at the end of the epoch), ``loss`` (training, NaN at 0), ``holdout_accuracy``
    (%), and one column per ``report`` set (% argmax == label).
    """

    model: object
    history: object
    best_epoch: int
    seconds: float
    config: FineTuneConfig


@dataclasses.dataclass
class FinePruneResult:
    """What :func:`fine_prune` returns: the repaired model B'' and how it was made."""

    model: object
    pruned_channels: list[int]
    sweep: object
    selection: object
    history: object
    best_epoch: int
    train: Dataset
    holdout: Dataset
    seconds: float
    config: FineTuneConfig
    layer: str = DEFAULT_LAYER


# ---------------------------------------------------------------- fine-tuning


def _zero_channels(keras_model, keep_zero: Mapping[str, Sequence[int]]) -> None:
    for name, channels in keep_zero.items():
        if len(channels):
            zero_channels(keras_model, name, channels)


def _train_step(tuned, optimizer, keep_zero: Mapping[str, Sequence[int]]):
    """One compiled optimizer step on a batch (pixels 0..255, labels); returns the batch's mean loss.

    Pruned channels stay pruned: inside the same compiled function, after
    the update, their kernel and bias are multiplied by a 0/1 mask, so they
    are exactly 0 after every step (and the saved model needs no custom
    constraint to load). The whole step is compiled: no Keras ``fit`` per
    epoch and no weight round trip through numpy per batch
    (``python -m lab bench --lab`` times it).
    """
    import keras
    import tensorflow as tf

    parts = step_parts(tuned, optimizer=optimizer)
    keras_model = parts.model
    masked = []
    for name, channels in keep_zero.items():
        if len(channels):
            layer = keras_model.get_layer(name)
            keep = np.ones(int(layer.kernel.shape[-1]), np.float32)
            keep[list(channels)] = 0.0
            masked += [(layer.kernel, tf.constant(keep)), (layer.bias, tf.constant(keep))]

    def loss_of(inputs, labels):
        probabilities = keras_model(inputs, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
        if keras_model.losses:
            loss = loss + tf.add_n(keras_model.losses)
        return loss

    def keep_pruned():
        for variable, keep in masked:
            variable.assign(variable * keep)

    return compiled_step(parts, loss_of, after=keep_pruned)


def _optimizer(config: FineTuneConfig, total_steps: int):
    import keras

    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(1, total_steps))
    elif config.schedule == "constant":
        rate = config.learning_rate
    else:
        raise LabInputError(None, "schedule 'cosine' or 'constant'", repr(config.schedule))
    if config.weight_decay:
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(rate)


def _rate_at(optimizer, step: int) -> float:
    import keras

    rate = optimizer._learning_rate  # the schedule, or a variable holding the constant
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(rate(step))
    return float(np.asarray(rate))


def _reinitialize(keras_model, names: Sequence[str], seed: int) -> None:
    import keras

    for offset, name in enumerate(names):
        layer = keras_model.get_layer(name)
        kernel, *rest = layer.get_weights()
        fresh = keras.initializers.GlorotUniform(seed=seed + offset)(kernel.shape)
        layer.set_weights([np.asarray(fresh, np.float32), *[np.zeros_like(r) for r in rest]])


def _percent_correct(model, dataset: Dataset | None) -> float:
    if dataset is None or not len(dataset):
        return float("nan")
    return metrics.percent(model.predict_labels(dataset.x) == dataset.y)


def fine_tune(model, train: Dataset, holdout: Dataset | None, config: FineTuneConfig = FineTuneConfig(),
              seed: int = DEFAULT_SEED, keep_zero: Mapping[str, Sequence[int]] | None = None,
              report: Mapping[str, Dataset] | None = None, progress: bool = False) -> FineTuneResult:
    """Fine-tune a copy of ``model`` (a ``LoadedModel``; the original is untouched) on clean ``train`` data.

    train / holdout: clean :class:`Dataset` (pixels 0..255, true labels).
    The returned model is the epoch (1..epochs) with the highest held-out
    accuracy, the later one on ties; without a holdout, the last epoch. The
    untrained start (epoch 0) is recorded but never chosen: by clean accuracy
    alone it would usually win and the defense would do nothing.
    keep_zero: ``{layer: channels}`` kept at exactly zero (pruned channels).
    report: ``{name: Dataset}`` measured after every epoch for the history
    only (a poisoned set gives the attack success rate); never used to choose.
    Deterministic for a given ``seed`` once :func:`lab.set_seed` has switched
    TensorFlow to deterministic kernels.
    """
    import pandas as pd

    started = time.perf_counter()
    keep_zero = {name: [int(c) for c in channels] for name, channels in (keep_zero or {}).items()}
    report = dict(report or {})
    model.check_data(train)
    if holdout is not None:
        model.check_data(holdout)
    key = _cache_key(model, train, holdout, config, seed, keep_zero)
    cached = _from_cache(model, key, config, report)
    if cached is not None:
        return cached
    tuned = clone_model(model)
    keras_model = tuned.model
    _reinitialize(keras_model, config.reinitialize, seed)
    _zero_channels(keras_model, keep_zero)
    if config.trainable is not None:
        for layer in keras_model.layers:
            layer.trainable = layer.name in config.trainable
    steps_per_epoch = int(np.ceil(len(train) / config.batch_size))
    optimizer = _optimizer(config, steps_per_epoch * config.epochs)
    step = _train_step(tuned, optimizer, keep_zero)
    rng = np.random.default_rng(seed)
    unlearning = bool(config.unlearn_fraction and config.unlearn_steps and config.epochs)
    search = PerturbationSearch(tuned, config.unlearn_epsilon) if unlearning else None

    held_out = holdout is not None and len(holdout) > 0

    def score(epoch: int) -> float:  # without held-out data the last epoch wins
        return _percent_correct(tuned, holdout) if held_out else epoch

    def row(epoch: int, loss: float | None, score: float) -> dict:
        values = {"epoch": epoch, "learning_rate": _rate_at(optimizer, epoch * steps_per_epoch),
                  "loss": float("nan") if loss is None else loss,
                  "holdout_accuracy": score if held_out else float("nan")}
        values.update({name: _percent_correct(tuned, dataset) for name, dataset in report.items()})
        return values

    def run_epoch(epoch: int) -> float:
        x = augment(train.x, rng, config) if config.augment else np.array(train.x, dtype=np.float32, copy=True)
        if unlearning:
            delta = search(x, train.y, config.unlearn_steps, config.unlearn_batch, rng)
            chosen = rng.random(len(x)) < config.unlearn_fraction
            x[chosen] = np.clip(x[chosen] + delta, 0, 255)
        order = rng.permutation(len(x))
        x, y = x[order], np.asarray(train.y[order], np.int64)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            batch = slice(start, start + config.batch_size)
            total += float(step(x[batch], y[batch])) * len(y[batch])
        return total / len(x)  # mean over images, as Keras's fit reports it

    best, rows = fit_keep_best(keras_model, config.epochs, run_epoch, score, row, "fine-tuning" if progress else None)
    best_epoch = best.epoch
    for layer in keras_model.layers:  # a frozen layer was frozen for this run only
        layer.trainable = True
    tuned.metadata.update(fine_tuned_epochs=config.epochs, best_epoch=best_epoch,
                          holdout_accuracy=None if holdout is None else float(rows[best_epoch]["holdout_accuracy"]))
    table = pd.DataFrame(rows)
    table.attrs.update(best_epoch=best_epoch, report_sets=list(report))
    result = FineTuneResult(tuned, table, best_epoch, time.perf_counter() - started, config)
    _to_cache(key, result, report)
    return result


# ---------------------------------------------------------------- cache (lab.cache): 07 reuses what 05 trained

_HISTORY_COLUMNS = ["epoch", "learning_rate", "loss", "holdout_accuracy"]
# The code a fine-tuning result depends on: a change to any of these never reuses an old result.
_CODE = (__name__, "lab.defenses.augment", "lab.defenses.perturbation", "lab.defenses.surgery")


def _cache_key(model, train: Dataset, holdout: Dataset | None, config: FineTuneConfig, seed: int,
               keep_zero: Mapping[str, Sequence[int]]) -> str:
    """SHA-256 of everything a fine-tuning result depends on (``report`` only measures: not in the key)."""
    import sys

    import keras
    import tensorflow as tf

    import lab
    from lab import cache

    keras_model = model.model
    return cache.digest([type(layer).__name__ for layer in keras_model.layers], keras_model.get_weights(),
                        model.input_scale, train.x, train.y, holdout is None,
                        [] if holdout is None else [holdout.x, holdout.y], dataclasses.asdict(config), seed,
                        dict(keep_zero), [cache.source_digest(sys.modules[name]) for name in _CODE],
                        [lab.__version__, tf.__version__, keras.__version__, np.__version__])


def _from_cache(model, key: str, config: FineTuneConfig, report: Mapping[str, Dataset]) -> FineTuneResult | None:
    """The stored result for ``key``, if it also measured every ``report`` set asked for (same name, same data)."""
    import pandas as pd

    from lab import cache

    found = cache.load("fine_tune", key)
    if found is None:
        return None
    weights, info = found
    if any(info["report"].get(name) != cache.digest(data.x, data.y) for name, data in report.items()):
        return None  # the history lacks a column asked for: train again (and store that)
    tuned = clone_model(model, weights=weights)
    tuned.metadata.update(info["metadata"], cache=f"reused fine-tuning result {key[:12]} (lab.cache)")
    table = pd.DataFrame(info["history"])[_HISTORY_COLUMNS + list(report)]
    table.attrs.update(best_epoch=info["best_epoch"], report_sets=list(report))
    # seconds: what the result cost to compute, so comparison tables stay honest.
    return FineTuneResult(tuned, table, info["best_epoch"], info["seconds"], config)


def _to_cache(key: str, result: FineTuneResult, report: Mapping[str, Dataset]) -> None:
    from lab import cache

    metadata = {name: result.model.metadata[name] for name in ("fine_tuned_epochs", "best_epoch", "holdout_accuracy")}
    history = {column: [None if value != value else value for value in result.history[column].tolist()]
               for column in result.history.columns}
    cache.store("fine_tune", key, result.model.model.get_weights(),
                {"metadata": metadata, "history": history, "best_epoch": int(result.best_epoch),
                 "seconds": result.seconds, "report": {name: cache.digest(data.x, data.y)
                                                       for name, data in report.items()}})


def fine_prune(badnet, clean_valid: Dataset, threshold: float | None = 4.0, n_channels: int | None = None,
               config: FineTuneConfig = FineTuneConfig(), holdout_fraction: float = 1 / 3, rule: str = "first-reach",
               layer: str = DEFAULT_LAYER, measure: str = DEFAULT_MEASURE, order: str = "increasing",
               seed: int = DEFAULT_SEED, report: Mapping[str, Dataset] | None = None,
               progress: bool = False) -> FinePruneResult:
    """Fine-pruning end to end: split, prune ``layer``, fine-tune with the pruned channels kept at zero.

    badnet: ``LoadedModel``; clean_valid: the clean validation set (the only
    data that chooses anything). The sweep, its ranking and the threshold
    use the fine-tuning part; the held-out part picks the epoch. Prune at
    the step :func:`lab.defenses.pruning.select_thresholds` picks for ``threshold``
    (percentage points, by ``rule``), or exactly ``n_channels`` channels when
    given (``n_channels=0``: fine-tuning alone). ``report``: see
    :func:`fine_tune`. Returns a :class:`FinePruneResult` whose ``model``
    is B''.
    """
    started = time.perf_counter()
    train, holdout = split_validation(clean_valid, holdout_fraction, seed)
    if n_channels is None and threshold is None:
        raise LabInputError(None, "a threshold (percentage points) or a number of channels to prune", "neither")
    table = pruning.sweep(badnet, train, layer=layer, measure=measure, order=order)
    if n_channels is None:
        selection = pruning.select_thresholds(table, [threshold], rule)
        if not bool(selection["found"].iloc[0]):
            raise LabInputError(None, f"a pruning step reaching a {threshold:g} pp accuracy drop",
                                selection["note"].iloc[0])
        n_channels = int(selection["channels_pruned"].iloc[0])
    else:
        selection = None
        if not 0 <= n_channels <= len(table) - 1:
            raise LabInputError(None, f"0..{len(table) - 1} channels to prune", str(n_channels))
    channels = pruning.pruned_channels(table, n_channels)
    pruned = pruning.prune_model(badnet, channels, layer)
    tune_started = time.perf_counter()
    tuned = fine_tune(pruned, train, holdout, config, seed, keep_zero={layer: channels}, report=report,
                      progress=progress)
    tuned.model.metadata.update(pruned_layer=layer, pruned_channels=channels, threshold=threshold,
                                rule=rule if selection is not None else None, n_train=len(train),
                                n_holdout=len(holdout), source_model=getattr(badnet, "path", None))
    return FinePruneResult(tuned.model, channels, table, selection, tuned.history, tuned.best_epoch, train, holdout,
                           tune_started - started + tuned.seconds, config, layer)  # a reused result: its cost


def pruned_channels_are_zero(model, layer: str, channels: Sequence[int]) -> bool:
    """True if the kernel and bias of ``channels`` of ``layer`` are exactly zero (a check for students and tests)."""
    kernel, bias = model.model.get_layer(layer).get_weights()[:2]
    channels = list(int(c) for c in channels)
    return bool(np.all(kernel[..., channels] == 0) and np.all(bias[channels] == 0))


def save_fine_pruned(result: FinePruneResult, path, force: bool = False):
    """Save B'' (``.h5`` or ``.keras``) with the lab's metadata: pruned channels, config, chosen epoch."""
    from lab.io.models import save_model

    extra = {key: value for key, value in result.model.metadata.items() if key != "sha256"}
    extra["config"] = dataclasses.asdict(result.config)
    description = (f"fine-pruned: {len(result.pruned_channels)} channels of {result.layer} pruned, fine-tuned "
                   f"{result.config.epochs} epochs on clean data, epoch {result.best_epoch} kept")
    return save_model(result.model.model, path, result.model.input_scale, description, force=force, extra=extra)


# ---------------------------------------------------------------- the defense contract


@register
class FineTuningDefense(Defense):
    """Fine-tuning alone: B fine-tuned on the clean fine-tuning part, epoch chosen on the held-out part."""

    name = "fine-tuning"
    kind = "repair"
    table_order = 20
    paper = ("Liu, Dolan-Gavitt, Garg. Fine-Pruning, RAID 2018 (fine-tuning baseline); unlearning recipe: "
             "Zeng et al. Adversarial Unlearning of Backdoors via Implicit Hypergradient (I-BAU), ICLR 2022")

    @dataclasses.dataclass(frozen=True)
    class Config:
        """recipe: how fine-tuning trains (:class:`FineTuneConfig`; default the unlearning recipe of 05);
        holdout_fraction: share of each class held out to choose the epoch."""

        recipe: FineTuneConfig = RECIPES["unlearning"]
        holdout_fraction: float = 1 / 3

    @classmethod
    def quick(cls, epochs=None, reverse_epochs=None, flow_restarts=None, holdout_fraction=1 / 3) -> dict:
        """``epochs`` of the default recipe."""
        return _quick_recipe(cls, epochs, holdout_fraction)

    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        return _fine_prune_result(self, badnet, clean_valid, seed, threshold=None, n_channels=0)


@register
class FinePruningDefense(Defense):
    """B'': prune at an accuracy-drop threshold, then fine-tune with the pruned channels kept at zero."""

    name = "fine-pruning"
    kind = "repair"
    table_order = 30
    paper = "Liu, Dolan-Gavitt, Garg. Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural Networks. RAID 2018"

    @dataclasses.dataclass(frozen=True)
    class Config(pruning.PruningDefense.Config):
        """Where to prune, as :class:`lab.defenses.pruning.PruningDefense.Config` (the held-out part picks
        the epoch here); recipe: how to fine-tune (:class:`FineTuneConfig`, default the unlearning recipe of 05)."""

        recipe: FineTuneConfig = RECIPES["unlearning"]

    @classmethod
    def quick(cls, epochs=None, reverse_epochs=None, flow_restarts=None, holdout_fraction=1 / 3) -> dict:
        """``epochs`` of the default recipe."""
        return _quick_recipe(cls, epochs, holdout_fraction)

    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        return _fine_prune_result(self, badnet, clean_valid, seed, threshold=self.config.threshold, n_channels=None)


def _quick_recipe(defense: type[Defense], epochs: int | None, holdout_fraction: float) -> dict:
    settings = {"holdout_fraction": holdout_fraction}
    if epochs is not None:
        settings["recipe"] = defense.Config().recipe.replace(epochs=epochs)
    return settings


def _fine_prune_result(defense: Defense, badnet, clean_valid: Dataset, seed: int, threshold: float | None,
                       n_channels: int | None) -> DefenseResult:
    config = defense.config
    settings = {key: getattr(config, key) for key in ("rule", "layer", "measure", "order") if hasattr(config, key)}
    result = fine_prune(badnet, clean_valid, threshold, n_channels, config=config.recipe,
                        holdout_fraction=config.holdout_fraction, seed=seed, **settings)
    details = {"pruned_layer": result.layer, "pruned_channels": result.pruned_channels,
               "best_epoch": result.best_epoch, "history": result.history, "fine_prune": result}
    return DefenseResult(defense.name, defense.kind, result.model, result.seconds, details, model=result.model)
