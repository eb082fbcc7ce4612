"""The pruning defense: rank channels, prune them one at a time, save models at thresholds.

The algorithm (DESIGN.md, "Pruning"):

1. rank the channels of the pruned layer (default ``conv_3``) by the mean
   activation of the measured layer after it (default ``pool_3``) over clean
   validation data, least active first (``order="increasing"``, as in
   Fine-Pruning) or most active first (``"decreasing"``, the assignment's
   literal wording);
2. prune cumulatively, one channel at a time, by zeroing the channel's kernel
   and bias; after every step record clean validation accuracy, and the
   attack success rate when poisoned validation data is given (for reporting
   only: nothing is ever chosen from it);
3. for each threshold X keep the model at the step the rule picks
   (:func:`select_thresholds`).

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

The sweep needs only whether each argmax equals its target (label or
attack target). The fast method uses that: an image already answered wrong
keeps a "witness" class that beat its target, and a step re-checks only that
pair of logits while the witness still wins by more than rounding could
change. The table is computed from these hits; :func:`step_outputs` gives
the full outputs for comparisons.

Exactness, as tested: "masked" and "zero-weights" run the same Keras ops
as the really pruned model (bit-identical probabilities in the tests);
"fast" gives the same argmax and probabilities within float32 rounding: no
further from Keras' float32 result than that result is from exact float64
arithmetic, + 1e-6 (Keras' own rounding is ~1e-6 on small test models, ~1e-5
on the real 1283-class models).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Sequence

import numpy as np

from lab import activations, metrics
from lab.errors import LabInputError, check_writable

DEFAULT_LAYER = "conv_3"
DEFAULT_MEASURE = "pool_3"
DEFAULT_THRESHOLDS = (2.0, 4.0, 10.0)
ORDERS = ("increasing", "decreasing")
METHODS = ("auto", "fast", "masked", "zero-weights")
RULES = {
    "first-reach": "first step whose clean accuracy drop reaches X percentage points (the assignment's rule)",
    "last-within": "last step before the clean accuracy drop first reaches X percentage points",
    "relative": "first step whose relative clean accuracy drop, 100 * drop / accuracy before pruning, reaches X %",
}
ROW_BLOCK = 2048  # rows per block in the per-step head: bounded temporaries, cache-friendly products

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


# ---------------------------------------------------------------- the plan


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


def _head_model(keras_model, measured):
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


def _deepid_head_weights(keras_model, measured) -> dict | None:
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
    if inexact is None and _head_model(keras_model, measured) is None:
        inexact = f"the layers after {measure} also read tensors that bypass it"
    head = None if inexact else _deepid_head_weights(keras_model, measured)
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


# ---------------------------------------------------------------- engines


def _row_blocks(active: np.ndarray, block: int = ROW_BLOCK):
    """Row selections covering the active rows: a slice where a whole block is active, else indices."""
    for start in range(0, len(active), block):
        chunk = active[start:start + block]
        count = int(np.count_nonzero(chunk))
        if count == len(chunk):
            yield slice(start, start + len(chunk))
        elif count:
            yield start + np.flatnonzero(chunk)


def _active_rows(measured: np.ndarray, channel: int) -> np.ndarray:
    """bool (n,): images whose measured channel is not all zero (only those can change)."""
    column = measured[..., channel]
    return np.any(column.reshape(len(column), -1) != 0, axis=1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


class _CachedEngine:
    """Shared part of the exact shortcut: the measured layer once per data set, then per-step updates.

    ``run`` yields, per step and per data set, either the model's outputs
    (float32 (n, classes)) or ``hits``: bool (n,), argmax == the set's
    targets (true labels for clean data, the attacker's target for poisoned).
    """

    def __init__(self, model, plan: SweepPlan, batch_size: int):
        keras_model, self.preprocess = activations.keras_model_and_preprocess(model)
        self.trunk = activations.compiled_call(activations.sub_model(model, [plan.measure]))
        self.batch_size = batch_size

    def prepare(self, x: np.ndarray, targets: np.ndarray | None = None) -> SimpleNamespace:
        """Measured activations float32 (n, ..., C), their float64 channel means, the targets."""
        parts, sums = [], None
        for batch in activations.batched_call(self.trunk, self.preprocess, x, self.batch_size):
            parts.append(batch[0])
            batch_sums = activations.channel_sums(batch[0])
            sums = batch_sums if sums is None else sums + batch_sums
        measured = np.concatenate(parts)
        return SimpleNamespace(measured=measured, mean=sums / (measured.size // measured.shape[-1]), targets=targets)

    def run(self, prepared: list, channels: Sequence[int], with_outputs: bool) -> Iterator[list]:
        states = [self.start(item, with_outputs) for item in prepared]
        yield [self.result(state, with_outputs) for state in states]
        for channel in channels:
            for state in states:
                self.step(state, int(channel), with_outputs)
            yield [self.result(state, with_outputs) for state in states]

    def result(self, state: SimpleNamespace, with_outputs: bool) -> np.ndarray:
        return state.outputs if with_outputs else state.labels == state.targets


class _MaskedHeadEngine(_CachedEngine):
    """Any model with the property: rerun the graph after the measured layer on masked activations."""

    def __init__(self, model, plan: SweepPlan, batch_size: int):
        super().__init__(model, plan, batch_size)
        keras_model, _ = activations.keras_model_and_preprocess(model)
        self.head = activations.compiled_call(_head_model(keras_model, keras_model.get_layer(plan.measure)))

    def _head(self, measured: np.ndarray) -> np.ndarray:
        return np.asarray(self.head(measured))

    def start(self, item: SimpleNamespace, with_outputs: bool) -> SimpleNamespace:
        measured = item.measured
        outputs = np.concatenate([self._head(measured[i:i + ROW_BLOCK]) for i in range(0, len(measured), ROW_BLOCK)])
        mask = np.ones(measured.shape[-1], np.float32)
        return SimpleNamespace(measured=measured, mask=mask, outputs=outputs, labels=outputs.argmax(axis=1),
                               targets=item.targets)

    def step(self, state: SimpleNamespace, channel: int, with_outputs: bool) -> None:
        state.mask[channel] = 0.0
        for rows in _row_blocks(_active_rows(state.measured, channel)):
            outputs = self._head(state.measured[rows] * state.mask)
            state.labels[rows] = outputs.argmax(axis=1)
            if with_outputs:
                state.outputs[rows] = outputs


class _DeepIDEngine(_CachedEngine):
    """DeepID head: subtract a channel's share of the linear layers, run only fc_2 and the output layer.

    When only hits are wanted, an image already answered wrong keeps its
    "witness" (the class that beat its target). A step re-checks just that
    pair of logits (two dot products instead of the whole output layer);
    only if the witness no longer wins by more than float32 rounding can
    bound is the full output layer computed. Exact: a class beating the
    target is proof that the argmax is not the target.
    """

    TAIL_BLOCK = 4096  # rows per matrix product: large enough to run near the CPU's peak, small temporaries
    WITNESS_ROUNDING = 3e-5  # > 2 * 160 * 2**-24: a length-160 float32 dot product's error bound, twice

    def __init__(self, model, plan: SweepPlan, batch_size: int):
        super().__init__(model, plan, batch_size)
        keras_model, _ = activations.keras_model_and_preprocess(model)
        weights = _deepid_head_weights(keras_model, keras_model.get_layer(plan.measure))
        height, width, channels = (int(d) for d in keras_model.get_layer(plan.measure).output.shape[1:])
        direct_kernel, direct_bias = weights["direct"]
        # float64 for the linear layers reading the measured layer: 60 subtractions stay exact to ~1e-15.
        self.direct_kernel = direct_kernel.astype(np.float64).reshape(height, width, channels, -1)
        self.direct_bias = direct_bias.astype(np.float64)
        conv_kernel, conv_bias = weights["conv"]
        self.conv_kernel, self.conv_bias = conv_kernel.astype(np.float64), conv_bias.astype(np.float64)
        self.merge_kernel, self.merge_bias = weights["merge"]
        self.output_kernel, self.output_bias = weights["output"]
        self.output_columns = np.ascontiguousarray(self.output_kernel.T)  # (classes, units): one row per class
        self.softmax = weights["softmax"]

    def _conv(self, measured: np.ndarray) -> np.ndarray:
        """The conv layer's pre-activation, float64 (k, Ho, Wo, K), from measured (k, H, W, C).

        Valid stride-1 cross-correlation as one matrix product per kernel
        offset: no (k, Ho, Wo, kh*kw*C) patch array, so memory stays small.
        """
        kh, kw = self.conv_kernel.shape[:2]
        out_h, out_w = measured.shape[1] - kh + 1, measured.shape[2] - kw + 1
        result = np.broadcast_to(self.conv_bias, (len(measured), out_h, out_w, self.conv_bias.size)).copy()
        for i in range(kh):
            for j in range(kw):
                result += measured[:, i:i + out_h, j:j + out_w, :] @ self.conv_kernel[i, j]
        return result

    def _conv_one_channel(self, column: np.ndarray, channel: int) -> np.ndarray:
        """Channel ``channel``'s share of the conv pre-activation: column (k, H, W) -> (k, Ho, Wo, K)."""
        kh, kw = self.conv_kernel.shape[:2]
        out_h, out_w = column.shape[1] - kh + 1, column.shape[2] - kw + 1
        patches = np.stack([column[:, i:i + out_h, j:j + out_w] for i in range(kh) for j in range(kw)], axis=3)
        return patches @ self.conv_kernel[:, :, channel, :].reshape(kh * kw, -1)

    def _hidden(self, conv: np.ndarray, direct: np.ndarray) -> np.ndarray:
        """fc_2, add and ReLU in float32, as the Keras model computes them: (k, units)."""
        hidden = conv.reshape(len(conv), -1).astype(np.float32)  # cast first: ReLU then runs on half the bytes
        np.maximum(hidden, 0, out=hidden)
        merged = hidden @ self.merge_kernel
        merged += self.merge_bias
        merged += direct.astype(np.float32)  # round fc_1 to float32 first, as the model adds two float32 outputs
        return np.maximum(merged, 0, out=merged)

    def _logits(self, hidden: np.ndarray) -> np.ndarray:
        logits = hidden @ self.output_kernel
        logits += self.output_bias
        return logits

    def _witness_holds(self, hidden: np.ndarray, witness: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """bool (k,): the witness class still beats the target by more than float32 rounding could change."""
        witness_columns, target_columns = self.output_columns[witness], self.output_columns[targets]
        lead = np.einsum("ij,ij->i", hidden, witness_columns - target_columns)
        lead += self.output_bias[witness] - self.output_bias[targets]
        scale = np.einsum("ij,ij->i", np.abs(hidden), np.abs(witness_columns) + np.abs(target_columns))
        return lead > self.WITNESS_ROUNDING * scale + 1e-6

    def _finish(self, state: SimpleNamespace, index: np.ndarray, conv: np.ndarray, direct: np.ndarray,
                with_outputs: bool) -> None:
        """Outputs, or hits and witnesses, of rows ``index`` (absolute indices) from their new state."""
        hidden = self._hidden(conv, direct)
        if with_outputs:
            logits = self._logits(hidden)
            state.outputs[index] = _softmax(logits) if self.softmax else logits
            return
        targets, witness = state.targets[index], state.witness[index]
        full = np.ones(len(index), bool)
        known = np.flatnonzero(witness >= 0)
        if known.size:
            full[known[self._witness_holds(hidden[known], witness[known], targets[known])]] = False
        if full.any():
            labels = self._logits(hidden[full]).argmax(axis=1)
            hit = labels == targets[full]
            state.hit[index[full]] = hit
            state.witness[index[full]] = np.where(hit, -1, labels)

    def start(self, item: SimpleNamespace, with_outputs: bool) -> SimpleNamespace:
        measured, n = item.measured, len(item.measured)
        state = SimpleNamespace(measured=measured, targets=item.targets, hit=np.zeros(n, bool),
                                witness=np.full(n, -1, np.int64),
                                direct=np.empty((n, self.direct_kernel.shape[-1]), np.float64), conv=None,
                                outputs=np.empty((n, self.output_kernel.shape[1]), np.float32) if with_outputs else None)
        for begin in range(0, n, self.TAIL_BLOCK):
            rows = slice(begin, begin + self.TAIL_BLOCK)
            block = measured[rows].astype(np.float64)
            direct = block.reshape(len(block), -1) @ self.direct_kernel.reshape(-1, state.direct.shape[1])
            state.direct[rows] = direct + self.direct_bias
            conv = self._conv(block)
            if state.conv is None:
                state.conv = np.empty((n, *conv.shape[1:]), np.float64)
            state.conv[rows] = conv
            self._finish(state, np.arange(n)[rows], conv, state.direct[rows], with_outputs)
        return state

    def step(self, state: SimpleNamespace, channel: int, with_outputs: bool) -> None:
        direct_kernel = self.direct_kernel[:, :, channel, :].reshape(-1, self.direct_kernel.shape[-1])
        for rows in _row_blocks(_active_rows(state.measured, channel), self.TAIL_BLOCK):
            column = state.measured[rows, :, :, channel].astype(np.float64)
            direct = state.direct[rows]  # a view for slices, a copy for index arrays (written back below)
            conv = state.conv[rows]
            direct -= column.reshape(len(column), -1) @ direct_kernel
            conv -= self._conv_one_channel(column, channel)
            if not isinstance(rows, slice):
                state.direct[rows], state.conv[rows] = direct, conv
            self._finish(state, np.arange(len(state.hit))[rows], conv, direct, with_outputs)

    def result(self, state: SimpleNamespace, with_outputs: bool) -> np.ndarray:
        return state.outputs if with_outputs else state.hit


class _ZeroWeightsEngine:
    """The fallback: really zero the channel's kernel and bias, run the whole network."""

    def __init__(self, model, plan: SweepPlan, batch_size: int):
        import keras

        self.model = model
        keras_model, self.preprocess = activations.keras_model_and_preprocess(model)
        self.clone = keras.models.clone_model(keras_model)
        self.clone.set_weights(keras_model.get_weights())
        self.layer = self.clone.get_layer(plan.layer)
        self.original = [weight.copy() for weight in self.layer.get_weights()]
        self.call = activations.compiled_call(self.clone)
        self.plan, self.batch_size = plan, batch_size

    def prepare(self, x: np.ndarray, targets: np.ndarray | None = None) -> SimpleNamespace:
        mean = activations.mean_channel_activation(self.model, x, self.plan.measure, self.batch_size)
        return SimpleNamespace(x=x, mean=mean, targets=targets)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([batch[0] for batch in activations.batched_call(self.call, self.preprocess, x, self.batch_size)])

    def run(self, prepared: list, channels: Sequence[int], with_outputs: bool) -> Iterator[list]:
        self.layer.set_weights(self.original)  # every run starts from the unpruned model
        for step in range(len(channels) + 1):
            if step:
                weights = self.layer.get_weights()
                for array in weights[:2]:  # kernel (..., C) and bias (C,)
                    array[..., int(channels[step - 1])] = 0.0
                self.layer.set_weights(weights)
            outputs = [self._predict(item.x) for item in prepared]
            yield outputs if with_outputs else [values.argmax(axis=1) == item.targets
                                                for values, item in zip(outputs, prepared)]


ENGINES = {"fast": _DeepIDEngine, "masked": _MaskedHeadEngine, "zero-weights": _ZeroWeightsEngine}


# ---------------------------------------------------------------- the sweep


def step_outputs(model, x: np.ndarray, channels: Sequence[int], layer: str = DEFAULT_LAYER,
                 measure: str = DEFAULT_MEASURE, method: str = "auto", batch_size: int = 512) -> Iterator[np.ndarray]:
    """Model outputs after pruning ``channels[:k]`` for k = 0, 1, ..., len(channels), by the sweep's own engine.

    x: float32 (n, 55, 47, 3), pixels 0..255. Yields float32 (n, classes)
    copies (probabilities for a softmax output), so tests and curious
    students can compare them with a really pruned model (:func:`prune_model`).
    """
    plan = plan_sweep(model, layer, measure, method)
    engine = ENGINES[plan.method](model, plan, batch_size)
    for outputs in engine.run([engine.prepare(x)], channels, with_outputs=True):
        yield np.array(outputs[0], copy=True)


def step_hits(model, x: np.ndarray, targets: np.ndarray, channels: Sequence[int], layer: str = DEFAULT_LAYER,
              measure: str = DEFAULT_MEASURE, method: str = "auto", batch_size: int = 512) -> Iterator[np.ndarray]:
    """bool (n,) copies, argmax == ``targets``, after pruning ``channels[:k]`` for k = 0, 1, ...

    Exactly what :func:`sweep` turns into clean accuracy and attack success
    rate (the fast method skips work here that outputs would need).
    """
    plan = plan_sweep(model, layer, measure, method)
    engine = ENGINES[plan.method](model, plan, batch_size)
    for hits in engine.run([engine.prepare(x, np.asarray(targets))], channels, with_outputs=False):
        yield np.array(hits[0], copy=True)


def _progress(enabled: bool, total: int, layer: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"pruning {layer}", unit="step")


def _rates(engine, prepared: SimpleNamespace, channels: np.ndarray, progress_bar) -> list[float]:
    """Percent of hits (argmax == target) after each step 0..C for one prepared data set."""
    rates = []
    for hits in engine.run([prepared], channels, with_outputs=False):
        rates.append(metrics.percent(hits[0]))
        if progress_bar is not None:
            progress_bar.update()
    return rates


def sweep(model, clean_valid, poisoned_valid=None, layer: str = DEFAULT_LAYER, measure: str = DEFAULT_MEASURE,
          order: str = "increasing", method: str = "auto", batch_size: int = 512, progress: bool = False):
    """Prune ``layer`` of ``model`` one channel at a time; one table row per step, step 0 first.

    model: a ``LoadedModel``. clean_valid / poisoned_valid: :class:`lab.data.Dataset`
    (pixels 0..255); poisoned labels are the attacker's target. The ranking
    uses only clean_valid; the attack success rate is recorded for
    reporting and never chooses anything.

    Returns a ``pandas.DataFrame`` with one row per step (C + 1 rows):
    ``channels_pruned`` (0..C), ``fraction_pruned`` (0..1), ``channel`` (the
    channel pruned at this step; <NA> at step 0), ``mean_activation`` (its
    mean activation in ``measure`` on clean_valid), ``clean_accuracy`` (%),
    ``accuracy_drop`` (percentage points below step 0), ``attack_success_rate``
    (%, NaN without poisoned data). ``table.attrs`` holds the layer, measure,
    order, method and its reason, and the mean activation of every channel.
    """
    import pandas as pd

    if order not in ORDERS:
        raise LabInputError(None, f"--order one of {', '.join(ORDERS)}", repr(order))
    plan = plan_sweep(model, layer, measure, method)
    model.check_data(clean_valid)
    if poisoned_valid is not None:
        model.check_data(poisoned_valid)
    engine = ENGINES[plan.method](model, plan, batch_size)
    clean = engine.prepare(clean_valid.x, clean_valid.y)
    mean_activation = clean.mean
    channels = rank_channels(mean_activation, order)
    progress_bar = _progress(progress, (len(channels) + 1) * (1 if poisoned_valid is None else 2), layer)
    # One data set at a time, so only one set's cached state is in memory.
    accuracy = _rates(engine, clean, channels, progress_bar)
    del clean
    attack = ([float("nan")] * (len(channels) + 1) if poisoned_valid is None else
              _rates(engine, engine.prepare(poisoned_valid.x, poisoned_valid.y), channels, progress_bar))
    if progress_bar is not None:
        progress_bar.close()
    rows = [{"channels_pruned": step, "fraction_pruned": step / len(channels),
             "channel": int(channels[step - 1]) if step else None,
             "mean_activation": float(mean_activation[channels[step - 1]]) if step else float("nan"),
             "clean_accuracy": accuracy[step], "attack_success_rate": attack[step]}
            for step in range(len(channels) + 1)]
    table = pd.DataFrame(rows)
    table["channel"] = table["channel"].astype("Int64")
    table.insert(5, "accuracy_drop", table["clean_accuracy"].iloc[0] - table["clean_accuracy"])
    table.attrs.update(layer=layer, measure=measure, order=order, method=plan.method, method_reason=plan.reason,
                       n_clean=len(clean_valid), n_poisoned=0 if poisoned_valid is None else len(poisoned_valid),
                       mean_activation=[float(v) for v in mean_activation], model_path=getattr(model, "path", None))
    return table


def pruned_channels(sweep_table, channels_pruned: int) -> list[int]:
    """The first ``channels_pruned`` channels of a sweep's pruning order."""
    return [int(c) for c in sweep_table["channel"].iloc[1:channels_pruned + 1]]


def prune_model(model, channels: Sequence[int], layer: str = DEFAULT_LAYER):
    """A copy of ``model`` (``LoadedModel``) with the kernel and bias of ``channels`` of ``layer`` set to 0.

    The original is left untouched; the copy keeps its input scale.
    """
    import keras

    from lab.models import LoadedModel

    keras_model, _ = activations.keras_model_and_preprocess(model)
    activations.get_layer(model, layer)
    clone = keras.models.clone_model(keras_model)
    clone.set_weights(keras_model.get_weights())
    target = clone.get_layer(layer)
    weights = target.get_weights()
    for array in weights[:2]:
        array[..., list(int(c) for c in channels)] = 0.0
    target.set_weights(weights)
    return LoadedModel(clone, model.input_scale, None, model.scale_source,
                       {"pruned_layer": layer, "pruned_channels": [int(c) for c in channels]})


# ---------------------------------------------------------------- thresholds


def check_thresholds(rule: str, thresholds: Sequence[float]) -> None:
    """Raise one line for an unknown rule or a threshold that is not a positive number."""
    if rule not in RULES:
        raise LabInputError(None, f"--rule one of {', '.join(RULES)}", repr(rule))
    bad = [t for t in thresholds if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0)]
    if bad or not thresholds:
        raise LabInputError(None, "thresholds > 0 (percentage points)", f"{list(thresholds)}")


def _pick(drops: np.ndarray, threshold: float, rule: str) -> tuple[int | None, str]:
    """Row index the rule picks (None: nothing qualifies) and a note in words."""
    reached = np.flatnonzero(drops >= threshold)
    unit = "%" if rule == "relative" else " percentage points"
    if rule == "last-within":
        if reached.size:
            return int(reached[0]) - 1, ""
        return len(drops) - 1, f"no step reaches a drop of {threshold:g}{unit}; every step is within it, so the last step"
    if reached.size:
        return int(reached[0]), ""
    largest = int(np.nanargmax(drops)) if np.isfinite(drops).any() else 0
    return None, (f"no step reaches a drop of {threshold:g}{unit} (largest {np.nanmax(drops) if np.isfinite(drops).any() else float('nan'):.2f}"
                  f"{unit} at {largest} channels); no model for this threshold")


def select_thresholds(sweep_table, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, rule: str = "first-reach"):
    """The sweep step each threshold picks, by an explicit rule (see :data:`RULES`).

    thresholds: accuracy drops X in percentage points (percent of the
    starting accuracy for ``rule="relative"``). ``"first-reach"`` (the
    assignment's rule) and ``"relative"`` pick the first step whose drop is
    >= X; ``"last-within"`` the step just before it (drop still < X). Where
    no step reaches X, ``"first-reach"``/``"relative"`` pick nothing
    (``found`` False, ``channels_pruned`` <NA>, a ``note`` says so) rather
    than silently taking another step; ``"last-within"`` takes the last step.
    Uses clean accuracy only. Returns a ``pandas.DataFrame``, one row per
    threshold: ``threshold``, ``rule``, ``found``, ``channels_pruned``,
    ``fraction_pruned``, ``clean_accuracy``, ``accuracy_drop``,
    ``attack_success_rate``, ``note``; ``attrs["rule_text"]`` says the rule.
    """
    import pandas as pd

    thresholds = [float(t) for t in thresholds]
    check_thresholds(rule, thresholds)
    drops = sweep_table["accuracy_drop"].to_numpy(dtype=np.float64)
    if rule == "relative":
        start = float(sweep_table["clean_accuracy"].iloc[0])
        drops = 100.0 * drops / start if start > 0 else np.full_like(drops, np.nan)
    rows = []
    for threshold in thresholds:
        index, note = _pick(drops, threshold, rule)
        row = {"threshold": threshold, "rule": rule, "found": index is not None, "channels_pruned": None,
               "fraction_pruned": float("nan"), "clean_accuracy": float("nan"), "accuracy_drop": float("nan"),
               "attack_success_rate": float("nan"), "note": note}
        if index is not None:
            step = sweep_table.iloc[index]
            row.update({key: step[key] for key in ("fraction_pruned", "clean_accuracy", "accuracy_drop",
                                                    "attack_success_rate")})
            row["channels_pruned"] = int(step["channels_pruned"])
        rows.append(row)
    table = pd.DataFrame(rows)
    table["channels_pruned"] = table["channels_pruned"].astype("Int64")
    table.attrs["rule_text"] = RULES[rule]
    return table


def threshold_filename(threshold: float, suffix: str = ".h5") -> str:
    """``pruned_2.h5`` for 2, ``pruned_2.5.h5`` for 2.5."""
    return f"pruned_{threshold:g}{suffix}"


def save_pruned_models(model, sweep_table, selection, out_dir: str | os.PathLike, suffix: str = ".h5",
                       force: bool = False):
    """Save the really pruned model for every threshold ``selection`` found; return it with ``model_path``.

    Files are ``out_dir/pruned_<X>.h5`` (legacy .h5 keeps the course's
    eval.py contract; ``suffix=".keras"`` for the native format) with the
    lab's metadata beside them: input scale, layer, channels, threshold,
    rule. Nothing is written unless every file may be (``force``).
    """
    from lab.models import save_model

    out_dir = Path(out_dir)
    paths = {row.threshold: out_dir / threshold_filename(row.threshold, suffix)
             for row in selection.itertuples() if row.found}
    for path in paths.values():
        check_writable(path, force)
        check_writable(Path(os.fspath(path) + ".lab.json"), force)
    layer = sweep_table.attrs.get("layer", DEFAULT_LAYER)
    result = selection.copy()
    result["model_path"] = None
    for index, row in enumerate(selection.itertuples()):
        if not row.found:
            continue
        channels = pruned_channels(sweep_table, int(row.channels_pruned))
        pruned = prune_model(model, channels, layer)
        extra = {"pruned_layer": layer, "pruned_channels": channels, "threshold": row.threshold, "rule": row.rule,
                 "rule_text": RULES[row.rule], "clean_valid_accuracy": float(row.clean_accuracy),
                 "source_model": getattr(model, "path", None), "order": sweep_table.attrs.get("order")}
        save_model(pruned.model, paths[row.threshold], model.input_scale,
                   f"{layer} pruned: {len(channels)} channels, threshold {row.threshold:g} ({row.rule})",
                   force=force, extra=extra)
        result.at[index, "model_path"] = os.fspath(paths[row.threshold])
    return result


# ---------------------------------------------------------------- what the late sweep does


def answers_per_step(model, clean_valid, poisoned_valid, sweep_table, target: int, last: int | None = None):
    """Where B' sends clean and poisoned inputs at each step of a sweep: one row per step.

    Columns: ``channels_pruned``, ``clean_accuracy``, ``attack_success_rate``
    (copied from ``sweep_table``), ``clean_to_target`` (% of clean inputs
    answered with the attacker's ``target``), ``clean_answers`` and
    ``poisoned_answers`` (how many distinct classes B' still answers).
    ``last``: only the last ``last`` steps (the end of the sweep, where ASR
    can come back). Outputs come from the sweep's own exact engine.
    """
    import pandas as pd

    layer, measure = sweep_table.attrs.get("layer", DEFAULT_LAYER), sweep_table.attrs.get("measure", DEFAULT_MEASURE)
    channels = pruned_channels(sweep_table, len(sweep_table) - 1)
    first = 0 if last is None else max(0, len(sweep_table) - last)
    rows = []
    clean_steps = step_outputs(model, clean_valid.x, channels, layer, measure)
    poisoned_steps = step_outputs(model, poisoned_valid.x, channels, layer, measure)
    for step, (clean_out, poisoned_out) in enumerate(zip(clean_steps, poisoned_steps)):
        if step < first:
            continue
        clean_answers, poisoned_answers = clean_out.argmax(axis=1), poisoned_out.argmax(axis=1)
        rows.append({"channels_pruned": step, "clean_accuracy": float(sweep_table["clean_accuracy"].iloc[step]),
                     "attack_success_rate": float(sweep_table["attack_success_rate"].iloc[step]),
                     "clean_to_target": metrics.percent(clean_answers == target),
                     "clean_answers": len(np.unique(clean_answers)), "poisoned_answers": len(np.unique(poisoned_answers))})
    return pd.DataFrame(rows)


def describe_rebound(table, rise: float = 5.0) -> str:
    """In words, from :func:`answers_per_step`'s table: does ASR come back after its lowest point, and why?

    A rebound is an ASR at least ``rise`` points above its minimum, later
    than the minimum. The text reports the numbers and which explanation
    they support: B' sending clean faces to the target as well (a collapse
    onto one class, so "ASR" says nothing about the trigger), or not (the
    last channels still carry the trigger, and nothing outvotes it).
    """
    asr = table["attack_success_rate"].to_numpy(dtype=float)
    if not len(asr) or not np.isfinite(asr).any():
        return "no attack success rate recorded (no poisoned data)"
    low = int(np.nanargmin(asr))
    later = table.iloc[low + 1:]
    later = later[later["attack_success_rate"] >= asr[low] + rise]
    if later.empty:
        return (f"no rebound: the attack success rate does not rise again by {rise:g} points after its lowest "
                f"value ({asr[low]:.1f} % at {int(table['channels_pruned'].iloc[low])} channels pruned)")
    peak = later.loc[later["attack_success_rate"].idxmax()]
    text = (f"rebound: the attack success rate falls to {asr[low]:.1f} % at {int(table['channels_pruned'].iloc[low])} "
            f"channels pruned and comes back to {peak['attack_success_rate']:.1f} % at {int(peak['channels_pruned'])}, "
            f"where clean accuracy is {peak['clean_accuracy']:.1f} % and B' answers only {int(peak['clean_answers'])} "
            f"distinct classes on clean faces; ")
    if peak["clean_to_target"] >= peak["attack_success_rate"] / 2:
        return text + (f"it sends {peak['clean_to_target']:.1f} % of CLEAN faces to the target too: the network has "
                       "collapsed onto a few classes, and the 'attack success' is that collapse, not the trigger")
    return text + (f"it sends only {peak['clean_to_target']:.1f} % of clean faces to the target: not a collapse onto "
                   "the target. The last channels (the most active on clean faces) still respond to the trigger, and "
                   "with the identity channels gone nothing outvotes it; the network is useless by then anyway")
