"""Planning a pruning sweep: is the exact shortcut valid for this model, and which engine runs it.

Exact shortcut. If the pruned layer's activation maps 0 to 0 (ReLU, linear,
tanh, ...) and only zero-preserving channel-wise layers (ReLU, max or average
pooling, dropout, padding, ...) lead from it to the measured layer, then
zeroing channel c makes the measured layer's channel c exactly 0 and nothing
else. So the measured layer is computed once per data set and every step
only reruns what comes after it on masked activations; an image whose
channel c is already all zero keeps its prediction and is skipped. Three
methods, chosen by :func:`plan_sweep`:

- ``"fast"``: the DeepID head (``conv_4`` and ``fc_1`` read ``pool_3``,
  then ``fc_2``, add, ReLU, output). ``fc_1`` and ``conv_4`` pre-activations
  are linear in ``pool_3``: each step subtracts channel c's contribution
  (kept in float64 so 60 subtractions add no visible rounding) and only
  ``fc_2`` and the output layer run, as large float32 matrix products.
- ``"masked"``: any Keras functional model with the property: the rest of
  the graph after the measured layer runs as a compiled function on masked
  activations.
- ``"zero-weights"``: the fallback where the property does not hold (e.g.
  BatchNorm after the conv, a sigmoid activation, a branch that bypasses the
  measured layer): every step really zeroes the weights and runs the whole
  network.

The engines themselves are in :mod:`lab.defenses.pruning_engines`; the
public sweep in :mod:`lab.defenses.pruning`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lab.constants import DEFAULT_LAYER, DEFAULT_MEASURE
from lab.errors import LabInputError
from lab.evaluation import activations

ORDERS = ("increasing", "decreasing")
METHODS = ("auto", "fast", "masked", "zero-weights")
# Activations f with f(0) == 0 exactly: a zeroed channel stays zero through them.
ZERO_PRESERVING_ACTIVATIONS = {"linear", "relu", "relu6", "leaky_relu", "elu", "selu", "tanh", "gelu", "silu",
                               "swish", "softsign", "hard_silu", "hard_swish", "mish"}
# Layers that act on each channel separately and keep an all-zero channel all zero.
CHANNELWISE_LAYERS = {"ReLU", "LeakyReLU", "ELU", "PReLU", "Activation", "Dropout", "SpatialDropout1D",
                      "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "GaussianNoise", "Identity",
                      "ActivityRegularization", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
                      "Cropping2D", "Cropping3D", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
                      "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D",
                      "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
                      "GlobalAveragePooling2D", "GlobalAveragePooling3D"}
PRUNABLE_LAYERS = {"Conv1D", "Conv2D", "Conv3D", "Dense"}  # kernel's last axis = output channels


@dataclasses.dataclass
class SweepPlan:
    """How a sweep will run: ``method`` ("fast", "masked" or "zero-weights") and ``reason`` in words."""

    layer: str
    measure: str
    n_channels: int
    method: str
    reason: str


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    return getattr(activation, "__name__", type(activation).__name__)


def _consumers(keras_model, layer) -> list:
    """Layers of ``keras_model`` that read ``layer``'s output.

    Keras 3 keeps the graph in nodes; only nodes of this model count (a layer
    may also be used by other models built from the same layers).
    """
    # Keras 3 Functional keeps its own nodes in _nodes_by_depth {depth: [Node, ...]}.
    own_nodes = {id(node) for nodes in keras_model._nodes_by_depth.values() for node in nodes}
    return [node.operation for node in layer._outbound_nodes if id(node) in own_nodes]


def _keeps_zero(layer) -> bool:
    """True if ``layer`` maps an all-zero channel to an all-zero channel and mixes no channels."""
    kind = type(layer).__name__
    if kind not in CHANNELWISE_LAYERS:
        return False
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        return False
    if kind == "Activation":
        return _activation_name(layer) in ZERO_PRESERVING_ACTIVATIONS
    if kind == "ReLU":  # ReLU(threshold=t > 0, negative_slope > 0) maps 0 to a negative value
        return config.get("threshold", 0.0) <= 0 or config.get("negative_slope", 0.0) == 0
    return True


def _masking_inexact_reason(keras_model, pruned, measured) -> str | None:
    """Why masking the measured layer would differ from zeroing the pruned layer's weights, or None."""
    if _activation_name(pruned) not in ZERO_PRESERVING_ACTIVATIONS:
        return f"{pruned.name} has activation {_activation_name(pruned)!r}, which does not map 0 to 0"
    if pruned.get_config().get("data_format", "channels_last") != "channels_last":
        return f"{pruned.name} is channels_first"
    model_outputs = {id(tensor) for tensor in keras_model.outputs}
    current = pruned
    while current is not measured:
        if len(current._inbound_nodes) != 1:  # a shared layer: its output is not one tensor
            return f"{current.name} is used more than once"
        if id(current.output) in model_outputs:
            return f"{current.name} is a model output between {pruned.name} and {measured.name}"
        following = _consumers(keras_model, current)
        if len(following) != 1:
            names = ", ".join(layer.name for layer in following) or "nothing"
            return (f"{current.name} feeds {names}; only a single chain of channel-wise layers from "
                    f"{pruned.name} to {measured.name} lets a masked {measured.name} stand for the pruned model")
        current = following[0]
        if not _keeps_zero(current):
            return (f"{current.name} ({type(current).__name__}) between {pruned.name} and {measured.name} does not "
                    "keep a zeroed channel at zero (or mixes channels)")
    return None


def head_model(keras_model, measured):
    """The rest of the network as a model taking the measured layer's output, or None if other inputs are needed."""
    import keras

    try:
        return keras.Model(measured.output, keras_model.outputs, name=f"{keras_model.name}_head")
    except ValueError:  # the outputs also depend on tensors that bypass the measured layer
        return None


def _single(keras_model, layer, kind: str | tuple[str, ...]):
    following = _consumers(keras_model, layer)
    kinds = (kind,) if isinstance(kind, str) else kind
    if len(following) == 1 and type(following[0]).__name__ in kinds:
        return following[0]
    return None


def _is_plain_relu(layer) -> bool:
    """``Activation("relu")`` or ``ReLU()`` with its default settings."""
    if type(layer).__name__ == "Activation":
        return _activation_name(layer) == "relu"
    config = layer.get_config()
    return config.get("max_value") is None and config.get("negative_slope", 0.0) == 0 and config.get("threshold", 0.0) == 0


def deepid_head_weights(keras_model, measured) -> dict | None:
    """Weights of a DeepID-shaped head after ``measured``, or None if the head has another shape.

    Shape (recognised by structure, not by names): measured -> Flatten -> Dense
    (linear) and measured -> Conv2D (ReLU, stride 1, valid) -> Flatten -> Dense
    (linear); both Dense -> Add -> ReLU -> Dense (softmax or linear), the
    model's only output.
    """
    if len(measured.output.shape) != 4 or len(keras_model.outputs) != 1:
        return None
    consumers = _consumers(keras_model, measured)
    readers = {type(layer).__name__: layer for layer in consumers}
    if len(consumers) != 2 or sorted(readers) != ["Conv2D", "Flatten"]:
        return None
    conv = readers["Conv2D"]
    config = conv.get_config()
    if (tuple(config["strides"]) != (1, 1) or config["padding"] != "valid" or tuple(config["dilation_rate"]) != (1, 1)
            or config.get("groups", 1) != 1 or config["data_format"] != "channels_last" or _activation_name(conv) != "relu"):
        return None
    flat_conv = _single(keras_model, conv, "Flatten")
    dense_conv = flat_conv and _single(keras_model, flat_conv, "Dense")
    dense_direct = _single(keras_model, readers["Flatten"], "Dense")
    if not (dense_conv and dense_direct) or {_activation_name(dense_conv), _activation_name(dense_direct)} != {"linear"}:
        return None
    if any(flat.get_config().get("data_format", "channels_last") != "channels_last"
           for flat in (flat_conv, readers["Flatten"])):
        return None  # the kernels' row order below assumes channels-last flattening
    add = _single(keras_model, dense_conv, "Add")
    if add is None or _single(keras_model, dense_direct, "Add") is not add:
        return None
    relu = _single(keras_model, add, ("Activation", "ReLU"))
    if relu is None or not _is_plain_relu(relu):
        return None
    output = _single(keras_model, relu, "Dense")
    if output is None or output.output is not keras_model.outputs[0] or _activation_name(output) not in ("softmax", "linear"):
        return None
    weights = {}
    for key, layer in (("direct", dense_direct), ("conv", conv), ("merge", dense_conv), ("output", output)):
        kernel, *bias = [np.asarray(w) for w in layer.get_weights()]
        weights[key] = (kernel, bias[0] if bias else np.zeros(kernel.shape[-1], kernel.dtype))
    weights["softmax"] = _activation_name(output) == "softmax"
    return weights


def _check_prunable(model, pruned, measured) -> int:
    keras_model, _ = activations.keras_model_and_preprocess(model)
    path = getattr(model, "path", None)
    if type(pruned).__name__ not in PRUNABLE_LAYERS:
        raise LabInputError(path, f"a Conv or Dense layer to prune ({', '.join(sorted(PRUNABLE_LAYERS))})",
                            f"{pruned.name} of type {type(pruned).__name__}")
    n_channels = int(pruned.get_weights()[0].shape[-1])
    measured_channels = int(measured.output.shape[-1])
    if measured_channels != n_channels:
        raise LabInputError(path, f"a measured layer with one channel per channel of {pruned.name} ({n_channels})",
                            f"{measured.name} with {measured_channels} channels")
    return n_channels


def plan_sweep(model, layer: str = DEFAULT_LAYER, measure: str = DEFAULT_MEASURE, method: str = "auto") -> SweepPlan:
    """Decide how to sweep ``layer`` of ``model`` (a ``LoadedModel``), ranked by ``measure``; say why.

    ``method="auto"`` picks "fast" for a DeepID-shaped head, "masked" for any
    other model with the exactness property (module docstring), and
    "zero-weights" otherwise. Forcing "fast" or "masked" where it would not
    be exact raises :class:`LabInputError`.
    """
    if method not in METHODS:
        raise LabInputError(None, f"a sweep method in {', '.join(METHODS)}", repr(method))
    keras_model, _ = activations.keras_model_and_preprocess(model)
    if len(keras_model.outputs) != 1:
        raise LabInputError(getattr(model, "path", None), "a model with one output", f"{len(keras_model.outputs)} outputs")
    pruned, measured = activations.get_layer(model, layer), activations.get_layer(model, measure)
    n_channels = _check_prunable(model, pruned, measured)
    inexact = _masking_inexact_reason(keras_model, pruned, measured)
    if inexact is None and head_model(keras_model, measured) is None:
        inexact = f"the layers after {measure} also read tensors that bypass it"
    head = None if inexact else deepid_head_weights(keras_model, measured)
    exact = (f"exact: zeroing a channel of {layer} makes that channel of {measure} exactly 0, so {measure} is "
             f"computed once per data set and each step reruns only what follows on masked activations")
    choices = {"zero-weights": f"every step zeroes the real weights and runs the whole network"
                               f"{'' if inexact is None else ' (the masking shortcut would not be exact: ' + inexact + ')'}"}
    if inexact is None:
        choices["masked"] = exact
        if head is not None:
            choices["fast"] = exact + "; the DeepID head updates the linear layers reading " + measure + \
                              " by subtracting one channel's contribution"
    chosen = method if method != "auto" else next(m for m in ("fast", "masked", "zero-weights") if m in choices)
    if chosen not in choices:
        why = inexact or f"the layers after {measure} are not DeepID-shaped (Flatten->Dense and Conv2D->Flatten->Dense, Add, ReLU, Dense)"
        raise LabInputError(getattr(model, "path", None), f"a model where method {chosen!r} is exact", why)
    return SweepPlan(layer, measure, n_channels, chosen, choices[chosen])


def rank_channels(mean_activation: np.ndarray, order: str = "increasing") -> np.ndarray:
    """Channel indices (int64 (C,)) in pruning order: least active first, or most active first.

    Ties (e.g. dead channels, all exactly 0) keep channel-index order, so a
    rerun gives the same order.
    """
    if order not in ORDERS:
        raise LabInputError(None, f"--order one of {', '.join(ORDERS)}", repr(order))
    key = np.asarray(mean_activation, dtype=np.float64)
    return np.argsort(key if order == "increasing" else -key, kind="stable").astype(np.int64)
