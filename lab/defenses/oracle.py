"""The oracle: attack-aware pruning that uses poisoned validation data. NOT a defense a defender can run.

A course report pruned the last three convolutional layers in the order of
how much more each channel fires on poisoned than on clean validation
images, and kept the model with the lowest attack success rate. That needs
the trigger (poisoned data), which a real defender does not have. The lab
keeps it as a labelled comparison, "what an attacker-aware defender could
do", to show how far the clean-data defenses are from the best case; it is
never used for the main results.

Score of channel c of layer L (conv layers with ReLU, mean over images and
positions)::

    score = mean_poisoned(L, c) / (mean_clean(L, c) + 0.01 * mean over L's channels of mean_clean(L, :))

how many times more the channel fires on triggered inputs; the small term
keeps channels that never fire on clean data finite (and dormant ones at 0).
Channels are tried in decreasing score: each is pruned (kernel and bias
set to 0) and kept pruned unless the clean validation accuracy drop would
exceed ``max_accuracy_drop``; after every step clean and poisoned
validation accuracy are measured with the whole network. The model kept is
the one with the lowest poisoned validation ASR.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from lab.constants import BATCH_SIZE, DEFAULT_SEED
from lab.defenses.base import Defense, DefenseResult
from lab.defenses.surgery import clone_model, zero_channels
from lab.evaluation import activations, metrics
from lab.io.data import Dataset

ORACLE_LAYERS = ("conv_2", "conv_3", "conv_4")
LABEL = "oracle (uses poisoned validation data: not a real defense)"


@dataclasses.dataclass
class OracleResult:
    """``model``: the pruned copy at ``chosen_step``; ``ranking``: one row per channel; ``steps``: one row per step."""

    model: object
    ranking: object
    steps: object
    chosen_step: int
    seconds: float
    label: str = LABEL


def attack_aware_ranking(model, clean_valid: Dataset, poisoned_valid: Dataset,
                         layers: Sequence[str] = ORACLE_LAYERS, batch_size: int = BATCH_SIZE):
    """Channels of ``layers`` ranked by how many times more they fire on poisoned than on clean data (ORACLE).

    Returns a ``pandas.DataFrame`` sorted by ``score`` (decreasing) with
    ``layer``, ``channel``, ``clean_mean``, ``poisoned_mean``, ``score``.
    """
    import pandas as pd

    def means(dataset: Dataset) -> dict[str, np.ndarray]:
        sums, positions = {}, {}
        for batch in activations.iter_activations(model, dataset.x, list(layers), batch_size):  # one pass, all layers
            for layer, values in batch.items():
                sums[layer] = sums.get(layer, 0.0) + activations.channel_sums(values)
                positions[layer] = positions.get(layer, 0) + values.size // values.shape[-1]
        return {layer: sums[layer] / positions[layer] for layer in layers}

    clean_means, poisoned_means = means(clean_valid), means(poisoned_valid)
    frames = []
    for layer in layers:
        clean, poisoned = clean_means[layer], poisoned_means[layer]
        floor = 0.01 * (float(np.mean(clean)) or 1.0)
        frames.append(pd.DataFrame({"layer": layer, "channel": np.arange(len(clean)), "clean_mean": clean,
                                    "poisoned_mean": poisoned, "score": poisoned / (clean + floor)}))
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def attack_aware_prune(model, clean_valid: Dataset, poisoned_valid: Dataset, layers: Sequence[str] = ORACLE_LAYERS,
                       max_accuracy_drop: float = 4.0, max_candidates: int | None = 60, stop_asr: float = 0.0,
                       batch_size: int = BATCH_SIZE) -> OracleResult:
    """Greedy attack-aware pruning over ``layers`` with poisoned validation data (ORACLE, see the module docstring).

    Goes down the ranking: each channel is pruned, and put back if the clean
    validation accuracy drop would exceed ``max_accuracy_drop`` percentage
    points. Stops after ``max_candidates`` channels tried (None: all) or
    once the poisoned validation ASR is at most ``stop_asr`` %. ``steps``
    has one row per channel tried (0 = unpruned): ``step``, ``layer``,
    ``channel``, ``kept`` (pruned or put back), ``channels_pruned``,
    ``clean_accuracy``, ``accuracy_drop``, ``attack_success_rate`` (validation,
    %, of the model after the step). The model kept is the one with the
    lowest validation ASR (the earliest on ties).
    """
    import pandas as pd

    started = time.perf_counter()
    ranking = attack_aware_ranking(model, clean_valid, poisoned_valid, layers, batch_size)
    working = clone_model(model)
    clone, preprocess = working.model, working.preprocess
    call = activations.compiled_call(clone)

    def accuracy(dataset: Dataset) -> float:
        outputs = [batch[0] for batch in activations.batched_call(call, preprocess, dataset.x, batch_size)]
        return metrics.percent(np.concatenate(outputs).argmax(axis=1) == dataset.y)

    start_accuracy = accuracy(clean_valid)
    rows = [{"step": 0, "layer": None, "channel": None, "kept": False, "channels_pruned": 0,
             "clean_accuracy": start_accuracy, "accuracy_drop": 0.0, "attack_success_rate": accuracy(poisoned_valid)}]
    current = dict(rows[0])
    pruned: list[tuple[str, int]] = []
    best = (current["attack_success_rate"], 0)
    limit = len(ranking) if max_candidates is None else min(max_candidates, len(ranking))
    for step in range(1, limit + 1):
        if current["attack_success_rate"] <= stop_asr:
            break
        layer_name, channel = str(ranking["layer"].iloc[step - 1]), int(ranking["channel"].iloc[step - 1])
        old = zero_channels(clone, layer_name, [channel])
        clean_accuracy = accuracy(clean_valid)
        kept = start_accuracy - clean_accuracy <= max_accuracy_drop
        if kept:
            pruned.append((layer_name, channel))
            current = {"clean_accuracy": clean_accuracy, "accuracy_drop": start_accuracy - clean_accuracy,
                       "attack_success_rate": accuracy(poisoned_valid)}
            if current["attack_success_rate"] < best[0]:
                best = (current["attack_success_rate"], len(pruned))
        else:
            clone.get_layer(layer_name).set_weights(old)
        rows.append({"step": step, "layer": layer_name, "channel": channel, "kept": kept,
                     "channels_pruned": len(pruned), "clean_accuracy": current["clean_accuracy"],
                     "accuracy_drop": current["accuracy_drop"],
                     "attack_success_rate": current["attack_success_rate"]})
    steps = pd.DataFrame(rows)
    chosen = pruned[:best[1]]
    result_model = clone_model(model, {"oracle": LABEL, "pruned": chosen, "max_accuracy_drop": max_accuracy_drop})
    for layer_name, channel in chosen:
        zero_channels(result_model.model, layer_name, [channel])
    chosen_step = int(steps.index[(steps["channels_pruned"] == best[1])][0]) if best[1] else 0
    steps.attrs.update(label=LABEL, layers=list(layers), chosen_step=chosen_step, max_accuracy_drop=max_accuracy_drop)
    return OracleResult(result_model, ranking, steps, chosen_step, time.perf_counter() - started)


class OraclePruning(Defense):
    """The ORACLE under the defense contract's shape, for tables: NOT registered, because it needs poisoned data.

    ``fit`` takes ``poisoned_valid`` on top of the contract's arguments; the
    registry (and the test that no registered defense takes poisoned data)
    leaves it out on purpose.
    """

    name = "oracle"
    kind = "repair"
    paper = "a CSAW-HackML 2020 course report (attack-aware pruning of conv_2..conv_4)"
    oracle = True

    @dataclasses.dataclass(frozen=True)
    class Config:
        """layers: pruned layers; max_accuracy_drop: clean validation budget (percentage points);
        max_candidates: channels tried (None: all); stop_asr: stop once validation ASR is at most this."""

        layers: tuple[str, ...] = ORACLE_LAYERS
        max_accuracy_drop: float = 4.0
        max_candidates: int | None = 60
        stop_asr: float = 0.0

    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED, *,
            poisoned_valid: Dataset | None = None) -> DefenseResult:
        if poisoned_valid is None:
            from lab.errors import LabInputError

            raise LabInputError(None, "poisoned_valid: the oracle ranks channels with poisoned data", "none")
        config = self.config
        result = attack_aware_prune(badnet, clean_valid, poisoned_valid, config.layers, config.max_accuracy_drop,
                                    config.max_candidates, config.stop_asr)
        return DefenseResult(self.name, self.kind, result.model, result.seconds,
                             {"label": LABEL, "oracle_result": result}, model=result.model)
