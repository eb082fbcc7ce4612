"""Does this model look backdoored at all? A gate from clean data only, and the ``auto`` repair built on it.

Two signals, both from clean images (the training part of the per-class split):

- **flow concentration** (:func:`lab.defenses.reverse.perturbation_flow`):
  of the clean images that untargeted universal perturbations push out of
  their class, the share that lands in one class. A BadNet's trigger is a
  shortcut every image can take, so nearly all of them land in the target;
  on a clean model they scatter.
- **Neural Cleanse anomaly index** (Wang et al., S&P 2019) of the top flow
  candidates among the reversed triggers of the candidates plus random
  reference classes (:mod:`lab.defenses.neural_cleanse`). A backdoor whose
  mask is not much smaller than the others' can stay under the index's
  threshold, so the index only confirms a candidate, never finds one.

A third signal ranks one more candidate: the **masked flow**
(:func:`lab.defenses.reverse.masked_flow`), where small Neural-Cleanse-style
masked triggers that push images out of their own class send them. An
L-infinity perturbation cannot imitate a small high-contrast patch; a mask
can. Its top class joins the top candidates (in a random reference's place,
so as many classes are reversed) only when it is as concentrated as a
decisive flow (>= ``decisive_concentration``), and the anomaly index must
still confirm it: on a clean model the masked flow also concentrates on the
easiest class, so it never decides alone. It draws from a child of the
gate's generator, so where it adds no candidate everything else is as it
would be without it.

The decision: backdoored when the flow is decisive (concentration >=
``decisive_concentration`` over at least ``min_pushed_out`` images), or when
one of the top flow candidates has a reversed mask that is an outlier below
the median (anomaly index > ``anomaly_threshold``) *and* at most
``max_norm_ratio`` times the median norm. The lab computes the index on log
mask norms (the paper: on the norms): with a handful of reference classes
whose norms spread over a factor of several, the linear median absolute
deviation misses a target far smaller than every other class and the log
scale does not. With a handful of classes the deviation itself is fragile
(reference norms that happen to cluster make any smaller class an outlier),
hence the norm ratio as a second condition. Both cutoffs are heuristics
fixed a priori, never chosen on poisoned data; the flow alone depends on the
draw and can look concentrated on a clean model over few images, so it
decides alone only when decisive.

``auto``: when the gate says clean, the model is returned unchanged (a
repair must not hurt a clean model); otherwise the lab's reverse-and-unlearn
(:mod:`lab.defenses.reverse_unlearn`) runs on the gate's targets, starting
from the triggers the gate reversed. Then the same gate runs on the repaired
model: a repair is done when the gate passes it. If it still says
backdoored, another round unlearns the targets it names now, starting from
the repaired model (distillation still from B), up to ``max_rounds``
repairs; whatever it still suspects after the last one is reported
(``still_suspected``). Why: with several triggers the first flow is shared,
so one target can draw less than ``flow_share`` and show no anomaly among
the top candidates; once the other targets are unlearned, the gate sees it.
Whether a later round confirms a target depends on the draw, and a
pruning-aware backdoor's reversed mask can stay above the ratio cutoff, so
a repair can end with part of a backdoor left. ``tools/measure_repairs.py``
measures each case on held-out test sets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lab.io.data import Dataset
from lab.defenses.base import Defense, DefenseResult, register
from lab.defenses.neural_cleanse import candidate_classes
from lab.defenses.reverse import FlowConfig, MaskedFlowConfig, ReverseConfig, ReversedTriggers, anomaly_index, \
    masked_flow, perturbation_flow, quick_schedules, reverse_triggers
from lab.defenses.reverse_unlearn import ReverseUnlearnConfig, choose_targets, reverse_and_unlearn
from lab.defenses.unlearn import copy_model, percent_correct
from lab.cache import clock  # wall time + the original cost of reused parts (lab.cache.memoize)
from lab.constants import DEFAULT_SEED


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """The gate's search and thresholds."""

    flow: FlowConfig = FlowConfig()
    masked_flow: MaskedFlowConfig | None = MaskedFlowConfig()
    reverse: ReverseConfig = ReverseConfig(epochs=20)
    suspect_reverse: ReverseConfig = ReverseConfig()
    n_candidates: int = 3
    n_random: int = 4
    decisive_concentration: float = 0.8
    min_pushed_out: int = 100
    anomaly_threshold: float = 2.0
    max_norm_ratio: float = 1 / 3


@dataclasses.dataclass
class GateDecision:
    """What the gate saw and decided. ``targets``: suspected target classes (empty when clean)."""

    backdoored: bool
    targets: list[int]
    concentration: float
    pushed_out: int
    top: int
    masked_top: int | None
    masked_concentration: float | None
    candidates: list[int]
    l1: list[float]
    anomaly_index: list[float]
    triggers: object
    reason: str
    seconds: float

    def summary(self) -> dict:
        return {"backdoored": self.backdoored, "targets": self.targets, "flow_concentration": self.concentration,
                "pushed_out": self.pushed_out, "flow_top": self.top, "masked_flow_top": self.masked_top,
                "masked_flow_concentration": self.masked_concentration, "candidates": self.candidates, "l1": self.l1,
                "anomaly_index": self.anomaly_index, "reason": self.reason, "seconds": self.seconds}


def decide(badnet, train: Dataset, config: GateConfig = GateConfig(), rng: np.random.Generator | None = None,
           max_suspects: int = 3, flow_share: float = 0.2) -> GateDecision:
    """Run the gate on clean ``train`` images; see the module docstring.

    A decisive flow (concentration >= ``decisive_concentration`` over at least
    ``min_pushed_out`` images) needs no confirmation: only the suspected
    targets' triggers are reversed (the repair starts from them). Otherwise
    the top ``n_candidates`` classes of the flow and ``n_random`` random
    classes are reversed, and a top candidate whose mask is an outlier below
    the median (anomaly index of the log norms > ``anomaly_threshold``) is a
    target. The masked flow (:func:`masked_flow`: small masked triggers,
    which find a patch the L-infinity flow misses; ``masked_flow=None``
    turns it off) adds its top class to the top candidates, in a random
    reference's place, when it is as concentrated as a decisive flow; the
    anomaly index must still confirm it.
    """
    started = clock()
    rng = rng or np.random.default_rng(DEFAULT_SEED)
    flow = perturbation_flow(badnet, train.x, train.y, config.flow, rng)
    decisive = flow.concentration >= config.decisive_concentration and flow.pushed_out >= config.min_pushed_out
    reasons = [f"flow: {flow.concentration:.2f} of {flow.pushed_out} pushed-out images went to class {flow.top}"]
    masked = None
    if decisive:
        targets = choose_targets(flow, flow_share, min(max_suspects, config.n_candidates))
        candidates = list(targets)
        triggers = reverse_triggers(badnet, train.x, candidates, config.suspect_reverse, rng)
        index = np.full(len(candidates), np.nan)
        reasons.append(f"decisive (>= {config.decisive_concentration}); anomaly index not needed")
    else:
        candidates = candidate_classes(flow, badnet.n_classes, config.n_candidates, config.n_random, rng)
        top = min(config.n_candidates, len(candidates))
        extra = []
        if config.masked_flow is not None:
            # A child generator (spawning leaves ``rng`` where it was): when the masked flow adds no candidate,
            # the gate reverses and decides exactly as it did without it.
            masked = masked_flow(badnet, train.x, train.y, config.masked_flow, rng.spawn(1)[0])
            reasons.append(f"masked flow: {masked.concentration:.2f} of {masked.pushed_out} to class {masked.top}")
            if (masked.concentration >= config.decisive_concentration and masked.pushed_out >= config.min_pushed_out
                    and masked.top not in candidates[:top]):
                extra = [masked.top]
        # The masked flow's candidate takes a random reference's place: as many classes reversed as before.
        candidates = (candidates[:top] + extra + [c for c in candidates[top:] if c not in extra])[
            :max(len(candidates), top + len(extra))]
        top += len(extra)
        triggers = reverse_triggers(badnet, train.x, candidates, config.reverse, rng)
        index = anomaly_index(np.log(np.maximum(triggers.l1, 1e-6)))
        median = float(np.median(triggers.l1))
        flagged = [i for i in range(top) if index[i] > config.anomaly_threshold
                   and triggers.l1[i] < config.max_norm_ratio * median]
        flagged.sort(key=lambda i: triggers.l1[i])
        targets = [candidates[i] for i in flagged][:max_suspects]
        reasons.append("not decisive; anomaly index (log mask L1) of the top candidates "
                       + ", ".join(f"{candidates[i]}: {index[i]:.2f}" for i in range(top))
                       + f" -> {'flagged ' + str(targets) if targets else 'none above ' + str(config.anomaly_threshold)}")
    return GateDecision(bool(targets), targets, flow.concentration, flow.pushed_out, flow.top,
                        None if masked is None else masked.top, None if masked is None else masked.concentration,
                        candidates,
                        triggers.l1.tolist(), index.tolist(), triggers, "; ".join(reasons),
                        clock() - started)


@dataclasses.dataclass(frozen=True)
class AutoConfig:
    """``auto``: the gate, then reverse-and-unlearn when it says backdoored, until the gate passes the repair.

    ``max_rounds``: repairs at most; after each, the gate runs again on the
    repaired model, and if it still says backdoored the next round unlearns
    the targets it names, starting from that model (1: a single repair).
    """

    gate: GateConfig = GateConfig()
    repair: ReverseUnlearnConfig = ReverseUnlearnConfig()
    max_rounds: int = 2

    def replace(self, **changes) -> "AutoConfig":
        return dataclasses.replace(self, **changes)


def _next_round(targets: list[int], last: dict, decision: GateDecision) -> tuple[list[int], ReversedTriggers]:
    """Every target so far plus the gate's new ones, each with its latest trigger (see ``Auto.fit``)."""
    latest = {t: (last["final_masks"][i], last["final_patterns"][i]) for i, t in enumerate(targets)}
    if decision.backdoored:
        latest.update({t: decision.triggers.trigger(t) for t in decision.targets})
    chosen = list(targets) + [t for t in decision.targets if t not in targets] if decision.backdoored else list(targets)
    masks = np.stack([latest[t][0] for t in chosen])
    return chosen, ReversedTriggers(np.asarray(chosen, np.int64), masks, np.stack([latest[t][1] for t in chosen]),
                                    masks.reshape(len(chosen), -1).sum(axis=1).astype(np.float64),
                                    np.full(len(chosen), np.nan), 0)


@register
class Auto(Defense):
    """Gate from clean data; reverse-and-unlearn while it says backdoored, the model unchanged if it never does."""

    name = "auto"
    kind = "repair"
    table_order = 120
    decides = True
    paper = ("the lab's gate (universal-perturbation flow + Neural Cleanse anomaly index, Wang et al. 2019) "
             "and reverse-and-unlearn")
    Config = AutoConfig

    @classmethod
    def quick(cls, epochs=None, reverse_epochs=None, flow_restarts=None, holdout_fraction=1 / 3) -> dict:
        """The gate's searches and the repair shortened: ``epochs`` for reverse-and-unlearn, ``reverse_epochs``
        caps the gate's candidate reversals (and sets its suspects'), ``flow_restarts`` its flow searches."""
        flow, reversal = quick_schedules(reverse_epochs, flow_restarts)
        base = GateConfig()
        candidates = base.reverse if reverse_epochs is None else ReverseConfig(
            epochs=min(reverse_epochs, base.reverse.epochs))
        repair_config = ReverseUnlearnConfig(holdout_fraction=holdout_fraction)
        if epochs is not None:
            repair_config = repair_config.replace(epochs=epochs)
        masked = base.masked_flow if reverse_epochs is None else dataclasses.replace(
            base.masked_flow, reverse=dataclasses.replace(base.masked_flow.reverse,
                                                          epochs=min(reverse_epochs, base.masked_flow.reverse.epochs)))
        return {"gate": GateConfig(flow=flow, masked_flow=masked, reverse=candidates, suspect_reverse=reversal),
                "repair": repair_config}

    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        from lab.defenses.holdout import split_validation

        started = clock()
        config = self.config
        rng = np.random.default_rng(seed)
        train, holdout = split_validation(clean_valid, config.repair.holdout_fraction, seed)
        gate = lambda model: decide(model, train, config.gate, rng, config.repair.max_suspects,  # noqa: E731
                                    config.repair.flow_share)
        decision = gate(badnet)
        details = {"gate": decision.summary(), "backdoored": decision.backdoored, "targets": list(decision.targets),
                   "triggers": decision.triggers, "rounds": []}
        repaired, targets, triggers = None, list(decision.targets), decision.triggers
        while decision.backdoored and len(details["rounds"]) < max(1, config.max_rounds):
            repaired, more = reverse_and_unlearn(badnet, train, holdout, targets, triggers, config.repair, rng,
                                                 start=repaired)
            details.update(more)
            details["rounds"].append({"targets": list(targets), "best_epoch": more["best_epoch"],
                                      "holdout_clean_accuracy": more["holdout_clean_accuracy"]})
            decision = gate(repaired)  # does the repaired model still look backdoored?
            details["rounds"][-1]["gate_after"] = decision.summary()
            # The next round unlearns every suspect so far (a target unlearned once can come back when the
            # model is trained on others): the gate's fresh trigger where it named one, else the one the
            # last round re-reversed against the model it leaves.
            targets, triggers = _next_round(targets, more, decision)
            details["targets"] = list(targets)
        if repaired is None:
            repaired = copy_model(badnet)
            details.update(method="none (the gate found no backdoor; model unchanged)", best_epoch=0,
                           holdout_clean_accuracy=percent_correct(repaired, holdout))
        else:
            n = len(details["rounds"])
            details["method"] = "reverse-unlearn" + (f" ({n} rounds)" if n > 1 else "")
            details["still_suspected"] = list(decision.targets) if decision.backdoored else []
        repaired.metadata.update(defense=self.name, backdoored=details["backdoored"], targets=details["targets"])
        return DefenseResult(self.name, self.kind, repaired, clock() - started, details, repaired,
                             backdoored=bool(details["backdoored"]), targets=list(details["targets"]),
                             method=details["method"])
