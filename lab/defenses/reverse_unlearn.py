"""The lab's iterative reverse-and-unlearn with distillation (``--method reverse-unlearn``; auto's workhorse).

Why: Neural Cleanse (Wang et al. 2019) reverses the *smallest* trigger that
flips clean images to the target and unlearns it once. That trigger can be
a small fragment of the real one, and unlearning it leaves the rest of the
backdoor. Here the trigger is reversed again against the model being
repaired after every unlearning epoch, so it follows (and grows into)
whatever part of the backdoor remains, and every reversed trigger joins a
pool the next epochs stamp from. Distillation from B on unstamped images
(Hinton et al. 2015, T = 2) keeps clean accuracy. The idea of unlearning
reversed triggers is Neural Cleanse's; re-reversing against the current
model resembles the min-max of I-BAU (Zeng et al. 2022) with a targeted,
masked perturbation instead of an L-p ball.

Recipe (all from clean data: the clean validation set is split per class
into a training part and a held-out part, :func:`lab.defenses.holdout.split_validation`):

1. target(s): where untargeted universal perturbations of the training part
   flow (:func:`lab.defenses.reverse.perturbation_flow`); classes receiving
   at least ``flow_share`` of the flow (at least the top one, at most
   ``max_suspects``);
2. initial trigger per target: Neural Cleanse's optimisation and schedule;
3. ``epochs`` epochs: light augmentation, ``stamp_fraction`` of images
   stamped with a trigger from the pool (true labels), loss CE on all +
   ``distill_weight`` T^2 KL(B || student) on the unstamped, Adam
   ``learning_rate`` cosine to 0, batch 32; after each epoch, ``rereverse_steps``
   Adam steps (c = ``rereverse_cost``, warm start) re-reverse every target's
   trigger against the student and add it to the pool;
4. keep the epoch with the highest held-out clean accuracy (later on ties).

Option (off by default): ``perturb_fraction`` > 0 also gives that share of
the images not stamped from the pool, each epoch, one untargeted universal
perturbation found against the student (L-infinity ``perturb_epsilon``
pixels, ``perturb_steps`` sign steps; :class:`lab.defenses.perturbation.PerturbationSearch`),
with true labels and no distillation: an unlearning signal that is not a
mask, for whole-image triggers (warping) that a mask can only approximate.
It is off because the settings that helped one kind of trigger were only
ever compared on poisoned test data, which must not choose a default.

Option (off by default): ``sharpness`` > 0 makes every unlearning step an
adaptive-SAM step of that radius (FT-SAM's rule, :mod:`lab.defenses.ft_sam`),
at about one more gradient computation per step. Off for the same reason
as ``perturb_fraction``.

The epoch is chosen by held-out clean accuracy only; with a few hundred
held-out images that accuracy is itself noisy by about a point, so the rule
cannot promise a margin smaller than that. ``tools/measure_repairs.py`` and
``tools/measure_repair_seeds.py`` measure the recipe on held-out test sets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lab.io.data import Dataset
from lab.defenses.base import Defense, DefenseResult, register
from lab.defenses.reverse import FlowConfig, ReverseConfig, ReversedTriggers, TriggerReverser, perturbation_flow, \
    quick_unlearning, reverse_triggers
from lab.defenses.augment import AugmentConfig
from lab.defenses.fitting import fit_keep_best
from lab.defenses.unlearn import LIGHT_AUGMENT, UnlearnTrainer, begin, copy_model, light_augment, percent_correct, \
    stamp_from_pool
from lab.cache import clock  # wall time + the original cost of reused parts (lab.cache.memoize)
from lab.constants import DEFAULT_SEED


def choose_targets(flow, share: float, max_suspects: int) -> list[int]:
    """Classes receiving at least ``share`` of the flow, by decreasing count; at least the top one."""
    chosen = [int(c) for c in flow.ranking[:max_suspects] if flow.share(int(c)) >= share]
    return chosen or [flow.top]


@dataclasses.dataclass(frozen=True)
class ReverseUnlearnConfig:
    """Hyperparameters of the iterative reverse-and-unlearn (the recipe of the module docstring)."""

    holdout_fraction: float = 1 / 3
    flow: FlowConfig = FlowConfig()
    reverse: ReverseConfig = ReverseConfig()
    flow_share: float = 0.2
    max_suspects: int = 3
    epochs: int = 20
    learning_rate: float = 1e-3
    batch_size: int = 32
    stamp_fraction: float = 0.2
    rereverse_steps: int = 150
    rereverse_cost: float = 1e-3
    perturb_fraction: float = 0.0
    perturb_epsilon: float = 32.0
    perturb_steps: int = 10
    perturb_batch: int = 64
    sharpness: float = 0.0
    temperature: float = 2.0
    distill_weight: float = 1.0
    augment: AugmentConfig = LIGHT_AUGMENT

    def replace(self, **changes) -> "ReverseUnlearnConfig":
        return dataclasses.replace(self, **changes)


def _logit(mask: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(2.0 * mask - 1.0, -1 + 1e-6, 1 - 1e-6)).astype(np.float32)


def reverse_and_unlearn(badnet, train: Dataset, holdout: Dataset, targets: list[int], initial: ReversedTriggers,
                        config: ReverseUnlearnConfig, rng: np.random.Generator, start=None) -> tuple[object, dict]:
    """Steps 3-4 of the recipe for given targets and initial triggers; returns (repaired LoadedModel, details).

    ``start``: the model the student starts from (None: a copy of ``badnet``;
    ``auto``'s later rounds start from the previous round's repair). The
    teacher of the distillation is always ``badnet``.
    Computed once per identical inputs and ``rng`` state (:func:`lab.cache.memoize`:
    ``auto`` reuses ``reverse-unlearn``'s run, 07 reuses 06's).
    """
    from lab import cache
    from lab.defenses.surgery import clone_model

    targets = [int(t) for t in targets]
    initial_parts = [[initial.trigger(t)[0], initial.trigger(t)[1]] for t in targets]
    start_parts = [] if start is None else [cache.model_parts(start)]
    return cache.memoize(
        "reverse_unlearn", [cache.model_parts(badnet), train.x, train.y, holdout.x, holdout.y, targets, initial_parts,
                            dataclasses.asdict(config), *start_parts],
        lambda: _reverse_and_unlearn(badnet, train, holdout, targets, initial, config, rng, start),
        lambda out: ([*out[0].model.get_weights(), out[1]["final_masks"], out[1]["final_patterns"]],
                     {k: v for k, v in out[1].items() if k not in ("final_masks", "final_patterns")}),
        lambda arrays, info: (clone_model(badnet, weights=arrays[:-2]),
                              {**info, "final_masks": arrays[-2], "final_patterns": arrays[-1]}), rng)


def _reverse_and_unlearn(badnet, train, holdout, targets, initial, config, rng, start=None):
    student = copy_model(badnet if start is None else start)
    steps_per_epoch = int(np.ceil(len(train) / config.batch_size))
    trainer = UnlearnTrainer(student, badnet, config.learning_rate, steps_per_epoch * config.epochs,
                             config.temperature, config.distill_weight, sharpness=config.sharpness)
    reverser = TriggerReverser(student, targets, config.reverse, rng)
    search = None
    if config.perturb_fraction > 0 and config.perturb_steps > 0:
        from lab.defenses.perturbation import PerturbationSearch

        search = PerturbationSearch(student, config.perturb_epsilon)
    masks = np.stack([initial.trigger(t)[0] for t in targets])
    patterns = np.stack([initial.trigger(t)[1] for t in targets])
    reverser.mask_logit.assign(_logit(masks))
    reverser.pattern_logit.assign(_logit(patterns / 255.0))
    pool = [(masks[i], patterns[i]) for i in range(len(targets))]

    def run_epoch(epoch):
        x = light_augment(train.x, rng, config.augment)
        x, stamped = stamp_from_pool(x, pool, config.stamp_fraction, rng)
        if search is not None:  # a universal perturbation against the student: whatever is left, mask or not
            delta = search(train.x, train.y, config.perturb_steps, config.perturb_batch, rng)
            chosen = ~stamped & (rng.random(len(x)) < config.perturb_fraction)
            x[chosen] = np.clip(x[chosen] + delta, 0.0, 255.0)
            stamped = stamped | chosen
        loss = trainer.epoch(x, train.y, stamped, config.batch_size, rng)
        reverser.reset_optimizer()
        _, _, success = reverser.run(train.x, config.rereverse_steps, rng, config.rereverse_cost)
        new_masks, new_patterns = reverser.masks(), reverser.patterns()
        pool.extend((new_masks[i], new_patterns[i]) for i in range(len(targets)))
        return loss, new_masks, success

    def row(epoch, trained, accuracy):
        loss, l1_of, success = (float("nan"), masks, None) if trained is None else trained  # epoch 0: initial triggers
        return {"epoch": epoch, "loss": loss, "holdout_accuracy": accuracy,
                "trigger_l1": [float(m.sum()) for m in l1_of],
                "trigger_success": None if success is None else [float(s) for s in success]}

    best, rows = fit_keep_best(student.model, config.epochs, run_epoch, lambda epoch: percent_correct(student, holdout),
                               row)
    details = {"history": rows, **best.summary(), "pool_size": len(pool), "final_masks": reverser.masks(),
               "final_patterns": reverser.patterns()}
    return student, details


@register
class ReverseUnlearn(Defense):
    """Iterative reverse-and-unlearn with distillation from B (the lab's method; see the module docstring)."""

    name = "reverse-unlearn"
    kind = "repair"
    table_order = 110
    decides = True
    paper = ("the lab's method, built on Wang et al., Neural Cleanse, IEEE S&P 2019 (trigger reversal, unlearning) "
             "and Hinton et al. 2015 (distillation)")
    Config = ReverseUnlearnConfig

    @classmethod
    def quick(cls, epochs=None, reverse_epochs=None, flow_restarts=None, holdout_fraction=1 / 3) -> dict:
        """The flow and reversal schedules shortened; ``epochs``: unlearning epochs."""
        return quick_unlearning("epochs", epochs, reverse_epochs, flow_restarts, holdout_fraction)

    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        config = self.config
        started, rng, train, holdout = begin(clean_valid, config.holdout_fraction, seed)
        flow = perturbation_flow(badnet, train.x, train.y, config.flow, rng)
        targets = choose_targets(flow, config.flow_share, config.max_suspects)
        initial = reverse_triggers(badnet, train.x, targets, config.reverse, rng)
        repaired, details = reverse_and_unlearn(badnet, train, holdout, targets, initial, config, rng)
        seconds = clock() - started
        details.update(targets=targets, flow_concentration=flow.concentration, initial_l1=initial.l1.tolist())
        repaired.metadata.update(defense=self.name, targets=targets, best_epoch=details["best_epoch"],
                                 holdout_clean_accuracy=details["holdout_clean_accuracy"])
        # It always repairs towards the targets it chose (it does not judge whether B is clean).
        return DefenseResult(self.name, self.kind, repaired, seconds, details, repaired, backdoored=True,
                             targets=list(targets))
