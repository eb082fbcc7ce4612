"""Activations of named layers, computed in batches; dicts keract can display.

keract 4.5.2's ``get_activations`` fails on Keras 3 (``'Functional' object
has no attribute '_is_compiled'``), but its display functions only need a
dict ``{layer_name: array}`` whose arrays start with a batch axis of length 1.
:func:`keract_activations` builds exactly that dict, so the course's
"inspect activations with Keract" step reads::

    import keract
    acts = lab.evaluation.activations.keract_activations(badnet, clean_valid.x[0], ["conv_3", "pool_3"])
    keract.display_activations(acts, save=True, directory="figures")
    keract.display_heatmaps(acts, clean_valid.x[0] / 255.0, save=True, directory="figures")

``model`` arguments are a :class:`lab.io.models.LoadedModel` (then ``x`` holds
pixels 0..255 and the model's own input scale is applied) or a plain
``keras.Model`` (then ``x`` is fed exactly as given).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from lab.constants import BATCH_SIZE
from lab.errors import LabInputError



def keras_model_and_preprocess(model):
    """``(keras.Model, preprocess)`` for a ``LoadedModel`` or a plain Keras model (identity preprocess)."""
    if hasattr(model, "preprocess") and hasattr(model, "model"):
        return model.model, model.preprocess
    return model, lambda x: np.asarray(x, dtype=np.float32)


def get_layer(model, name: str):
    """The layer ``name`` of ``model`` (a ``LoadedModel`` or ``keras.Model``); one-line error if absent."""
    keras_model, _ = keras_model_and_preprocess(model)
    names = [layer.name for layer in keras_model.layers]
    if name not in names:
        shown = ", ".join(names if len(names) <= 40 else names[:40] + ["..."])
        raise LabInputError(getattr(model, "path", None), f"a layer named {name!r} (layers: {shown})", "none")
    return keras_model.get_layer(name)


def compiled_call(keras_model):
    """A ``tf.function`` running ``keras_model`` in inference mode, traced once for any batch size.

    Calling a compiled function on tensors is much cheaper per call than
    ``model.predict`` (which rebuilds its data pipeline every time). One
    function per model, kept while the model lives, so it is traced once.
    """
    call = getattr(keras_model, "_lab_compiled_call", None)
    if call is None:
        call = _compile(keras_model)
        # Kept on the model (object.__setattr__: not a tracked Keras attribute), so it lives as long as the model.
        object.__setattr__(keras_model, "_lab_compiled_call", call)
    return call


def _compile(keras_model):
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype) for tensor in keras_model.inputs]

    @tf.function(input_signature=signature, autograph=False)
    def call(*inputs):
        # Match the model's input structure (one tensor or a list) so Keras does not warn.
        return keras_model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)

    return call


def batched_call(call, preprocess, x: np.ndarray, batch_size: int = BATCH_SIZE) -> Iterator[list[np.ndarray]]:
    """Yield ``call(preprocess(batch))`` as a list of numpy arrays for consecutive batches of ``x``.

    Preprocessing per batch keeps a scaled copy of only one batch in memory.
    """
    for start in range(0, len(x), batch_size):
        outputs = call(preprocess(x[start:start + batch_size]))
        yield [np.asarray(output) for output in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def sub_model(model, layer_names: Sequence[str]):
    """A Keras model from ``model``'s inputs to the outputs of ``layer_names`` (a list, in that order).

    Cached per model and list of names, so its compiled call is reused.
    """
    import keras

    keras_model, _ = keras_model_and_preprocess(model)
    cache = getattr(keras_model, "_lab_sub_models", None)
    if cache is None:
        cache = {}
        object.__setattr__(keras_model, "_lab_sub_models", cache)  # lives as long as the model, untracked
    key = tuple(layer_names)
    if key not in cache:
        outputs = [get_layer(model, name).output for name in layer_names]
        cache[key] = keras.Model(keras_model.inputs, outputs, name=f"{keras_model.name}_activations")
    return cache[key]


def _layer_names(model, layer_names: str | Sequence[str] | None) -> list[str]:
    keras_model, _ = keras_model_and_preprocess(model)
    if layer_names is None:
        return [layer.name for layer in keras_model.layers if layer.__class__.__name__ != "InputLayer"]
    return [layer_names] if isinstance(layer_names, str) else list(layer_names)


def iter_activations(model, x: np.ndarray, layer_names: str | Sequence[str] | None = None,
                     batch_size: int = BATCH_SIZE) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{layer_name: float32 (b, ...)}`` for consecutive batches of ``x``.

    Only one batch of activations is alive at a time, so reductions over a
    large data set (see :func:`mean_channel_activation`) need bounded memory.
    """
    names = _layer_names(model, layer_names)
    _, preprocess = keras_model_and_preprocess(model)
    call = compiled_call(sub_model(model, names))
    for outputs in batched_call(call, preprocess, x, batch_size):
        yield dict(zip(names, outputs))


def get_activations(model, x: np.ndarray, layer_names: str | Sequence[str] | None = None,
                    batch_size: int = BATCH_SIZE) -> dict[str, np.ndarray]:
    """Activations of ``layer_names`` (all layers but the input when None) for every image in ``x``.

    x: float32 (n, 55, 47, 3); 0..255 for a ``LoadedModel``. Returns
    ``{layer_name: float32 (n, ...)}`` in the order asked, like keract's
    ``get_activations(..., output_format="simple")``. Memory: the returned
    arrays plus one batch; ask for the layers you need on large sets.
    """
    names = _layer_names(model, layer_names)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in iter_activations(model, x, names, batch_size):
        for name in names:
            parts[name].append(batch[name])
    if len(x) == 0:
        return {name: np.zeros((0, *get_layer(model, name).output.shape[1:]), np.float32) for name in names}
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def channel_sums(activation: np.ndarray) -> np.ndarray:
    """Sum over every axis but the last (channels), in float64: (b, ..., C) -> (C,)."""
    return activation.reshape(-1, activation.shape[-1]).sum(axis=0, dtype=np.float64)


def mean_channel_activation(model, x: np.ndarray, layer_name: str,
                            batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Mean activation of each channel of ``layer_name`` over all images and positions of ``x``.

    Returns float64 (C,). Computed batch by batch (float64 sums), so memory
    stays bounded by one batch whatever the size of ``x``.
    """
    if len(x) == 0:
        raise LabInputError(None, "at least one image to average activations over", "an empty data set")
    total = None
    positions = 0
    for batch in iter_activations(model, x, [layer_name], batch_size):
        activation = batch[layer_name]
        sums = channel_sums(activation)
        total = sums if total is None else total + sums
        positions += activation.size // activation.shape[-1]
    return total / positions


def keract_activations(model, image: np.ndarray, layer_names: str | Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Activations of one image, shaped for ``keract.display_activations`` / ``display_heatmaps``.

    image: float32 (55, 47, 3) or (1, 55, 47, 3); 0..255 for a ``LoadedModel``.
    Returns ``{layer_name: float32 (1, ...)}``: keract skips arrays whose first
    axis is not 1, and its heatmaps need float32 (Pillow cannot resize float64).
    Each array is a fresh copy because ``display_heatmaps(merge_filters=True)``
    rescales the arrays it is given in place.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or len(image) != 1:
        raise ValueError(f"keract_activations takes one image (H, W, C) or (1, H, W, C), got shape {image.shape}")
    activations = get_activations(model, image, layer_names, batch_size=1)
    return {name: np.array(value, dtype=np.float32, copy=True) for name, value in activations.items()}


def firing_channels(activation: np.ndarray) -> np.ndarray:
    """Only the channels of ``activation`` (b, ..., C) that are non-zero somewhere: (b, ..., C').

    Keract's heatmaps rescale each channel by its own range, which is 0/0
    for a channel that never fires (the dormant decoys of a pruning-aware
    BadNet); dropping those channels keeps the merged heatmap defined.
    """
    firing = np.any(activation != 0, axis=tuple(range(activation.ndim - 1)))
    return activation[..., firing]
