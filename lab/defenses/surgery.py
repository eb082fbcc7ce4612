"""Weight surgery shared by every defense: copy a model with its weights, zero channels.

Zeroing channel c of a Conv or Dense layer sets its kernel's last-axis
slice ``[..., c]`` and its bias ``[c]`` to exactly 0: the channel's output is
then its activation of 0 (0 for ReLU), which is what pruning means here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def clone_keras(keras_model, weights: Sequence[np.ndarray] | None = None):
    """A new ``keras.Model`` with ``keras_model``'s architecture and a copy of its weights (or ``weights``)."""
    import keras

    clone = keras.models.clone_model(keras_model)
    clone.set_weights(keras_model.get_weights() if weights is None else weights)
    return clone


def clone_model(model, metadata: dict | None = None, weights: Sequence[np.ndarray] | None = None):
    """A copy of ``model`` (a ``LoadedModel``) with its own weights; input scale and scale source kept.

    ``metadata``: the copy's metadata (default: a copy of the original's).
    ``weights``: the copy's weights (default: a copy of the original's; e.g.
    a result reused from :mod:`lab.cache`). The copy has no path: it is not
    the file the original came from.
    """
    from lab.io.models import LoadedModel

    return LoadedModel(clone_keras(model.model, weights), model.input_scale, None, model.scale_source,
                       dict(model.metadata) if metadata is None else metadata)


def zero_channels(keras_model, layer: str, channels: Sequence[int]) -> list[np.ndarray]:
    """Set the kernel and bias of ``channels`` of ``layer`` to 0 in place; returns the previous weights.

    Pass the returned list to ``keras_model.get_layer(layer).set_weights`` to undo.
    """
    target = keras_model.get_layer(layer)
    old = target.get_weights()
    new = [array.copy() for array in old]
    channels = [int(c) for c in channels]
    for array in new[:2]:  # kernel (..., C) and bias (C,)
        array[..., channels] = 0.0
    target.set_weights(new)
    return old
