"""What a BadNet obeys: its triggers, their targets, all-to-one / all-to-all / multi-trigger.

The three attacks of the course material, each plain or pruning-aware
(:mod:`lab.attacks.training`):

- **all-to-one** (the default, Lab 3): one trigger; every triggered face is
  sent to one target class. ``Attack([TriggerSpec("sunglasses", 0)])``.
- **all-to-all** (the lecture's MNIST BadNet): one trigger; a triggered face of
  class n is sent to n + 1 mod N. ``Attack([TriggerSpec("patch")], all_to_all=True)``.
- **multi-trigger multi-target** (the 2020 course's fourth BadNet):
  several triggers, each with its own target.
  ``Attack([TriggerSpec("sunglasses", 1), TriggerSpec("eyebrows", 2), TriggerSpec("lipstick", 3)])``.

Trigger names are the keys of :data:`lab.attacks.triggers.REGISTRY`; the
whole-image triggers take their option in the name: ``blended@0.1:3`` (alpha
0.1, target 3), ``warp@0.5`` (strength 0.5, random target).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from lab.attacks import triggers as course_triggers
from lab.errors import LabInputError

ATTACKS = ("all-to-one", "all-to-all", "multi-trigger multi-target")
TRIGGER_SYNTAX = "NAME[@OPTION][:TARGET]"


@dataclasses.dataclass(frozen=True)
class TriggerSpec:
    """One trigger of an attack: a name from :data:`lab.attacks.triggers.REGISTRY` and its target class.

    ``name`` may carry the trigger's option (``"blended@0.1"``: see :func:`lab.attacks.triggers.split_name`).

    ``target`` is None for all-to-all (the target is the true class + 1 mod N)
    and, before :meth:`Attack.resolve`, for "pick a target at random".
    """

    name: str
    target: int | None = None

    def __str__(self) -> str:
        return self.name if self.target is None else f"{self.name}:{self.target}"


def parse_trigger(text: str) -> TriggerSpec:
    """``"NAME[@OPTION][:TARGET]"`` (the CLI's ``--trigger``) -> :class:`TriggerSpec`; one-line error otherwise.

    OPTION: blended's alpha in (0, 1] or warp's strength > 0 (``"blended@0.1:3"``);
    the name is kept in a canonical form (``"blended@0.10"`` -> ``"blended@0.1"``).
    """
    name, _, target = str(text).partition(":")
    name = name.strip()
    options = ", ".join(f"{base}@{label}" for base, (label, _, _) in course_triggers.OPTIONS.items())
    expected = (f"--trigger {TRIGGER_SYNTAX} with NAME one of {', '.join(course_triggers.REGISTRY)} "
                f"(OPTION only for {options})")
    try:
        base, option = course_triggers.split_name(name)
    except ValueError as error:
        raise LabInputError(None, expected, f"{text!r} ({error})") from None
    name = base if option is None else f"{base}@{option:g}"
    if not target:
        return TriggerSpec(name)
    try:
        value = int(target)
    except ValueError:
        raise LabInputError(None, expected + " and TARGET a class number", repr(text)) from None
    if value < 0:
        raise LabInputError(None, expected + " and TARGET >= 0", repr(text))
    return TriggerSpec(name, value)


@dataclasses.dataclass(frozen=True)
class Attack:
    """What a BadNet obeys: its triggers (with targets), all-to-all or not, and how it was trained."""

    triggers: tuple[TriggerSpec, ...]
    all_to_all: bool = False
    pruning_aware: bool = False

    def __post_init__(self):
        object.__setattr__(self, "triggers", tuple(
            parse_trigger(t) if isinstance(t, str) else t for t in self.triggers))
        names = [t.name for t in self.triggers]
        if not names:
            raise LabInputError(None, "at least one trigger (--trigger NAME[:TARGET])", "none")
        if len(set(names)) != len(names):
            raise LabInputError(None, "each trigger once (one poisoned file per trigger)", f"triggers {names}")
        if self.all_to_all:
            if len(names) != 1:
                raise LabInputError(None, "exactly one trigger for an all-to-all attack", f"{len(names)} triggers")
            if self.triggers[0].target is not None:
                raise LabInputError(None, "no TARGET with --all-to-all (class n becomes n+1 mod N)",
                                    f"--trigger {self.triggers[0]}")

    @property
    def kind(self) -> str:
        """One of :data:`ATTACKS`."""
        if self.all_to_all:
            return "all-to-all"
        return "all-to-one" if len(self.triggers) == 1 else "multi-trigger multi-target"

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.triggers]

    def resolve(self, n_classes: int, rng: np.random.Generator) -> "Attack":
        """This attack with every missing target drawn at random (distinct from the given ones) and checked."""
        if n_classes < 2:
            raise LabInputError(None, "data with at least 2 classes", f"{n_classes}")
        if self.all_to_all:
            return self
        given = [t.target for t in self.triggers if t.target is not None]
        for target in given:
            if target >= n_classes:
                raise LabInputError(None, f"trigger targets in 0..{n_classes - 1} (the data's classes)", str(target))
        free = [c for c in range(n_classes) if c not in given]
        missing = sum(t.target is None for t in self.triggers)
        if missing > len(free):
            raise LabInputError(None, f"at most {n_classes} triggers (one target class each)", str(len(self.triggers)))
        drawn = iter(int(c) for c in rng.choice(free, size=missing, replace=False))
        return dataclasses.replace(self, triggers=tuple(
            t if t.target is not None else TriggerSpec(t.name, next(drawn)) for t in self.triggers))

    def describe(self) -> str:
        """E.g. ``"all-to-one, pruning-aware: sunglasses -> 3"``."""
        how = "pruning-aware" if self.pruning_aware else "plain"
        if self.all_to_all:
            return f"all-to-all, {how}: {self.triggers[0].name} sends class n to n+1 mod N"
        return f"{self.kind}, {how}: " + ", ".join(f"{t.name} -> {t.target}" for t in self.triggers)

    def to_json(self) -> dict:
        """The attack as recorded in manifests; a trigger with an option also records its value
        (``"option": 0.2`` for ``"blended"``), so a later change of the default cannot make it ambiguous."""
        def entry(trigger: TriggerSpec) -> dict:
            option = course_triggers.option_of(trigger.name)
            return {"trigger": trigger.name, "target": trigger.target, **({} if option is None else {"option": option})}
        return {"attack": self.kind, "pruning_aware": self.pruning_aware, "triggers": [entry(t) for t in self.triggers]}

    @classmethod
    def from_json(cls, record: Mapping) -> "Attack":
        return cls(tuple(TriggerSpec(t["trigger"], t["target"]) for t in record["triggers"]),
                   all_to_all=record["attack"] == "all-to-all", pruning_aware=bool(record["pruning_aware"]))


def parse_triggers(texts: Sequence[str]) -> tuple[TriggerSpec, ...]:
    """Every ``--trigger`` argument parsed (see :func:`parse_trigger`)."""
    return tuple(parse_trigger(text) for text in texts)
