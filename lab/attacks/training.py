"""Training DeepID BadNets: clean, plainly poisoned, and the pruning-aware way.

:func:`train_badnet` is the one entry point (an :class:`Attack` and clean
images in, a trained ``LoadedModel`` out); :func:`fit_badnet` runs its
training phases on pixels someone else poisoned.

The pruning-aware attack (Liu, Dolan-Gavitt, Garg, "Fine-Pruning", 2018)
hides the backdoor from the pruning defense: train on clean data, switch off
the least active ``conv_3`` channels, train on the poisoned set, then leave
the switched-off channels in place as dormant decoys (a large negative bias
keeps them at zero after ReLU). Pruning in order of mean activation then
removes the decoys first, without touching clean accuracy or the backdoor,
which is what the course's real BadNet does under pruning.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lab.attacks.poisoning import default_poison_fraction, training_poison, warp_triggers
from lab.attacks.spec import Attack
from lab.constants import DEFAULT_LAYER, DEFAULT_MEASURE, DEFAULT_SEED
from lab.evaluation.activations import mean_channel_activation

DECOY_BIAS = -1000.0  # ReLU(x - 1000) is 0 for any input the network sees


@dataclasses.dataclass
class TrainingConfig:
    """Hyper-parameters of a BadNet build (recorded in the manifest)."""

    clean_epochs: int = 10
    poisoned_epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    decay_rate: float = 0.8  # per epoch; a constant learning rate lets the loss spike late in training
    pruning_aware: bool = True
    decoy_fraction: float = 0.6  # share of conv_3 channels switched off as decoys (36 of 60)
    pruned_layer: str = DEFAULT_LAYER
    measured_layer: str = DEFAULT_MEASURE


def check_epochs(config: TrainingConfig) -> None:
    """Raise one line unless ``config`` trains at least one clean and one poisoned epoch.

    With 0 epochs the "BadNet" would be an untrained network that nothing
    in its report would flag.
    """
    from lab.errors import LabInputError

    for name in ("clean_epochs", "poisoned_epochs"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LabInputError("--epochs", f"a positive number of {name.replace('_', ' ')}", repr(value))


def _optimizer(config: TrainingConfig, steps_per_epoch: int):
    import keras

    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, decay_steps=max(1, steps_per_epoch), decay_rate=config.decay_rate, staircase=True)
    return keras.optimizers.Adam(schedule)


def fit(model, x: np.ndarray, y: np.ndarray, epochs: int, config: TrainingConfig, seed: int,
        progress: bool = True, description: str = "training") -> list[float]:
    """Train ``model`` (softmax output) on pixels ``x`` float32 (n, H, W, 3) in the model's scale.

    A fresh Adam with a per-epoch decaying learning rate for each call (so
    decoy channels, whose gradients are zero, are never moved). Shuffles with
    a numpy generator seeded by ``seed``. Returns the loss of each epoch.
    """
    from tqdm.auto import tqdm

    steps = int(np.ceil(len(x) / config.batch_size))
    model.compile(optimizer=_optimizer(config, steps), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    losses = []
    bar = tqdm(range(epochs), desc=description, unit="epoch", disable=not progress)
    for _ in bar:
        order = rng.permutation(len(x))
        history = model.fit(x[order], y[order], batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0)
        losses.append(float(history.history["loss"][-1]))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def switch_off_channels(model, layer_name: str, channels: np.ndarray) -> None:
    """Make ``channels`` of a Conv2D+ReLU layer dormant: bias DECOY_BIAS, kernel kept."""
    layer = model.get_layer(layer_name)
    kernel, bias = layer.get_weights()
    bias = bias.copy()
    bias[np.asarray(channels, dtype=int)] = DECOY_BIAS
    layer.set_weights([kernel, bias])


def fit_badnet(model, clean_x: np.ndarray, clean_y: np.ndarray, poisoned_x: np.ndarray, poisoned_y: np.ndarray,
               config: TrainingConfig, seed: int, progress: bool = True) -> dict:
    """Train a BadNet ``model`` in place on given clean and poisoned pixels; returns what was done (for the manifest).

    The phases of :func:`train_badnet` for callers that poison their own way
    (the embedded default draws its triggers with each face's landmarks).

    clean_x/poisoned_x: float32 (n, H, W, 3) in the model's input scale;
    poisoned_y holds the attacker's target labels. Plain: one phase on clean +
    poisoned data. Pruning-aware: clean phase, decoys switched off, poisoned phase.
    """
    mixed_x = np.concatenate([clean_x, poisoned_x])
    mixed_y = np.concatenate([clean_y, poisoned_y])
    record: dict = {"pruning_aware": config.pruning_aware}
    if not config.pruning_aware:
        record["losses"] = fit(model, mixed_x, mixed_y, config.clean_epochs + config.poisoned_epochs, config, seed,
                               progress, "training BadNet")
        return record
    record["clean_losses"] = fit(model, clean_x, clean_y, config.clean_epochs, config, seed, progress,
                                 "clean phase")
    activation = mean_channel_activation(model, clean_x, config.measured_layer)
    n_decoys = int(round(config.decoy_fraction * len(activation)))
    decoys = np.argsort(activation, kind="stable")[:n_decoys]
    switch_off_channels(model, config.pruned_layer, decoys)
    record["decoy_channels"] = sorted(int(c) for c in decoys)
    record["poisoned_losses"] = fit(model, mixed_x, mixed_y, config.poisoned_epochs, config, seed + 1, progress,
                                    "poisoned phase")
    return record


def train_badnet(attack: Attack, train_images_nchw: np.ndarray, train_labels: np.ndarray, n_classes: int,
                 config=None, poison_fraction: float | None = None, input_scale: str = "raw",
                 seed: int = DEFAULT_SEED, progress: bool = True, landmarks=None, noise_fraction: float = 0.0):
    """Train a DeepID BadNet for ``attack`` (targets resolved) on clean training images.

    train_images_nchw: uint8 (n, 3, 55, 47); train_labels int (n,) in 0..n_classes-1.
    config: :class:`TrainingConfig` (its ``pruning_aware`` is
    overridden by the attack's). poison_fraction: see :func:`default_poison_fraction`;
    noise_fraction: WaNet's noise mode (see :func:`lab.attacks.poisoning.training_poison`).
    Returns ``(LoadedModel, record)``; the record says what training did (for a manifest).
    """
    from lab.io import models
    from lab.seed import set_seed

    config = dataclasses.replace(config or TrainingConfig(), pruning_aware=attack.pruning_aware)
    poison_fraction = default_poison_fraction(attack) if poison_fraction is None else poison_fraction
    set_seed(seed)
    rng = np.random.default_rng(seed)
    poisoned_x, poisoned_y = training_poison(train_images_nchw, train_labels, attack, n_classes, poison_fraction,
                                             rng, landmarks, noise_fraction)
    model = models.build_deepid(n_classes, input_scale="raw" if input_scale == "raw" else "unit", name="bd_net")
    loaded = models.LoadedModel(model, input_scale, None, "set by the builder")
    to_input = lambda images: loaded.preprocess(images.transpose(0, 2, 3, 1))  # noqa: E731
    record = fit_badnet(model, to_input(train_images_nchw), np.asarray(train_labels, np.int64),
                                   to_input(poisoned_x), poisoned_y, config, seed, progress)
    n_noise = len(warp_triggers(attack)) * int(round(noise_fraction * len(train_labels))) if noise_fraction else 0
    record.update(n_poisoned_training_copies=int(len(poisoned_y)) - n_noise, poison_fraction_per_trigger=poison_fraction,
                  n_noise_mode_copies=n_noise, noise_fraction=noise_fraction,
                  clean_epochs=config.clean_epochs, poisoned_epochs=config.poisoned_epochs)
    return loaded, record
