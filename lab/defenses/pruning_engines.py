"""The three engines of the pruning sweep ("fast", "masked", "zero-weights"; see :mod:`lab.defenses.pruning_plan`).

The sweep needs only whether each argmax equals its target (label or
attack target). The fast method uses that: an image already answered wrong
keeps a "witness" class that beat its target, and a step re-checks only that
pair of logits while the witness still wins by more than rounding could
change. The table is computed from these hits; :func:`step_outputs` gives
the full outputs for comparisons.

Exactness, as tested: "masked" and "zero-weights" run the same Keras ops
as the really pruned model, so they give its argmax and its probabilities
to within 1e-6 (bit-identical on many CPUs, but a compiled graph and an
eager call may pick kernels that round differently); "fast" gives the same
argmax and probabilities within float32 rounding: no further from Keras'
float32 result than that result is from exact float64 arithmetic, + 1e-6
(Keras' own rounding grows with the model: larger on the real 1283-class
models than on small test models).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Iterator, Sequence

import numpy as np

from lab.defenses.pruning_plan import SweepPlan, deepid_head_weights, head_model
from lab.defenses.surgery import clone_keras, zero_channels
from lab.evaluation import activations

ROW_BLOCK = 2048  # rows per block in the per-step head: bounded temporaries, cache-friendly products


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
        self.head = activations.compiled_call(head_model(keras_model, keras_model.get_layer(plan.measure)))

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
        weights = deepid_head_weights(keras_model, keras_model.get_layer(plan.measure))
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
        self.model = model
        keras_model, self.preprocess = activations.keras_model_and_preprocess(model)
        self.clone = clone_keras(keras_model)
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
                zero_channels(self.clone, self.plan.layer, [channels[step - 1]])
            outputs = [self._predict(item.x) for item in prepared]
            yield outputs if with_outputs else [values.argmax(axis=1) == item.targets
                                                for values, item in zip(outputs, prepared)]


ENGINES = {"fast": _DeepIDEngine, "masked": _MaskedHeadEngine, "zero-weights": _ZeroWeightsEngine}
