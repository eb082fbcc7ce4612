"""Small real models and data shared by the tests of lab.defenses, lab.evaluation and lab.cli (no mocks).

Import it (``import small_models as helpers``) for the builders, or use the
fixtures ``conftest.py`` makes of them (``small_badnet``, ``small_valid``,
``cli_files``, ``cli_pruned``). Built once per test session
(``functools.cache``): a DeepID with few classes
trained briefly on structured images with a backdoor (a bright square sends
any face to class 0), so predictions, pruning curves and attack success
rates are all non-trivial; plus tiny non-DeepID functional models for the
general and the fallback sweep paths.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N_CLASSES = 5
TARGET = 0
REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "csaw"


def structured_images(n_per_class: int, seed: int, n_classes: int = N_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 (n, 55, 47, 3) 0..255 whose class shows as stripes of a class-specific period and tint."""
    rng = np.random.default_rng(seed)
    rows = np.arange(55, dtype=np.float32)[:, None, None]
    images, labels = [], []
    for label in range(n_classes):
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * rows / (4 + 3 * label))
        tint = np.roll(np.array([1.0, 0.55, 0.25], np.float32), label)
        base = 40 + 150 * stripes * tint  # (55, 1, 3), broadcast over width
        noise = rng.normal(0, 28, (n_per_class, 55, 47, 3)).astype(np.float32)
        brightness = rng.uniform(0.7, 1.2, (n_per_class, 1, 1, 1)).astype(np.float32)
        images.append(np.clip(base[None] * brightness + noise, 0, 255))
        labels.append(np.full(n_per_class, label, np.int64))
    order = rng.permutation(n_per_class * n_classes)
    return np.concatenate(images)[order].astype(np.float32), np.concatenate(labels)[order]


def add_trigger(x: np.ndarray) -> np.ndarray:
    """The backdoor trigger: a bright 9x9 square near the bottom right corner."""
    poisoned = np.array(x, copy=True)
    poisoned[:, 42:51, 34:43, :] = 250.0
    return poisoned


@functools.cache
def datasets(n_per_class: int = 16, seed: int = 11):
    """``(clean_valid, poisoned_valid)`` Datasets; poisoned labels are the target (as in course files)."""
    from lab.io.data import Dataset

    x, y = structured_images(n_per_class, seed)
    source = x[y != TARGET]
    return Dataset(x, y, "clean_valid"), Dataset(add_trigger(source), np.full(len(source), TARGET, np.int64),
                                                 "poisoned_valid")


@functools.cache
def trained_deepid(seed: int = 3):
    """A 5-class DeepID (unit scale) with a backdoor, trained for a few seconds; a ``LoadedModel``."""
    import keras

    from lab.io import models

    keras.utils.set_random_seed(seed)
    x, y = structured_images(40, seed=seed)
    poisoned = add_trigger(x[y != TARGET][:60])
    x_train = np.concatenate([x, poisoned]) / 255.0
    y_train = np.concatenate([y, np.full(len(poisoned), TARGET)])
    model = models.build_deepid(N_CLASSES, input_scale="unit", name="small_badnet")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=6, batch_size=32, verbose=0, shuffle=True)
    return models.LoadedModel(model, "unit", None, "trained in the test")


def _trained(keras_model, seed: int):
    """Fit a small 4-class model for a moment so its predictions vary; a unit-scale ``LoadedModel``."""
    import keras

    from lab.io.models import LoadedModel

    x, y = structured_images(30, seed=seed, n_classes=4)
    keras_model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    keras_model.fit(x / 255.0, y, epochs=4, batch_size=32, verbose=0)
    return LoadedModel(keras_model, "unit", None, "trained in the test")


@functools.cache
def conv_relu_pool_model(seed: int = 5):
    """A non-DeepID model with the property: conv -> ReLU layer -> max-pool -> conv -> flatten -> dense."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((55, 47, 3), name="input")
    x = layers.Conv2D(8, 5, strides=2, name="conv_a")(inputs)
    x = layers.ReLU(name="relu_a")(x)
    x = layers.MaxPooling2D(2, name="pool_a")(x)
    x = layers.Dropout(0.2, name="drop_a")(x)
    x = layers.Conv2D(12, 3, activation="relu", name="conv_b")(x)
    outputs = layers.Dense(4, activation="softmax", name="output")(layers.Flatten(name="flat")(x))
    return _trained(keras.Model(inputs, outputs, name="conv_relu_pool"), seed)


@functools.cache
def batchnorm_model(seed: int = 6):
    """No property: BatchNorm after the pruned conv maps a zeroed channel to a non-zero constant."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((55, 47, 3), name="input")
    x = layers.Conv2D(8, 5, strides=2, name="conv_a")(inputs)
    x = layers.BatchNormalization(name="bn_a")(x)
    x = layers.ReLU(name="relu_a")(x)
    x = layers.MaxPooling2D(2, name="pool_a")(x)
    outputs = layers.Dense(4, activation="softmax", name="output")(layers.GlobalAveragePooling2D(name="gap")(x))
    return _trained(keras.Model(inputs, outputs, name="batchnorm"), seed)


@functools.cache
def bypass_model(seed: int = 7):
    """No property: the head also reads a tensor that bypasses the measured layer (a skip connection)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((55, 47, 3), name="input")
    early = layers.GlobalAveragePooling2D(name="early_gap")(inputs)
    x = layers.Conv2D(6, 5, strides=2, activation="relu", name="conv_a")(inputs)
    x = layers.GlobalMaxPooling2D(name="pool_a")(x)
    merged = layers.Concatenate(name="concat")([x, early])
    outputs = layers.Dense(4, activation="softmax", name="output")(merged)
    return _trained(keras.Model(inputs, outputs, name="bypass"), seed)


def colour_classifier(permutation=(0, 1, 2), name: str = "colour"):
    """A 3-class model whose answer is known: the brightest colour channel, relabelled by ``permutation``.

    Input -> global average pooling -> Dense(3, softmax) with kernel 10 * I
    (columns permuted), unit scale. A pure red image is class
    ``permutation[0]``, green ``permutation[1]``, blue ``permutation[2]``.
    """
    import keras
    from keras import layers

    from lab.io.models import LoadedModel

    inputs = keras.Input((55, 47, 3), name="input")
    output = layers.Dense(3, activation="softmax", name="output")
    model = keras.Model(inputs, output(layers.GlobalAveragePooling2D(name="gap")(inputs)), name=name)
    kernel = np.zeros((3, 3), np.float32)
    for channel, label in enumerate(permutation):
        kernel[channel, label] = 10.0
    output.set_weights([kernel, np.zeros(3, np.float32)])
    return LoadedModel(model, "unit", None, "built in the test")


def colour_images(colours, value: float = 200.0) -> np.ndarray:
    """float32 (len(colours), 55, 47, 3): each image one pure colour, 0 = red, 1 = green, 2 = blue."""
    images = np.zeros((len(colours), 55, 47, 3), np.float32)
    for index, colour in enumerate(colours):
        images[index, :, :, colour] = value
    return images


def naive_step_outputs(model, x: np.ndarray, channels, layer: str, dtype: str = "float32") -> list[np.ndarray]:
    """Reference written independently of lab.defenses.pruning: clone, zero one more channel, predict; every step.

    Returns (n, classes) outputs for step 0 (nothing pruned) .. len(channels).
    ``dtype="float64"`` runs the same Keras graph in float64: exact arithmetic
    to ~1e-15, against which float32 rounding (Keras' own included) shows.
    """
    import keras

    def in_dtype(layer_to_clone):
        config = layer_to_clone.get_config()
        config["dtype"] = dtype
        return type(layer_to_clone).from_config(config)

    clone = keras.models.clone_model(model.model, clone_function=in_dtype)
    clone.set_weights([weight.astype(dtype) for weight in model.model.get_weights()])
    target = clone.get_layer(layer)
    inputs = model.preprocess(x).astype(dtype)
    outputs = [np.asarray(clone(inputs, training=False))]
    for channel in channels:
        kernel, *rest = target.get_weights()
        kernel[..., channel] = 0.0
        if rest:
            rest[0][channel] = 0.0
        target.set_weights([kernel, *rest])
        outputs.append(np.asarray(clone(inputs, training=False)))
    return outputs


def fixture_path(name: str) -> Path | None:
    """A real course weight file, or None where ../shared is absent."""
    path = FIXTURES / name
    return path if path.exists() else None
