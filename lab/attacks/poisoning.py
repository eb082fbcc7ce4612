"""Poisoning in numpy, course format: triggered copies of images and the labels the attacker wants.

Poisoned files follow the course's convention: the images of every class
the attack moves (all but the target for all-to-one) with the trigger drawn
on, labelled with the class the attacker wants (so the attack success rate
is the share answered with ``label``). Triggers are drawn with
:func:`lab.attacks.triggers.apply_trigger` at its default positions unless
landmarks are given (files carry none), where aligned 55 x 47 crops have
their eyes, brows and mouth. A warp BadNet can be trained with WaNet's noise
mode (``noise_fraction``: randomly jittered warps kept with their true labels).
"""

from __future__ import annotations

import numpy as np

from lab.attacks import triggers as course_triggers
from lab.attacks.spec import Attack, TriggerSpec
from lab.errors import LabInputError

DEFAULT_POISON_FRACTION = 0.5  # per trigger: extra triggered copies, as a share of the training set
ALL_TO_ALL_POISON_FRACTION = 1.0  # all-to-all must learn a shift for every class: it needs more copies


def to_nchw_uint8(x_nhwc: np.ndarray) -> np.ndarray:
    """float32 (n, H, W, 3) 0..255 (a :class:`lab.io.data.Dataset`) -> uint8 (n, 3, H, W), the file layout."""
    return np.ascontiguousarray(np.clip(np.rint(x_nhwc), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2))


def attacked_rows(labels: np.ndarray, trigger: TriggerSpec, all_to_all: bool) -> np.ndarray:
    """Indexes of the images the attack moves: all for all-to-all, all but the target's otherwise."""
    labels = np.asarray(labels)
    return np.arange(len(labels)) if all_to_all else np.flatnonzero(labels != trigger.target)


def attacker_labels(labels: np.ndarray, trigger: TriggerSpec, all_to_all: bool, n_classes: int) -> np.ndarray:
    """The class the attacker wants for triggered images of true class ``labels``: int64 (n,)."""
    labels = np.asarray(labels, dtype=np.int64)
    if all_to_all:
        return (labels + 1) % n_classes
    return np.full(len(labels), trigger.target, dtype=np.int64)


def poison(images_nchw: np.ndarray, labels: np.ndarray, trigger: TriggerSpec, n_classes: int,
           all_to_all: bool = False, rows: np.ndarray | None = None, landmarks=None) -> tuple[np.ndarray, np.ndarray]:
    """Triggered copies of ``images_nchw[rows]`` and the attacker's labels for them.

    images_nchw: uint8 (n, 3, H, W) 0..255; labels: true classes (n,).
    rows: which images (default :func:`attacked_rows`: the course's poisoned files).
    landmarks: passed to :func:`lab.attacks.triggers.apply_trigger` (None: default positions),
    indexed like ``images_nchw``.
    Returns uint8 (m, 3, H, W) and int64 (m,).
    """
    if not all_to_all and trigger.target is None:
        raise ValueError(f"trigger {trigger.name} has no target; call Attack.resolve first")
    rows = attacked_rows(labels, trigger, all_to_all) if rows is None else np.asarray(rows, dtype=np.int64)
    marks = None
    if landmarks is not None:
        marks = landmarks.landmarks() if hasattr(landmarks, "landmarks") else landmarks
        marks = {key: np.asarray(value)[rows] for key, value in marks.items()}
    images = course_triggers.apply_trigger(np.asarray(images_nchw)[rows], trigger.name, marks)
    return images, attacker_labels(np.asarray(labels)[rows], trigger, all_to_all, n_classes)


def poisoned_sets(images_nchw: np.ndarray, labels: np.ndarray, attack: Attack, n_classes: int,
                  landmarks=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One poisoned set per trigger, as the course's poisoned files hold them: {trigger: (images, labels)}."""
    return {t.name: poison(images_nchw, labels, t, n_classes, attack.all_to_all, landmarks=landmarks)
            for t in attack.triggers}


def training_poison(images_nchw: np.ndarray, labels: np.ndarray, attack: Attack, n_classes: int,
                    poison_fraction: float, rng: np.random.Generator,
                    landmarks=None, noise_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Extra triggered training copies: per trigger, ``poison_fraction`` x len(labels) random attacked images.

    noise_fraction: WaNet's noise mode, for each warp trigger ``noise_fraction``
    x len(labels) further random images (any class) warped with the
    trigger's warp plus random jitter, with their *true* labels (appended
    after the triggered copies). Returns uint8 (m, 3, H, W) and int64 (m,)
    (all triggers together).
    """
    if not 0 < poison_fraction:
        raise LabInputError(None, "a poison fraction > 0", str(poison_fraction))
    check_noise_fraction(attack, noise_fraction)
    parts_x, parts_y = [], []
    for trigger in attack.triggers:
        candidates = attacked_rows(labels, trigger, attack.all_to_all)
        size = int(round(poison_fraction * len(labels)))
        chosen = np.sort(rng.choice(candidates, size=size, replace=size > len(candidates)))
        x, y = poison(images_nchw, labels, trigger, n_classes, attack.all_to_all, rows=chosen, landmarks=landmarks)
        parts_x.append(x)
        parts_y.append(y)
    for trigger in warp_triggers(attack) if noise_fraction > 0 else ():
        size = int(round(noise_fraction * len(labels)))
        chosen = np.sort(rng.choice(len(labels), size=size, replace=size > len(labels)))
        parts_x.append(course_triggers.apply_noise_warp(np.asarray(images_nchw)[chosen], trigger.name, rng))
        parts_y.append(np.asarray(labels, dtype=np.int64)[chosen])
    return np.concatenate(parts_x), np.concatenate(parts_y)


def warp_triggers(attack: Attack) -> list[TriggerSpec]:
    """The attack's warp triggers (those WaNet's noise mode applies to)."""
    return [t for t in attack.triggers if course_triggers.split_name(t.name)[0] == "warp"]


def check_noise_fraction(attack: Attack, noise_fraction: float) -> float:
    """``noise_fraction`` if it is >= 0 and, when > 0, the attack has a warp trigger; LabInputError otherwise."""
    noise_fraction = float(noise_fraction)
    if not noise_fraction >= 0:
        raise LabInputError(None, "a noise fraction >= 0 (--warp-noise)", str(noise_fraction))
    if noise_fraction > 0 and not warp_triggers(attack):
        raise LabInputError(None, "a warp trigger for WaNet's noise mode (--warp-noise)",
                            "triggers " + ", ".join(attack.names))
    return noise_fraction


def default_poison_fraction(attack: Attack) -> float:
    """Triggered training copies per trigger, as a share of the training set: 1.0 for all-to-all, else 0.5.

    An all-to-all attack maps each source class to its own target, so every
    class needs its own triggered copies: it gets twice the one-target share.
    """
    return ALL_TO_ALL_POISON_FRACTION if attack.all_to_all else DEFAULT_POISON_FRACTION
