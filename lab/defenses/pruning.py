"""The pruning defense: rank channels, prune them one at a time, save models at thresholds.

The algorithm, as the course assignment states it:

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

This module is the public API, in the order a student uses it:
:func:`sweep`, :func:`select_thresholds`, :func:`save_pruned_models`
(with :func:`prune_model` and :func:`pruned_channels`), then
:class:`PruningDefense`, pruning under the defense contract of
:mod:`lab.defenses.base`. How the sweep stays exact and fast is in
:mod:`lab.defenses.pruning_plan` (is the shortcut valid, which engine) and
:mod:`lab.defenses.pruning_engines` (the three engines).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Sequence

import numpy as np

from lab.constants import BATCH_SIZE, DEFAULT_LAYER, DEFAULT_MEASURE, DEFAULT_SEED
from lab.defenses.base import Defense, DefenseResult, register
from lab.defenses.holdout import split_validation
from lab.defenses.pruning_engines import ENGINES
from lab.defenses.pruning_plan import METHODS, ORDERS, SweepPlan, plan_sweep, rank_channels  # noqa: F401
from lab.defenses.surgery import clone_model, zero_channels
from lab.errors import LabInputError, check_writable
from lab.evaluation import activations, metrics

DEFAULT_THRESHOLDS = (2.0, 4.0, 10.0)
RULES = {
    "first-reach": "first step whose clean accuracy drop reaches X percentage points (the assignment's rule)",
    "last-within": "last step before the clean accuracy drop first reaches X percentage points",
    "relative": "first step whose relative clean accuracy drop, 100 * drop / accuracy before pruning, reaches X %",
}


# ---------------------------------------------------------------- the sweep, thresholds, saving


def sweep(model, clean_valid, poisoned_valid=None, layer: str = DEFAULT_LAYER, measure: str = DEFAULT_MEASURE,
          order: str = "increasing", method: str = "auto", batch_size: int = BATCH_SIZE, progress: bool = False,
          channels: Sequence[int] | None = None):
    """Prune ``layer`` of ``model`` one channel at a time; one table row per step, step 0 first.

    model: a ``LoadedModel``. clean_valid / poisoned_valid: :class:`lab.io.data.Dataset`
    (pixels 0..255); poisoned labels are the attacker's target. The ranking
    uses only clean_valid; the attack success rate is recorded for
    reporting and never chooses anything. ``channels`` (every channel of
    ``layer`` once, e.g. ``pruned_channels(validation_sweep, C)``) gives the
    order instead, so the sweep measures other data (the test sets) along
    the order the defender chose on validation data: the course's Lab 3
    plot. ``order`` is then only recorded.

    Returns a ``pandas.DataFrame`` with one row per step (C + 1 rows):
    ``channels_pruned`` (0..C), ``fraction_pruned`` (0..1), ``channel`` (the
    channel pruned at this step; <NA> at step 0), ``mean_activation`` (its
    mean activation in ``measure`` on clean_valid), ``clean_accuracy`` (%),
    ``accuracy_drop`` (percentage points below step 0), ``attack_success_rate``
    (%, NaN without poisoned data), and ``layer``, ``measure``, ``order`` (the
    same on every row, so a table read back from ``sweep.csv`` still says
    what was pruned). ``table.attrs`` also holds them, the method and its
    reason, and the mean activation of every channel (not kept by a CSV).
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
    if channels is None:
        channels = rank_channels(mean_activation, order)
    else:
        channels = np.asarray(channels, dtype=np.int64)
        if sorted(channels.tolist()) != list(range(len(mean_activation))):
            raise LabInputError(None, f"channels: every channel of {layer} (0..{len(mean_activation) - 1}) once",
                                f"{len(channels)} channels {channels.tolist()[:8]}...")
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
    for column, value in (("layer", layer), ("measure", measure), ("order", order)):
        table[column] = value  # columns, not only attrs: they survive sweep.csv (see sweep_setting)
    table.attrs.update(layer=layer, measure=measure, order=order, method=plan.method, method_reason=plan.reason,
                       n_clean=len(clean_valid), n_poisoned=0 if poisoned_valid is None else len(poisoned_valid),
                       mean_activation=[float(v) for v in mean_activation], model_path=getattr(model, "path", None))
    return table


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


def save_pruned_models(model, sweep_table, selection, out_dir: str | os.PathLike, suffix: str = ".h5",
                       force: bool = False):
    """Save the really pruned model for every threshold ``selection`` found; return it with ``model_path``.

    Files are ``out_dir/pruned_<X>.h5`` (legacy .h5 keeps the course's
    eval.py contract; ``suffix=".keras"`` for the native format) with the
    lab's metadata beside them: input scale, layer, channels, threshold,
    rule. Nothing is written unless every file may be (``force``).
    """
    from lab.io.models import save_model

    out_dir = Path(out_dir)
    paths = {row.threshold: out_dir / threshold_filename(row.threshold, suffix)
             for row in selection.itertuples() if row.found}
    for path in paths.values():
        check_writable(path, force)
        check_writable(Path(os.fspath(path) + ".lab.json"), force)
    layer = sweep_setting(sweep_table, "layer")
    result = selection.copy()
    result["model_path"] = None
    for index, row in enumerate(selection.itertuples()):
        if not row.found:
            continue
        channels = pruned_channels(sweep_table, int(row.channels_pruned))
        pruned = prune_model(model, channels, layer)
        extra = {"pruned_layer": layer, "pruned_channels": channels, "threshold": row.threshold, "rule": row.rule,
                 "rule_text": RULES[row.rule], "clean_valid_accuracy": float(row.clean_accuracy),
                 "source_model": getattr(model, "path", None), "order": sweep_setting(sweep_table, "order")}
        save_model(pruned.model, paths[row.threshold], model.input_scale,
                   f"{layer} pruned: {len(channels)} channels, threshold {row.threshold:g} ({row.rule})",
                   force=force, extra=extra)
        result.at[index, "model_path"] = os.fspath(paths[row.threshold])
    return result


def prune_model(model, channels: Sequence[int], layer: str = DEFAULT_LAYER):
    """A copy of ``model`` (``LoadedModel``) with the kernel and bias of ``channels`` of ``layer`` set to 0.

    The original is left untouched; the copy keeps its input scale.
    """
    activations.get_layer(model, layer)  # one-line error for a missing layer
    channels = [int(c) for c in channels]
    pruned = clone_model(model, {"pruned_layer": layer, "pruned_channels": channels})
    zero_channels(pruned.model, layer, channels)
    return pruned


def pruned_channels(sweep_table, channels_pruned: int) -> list[int]:
    """The first ``channels_pruned`` channels of a sweep's pruning order."""
    return [int(c) for c in sweep_table["channel"].iloc[1:channels_pruned + 1]]


def sweep_setting(sweep_table, name: str) -> str:
    """What the sweep's ``name`` was ("layer", "measure" or "order"): from ``attrs``, else the column of that name.

    A table read back from ``sweep.csv`` has only the column; a table with
    neither is refused (one line) rather than assumed to be of the default
    layer: pruning another layer than the sweep ranked would be silently wrong.
    """
    value = sweep_table.attrs.get(name)
    if value is None and name in getattr(sweep_table, "columns", ()):
        values = sweep_table[name].dropna().unique()
        if len(values) == 1:
            value = str(values[0])
    if value is None:
        raise LabInputError(None, f"a sweep table that records its {name} (from pruning.sweep, or its sweep.csv)",
                            f"no single {name!r} column or attribute")
    return value


def threshold_filename(threshold: float, suffix: str = ".h5") -> str:
    """``pruned_2.h5`` for 2, ``pruned_2.5.h5`` for 2.5."""
    return f"pruned_{threshold:g}{suffix}"


def check_thresholds(rule: str, thresholds: Sequence[float], start_accuracy: float | None = None) -> None:
    """Raise one line for an unknown rule or thresholds no sweep can use; call it before the sweep.

    Thresholds must be finite numbers strictly between 0 and 100, each once
    (two that name the same ``pruned_<X>.h5`` file, like 2 and 2.0, are one
    threshold given twice). With ``start_accuracy`` (clean accuracy before
    pruning, %), a ``first-reach`` threshold above it is refused too: the drop
    can never exceed the starting accuracy, so no sweep could reach it.
    """
    if rule not in RULES:
        raise LabInputError(None, f"--rule one of {', '.join(RULES)}", repr(rule))
    thresholds = list(thresholds)
    if not thresholds:
        raise LabInputError("--thresholds", "at least one threshold (percentage points)", "none")
    bad = [t for t in thresholds
           if isinstance(t, bool) or not (isinstance(t, (int, float)) and math.isfinite(t) and 0 < t < 100)]
    if bad:
        raise LabInputError("--thresholds", "numbers strictly between 0 and 100 (percentage points)",
                            ", ".join(repr(t) for t in bad))
    names: dict[str, list[float]] = {}
    for threshold in thresholds:
        names.setdefault(threshold_filename(threshold), []).append(threshold)
    repeated = [given for given in names.values() if len(given) > 1]
    if repeated:
        raise LabInputError("--thresholds", "each threshold once (one pruned_<X>.h5 file each)",
                            "; ".join(f"{given[0]:g} given {len(given)} times" for given in repeated))
    if start_accuracy is not None and rule == "first-reach":
        unreachable = [t for t in thresholds if t > start_accuracy]
        if unreachable:
            raise LabInputError("--thresholds", f"accuracy drops of at most {start_accuracy:.2f} percentage "
                                "points (the clean accuracy before pruning; it cannot drop further)",
                                ", ".join(f"{t:g}" for t in unreachable))


def unreached(selection) -> list[str]:
    """The note of every threshold of ``selection`` (from :func:`select_thresholds`) that no step reached."""
    return [f"{row.threshold:g}: {row.note}" for row in selection.itertuples() if not row.found]


# ---------------------------------------------------------------- per-step outputs (for checks)


def step_outputs(model, x: np.ndarray, channels: Sequence[int], layer: str = DEFAULT_LAYER,
                 measure: str = DEFAULT_MEASURE, method: str = "auto", batch_size: int = BATCH_SIZE) -> Iterator[np.ndarray]:
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
              measure: str = DEFAULT_MEASURE, method: str = "auto", batch_size: int = BATCH_SIZE) -> Iterator[np.ndarray]:
    """bool (n,) copies, argmax == ``targets``, after pruning ``channels[:k]`` for k = 0, 1, ...

    Exactly what :func:`sweep` turns into clean accuracy and attack success
    rate (the fast method skips work here that outputs would need).
    """
    plan = plan_sweep(model, layer, measure, method)
    engine = ENGINES[plan.method](model, plan, batch_size)
    for hits in engine.run([engine.prepare(x, np.asarray(targets))], channels, with_outputs=False):
        yield np.array(hits[0], copy=True)


# ---------------------------------------------------------------- helpers


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
    """In words, from :func:`answers_per_step`'s table (which ends at the fully pruned step): does ASR come back?

    :func:`lab.evaluation.analysis.describe_rebound` with the table's last
    step as the channel count: the fully pruned step, where every input
    gets the same answer, is not counted as the ASR's lowest point.
    """
    from lab.evaluation import analysis

    return analysis.describe_rebound(table, int(table["channels_pruned"].max()), rise)


# ---------------------------------------------------------------- the defense contract


@register
class PruningDefense(Defense):
    """B': the BadNet with the least active channels of ``layer`` pruned at an accuracy-drop threshold.

    Ranked and thresholded on the fine-tuning part of the clean validation
    split (:func:`lab.defenses.holdout.split_validation`), as in 07.
    """

    name = "pruning"
    kind = "repair"
    table_order = 10
    paper = "Liu, Dolan-Gavitt, Garg. Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural Networks. RAID 2018"

    @dataclasses.dataclass(frozen=True)
    class Config:
        """threshold: accuracy drop X (percentage points, by ``rule``: see :data:`RULES`);
        holdout_fraction: share of each class held out (not used to rank or threshold);
        layer / measure / order: what is pruned, what ranks it, least active first or not."""

        threshold: float = 4.0
        rule: str = "first-reach"
        holdout_fraction: float = 1 / 3
        layer: str = DEFAULT_LAYER
        measure: str = DEFAULT_MEASURE
        order: str = "increasing"

    def fit(self, badnet, clean_valid, seed: int = DEFAULT_SEED) -> DefenseResult:
        config = self.config
        started = time.perf_counter()
        train, _ = split_validation(clean_valid, config.holdout_fraction, seed)
        table = sweep(badnet, train, layer=config.layer, measure=config.measure, order=config.order)
        selection = select_thresholds(table, [config.threshold], config.rule)
        if not bool(selection["found"].iloc[0]):
            raise LabInputError(None, f"a pruning step reaching a {config.threshold:g} pp accuracy drop",
                                selection["note"].iloc[0])
        channels = pruned_channels(table, int(selection["channels_pruned"].iloc[0]))
        pruned = prune_model(badnet, channels, config.layer)
        return DefenseResult(self.name, self.kind, pruned, time.perf_counter() - started,
                             {"pruned_layer": config.layer, "pruned_channels": channels, "sweep": table,
                              "selection": selection, "n_train": len(train)}, model=pruned)
