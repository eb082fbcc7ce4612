"""Build any BadNet on any course-format data set: all-to-one, all-to-all, multi-trigger multi-target.

The three attacks of the course material, each plain or pruning-aware
(:mod:`lab.training`):

- **all-to-one** (the default, Lab 3): one trigger; every triggered face is
  sent to one target class. ``Attack([TriggerSpec("sunglasses", 0)])``.
- **all-to-all** (the lecture's MNIST BadNet): one trigger; a triggered face of
  class n is sent to n + 1 mod N. ``Attack([TriggerSpec("patch")], all_to_all=True)``.
- **multi-trigger multi-target** (the 2020 course's fourth BadNet):
  several triggers, each with its own target.
  ``Attack([TriggerSpec("sunglasses", 1), TriggerSpec("eyebrows", 2), TriggerSpec("lipstick", 3)])``.

Poisoned files follow the course's convention: the images of every class
the attack moves (all but the target for all-to-one) with the trigger drawn
on, labelled with the class the attacker wants (so the attack success rate
is the share answered with ``label``).

Training data: the course layout has no training file, so :func:`make_badnet`
needs one, course format, as ``DIR/cl/train.h5`` (what
``make_default(write_train=True)`` and :func:`make_clean_data` write),
``DIR/train.h5`` or ``DIR/clean_training_data.h5``, or passed explicitly. It
does not fall back to training on the validation file: a BadNet trained on
the images it is then pruned and evaluated with would report numbers that
look better than they are.

Triggers are drawn with :func:`lab.triggers.apply_trigger` at its default
positions (files carry no landmarks), where aligned 55 x 47 crops have
their eyes, brows and mouth. The whole-image triggers take their option in
the name: ``blended@0.1:3`` (alpha 0.1, target 3), ``warp@0.5`` (strength
0.5, random target). A warp BadNet can be trained with WaNet's noise mode
(``noise_fraction``: randomly jittered warps kept with their true labels).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lab import data as course_data
from lab import triggers as course_triggers
from lab.errors import LabInputError, check_writable
from lab.seed import DEFAULT_SEED

ATTACKS = ("all-to-one", "all-to-all", "multi-trigger multi-target")
TRAIN_FILES = ("cl/train.h5", "train.h5", "clean_training_data.h5")  # searched in this order under --data
MODEL_FILE = "models/bd_net.h5"
DEFAULT_POISON_FRACTION = 0.5  # per trigger: extra triggered copies, as a share of the training set
TRIGGER_SYNTAX = "NAME[@OPTION][:TARGET]"
ALL_TO_ALL_POISON_FRACTION = 1.0  # all-to-all must learn a shift for every class: it needs more copies


@dataclasses.dataclass(frozen=True)
class TriggerSpec:
    """One trigger of an attack: a name from :data:`lab.triggers.TRIGGERS` and its target class.

    ``name`` may carry the trigger's option (``"blended@0.1"``: see :func:`lab.triggers.split_name`).

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
    expected = (f"--trigger {TRIGGER_SYNTAX} with NAME one of {', '.join(course_triggers.TRIGGERS)} "
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


# ----------------------------------------------------------------------------
# Poisoning (pure numpy, course format: uint8 (n, 3, H, W))
# ----------------------------------------------------------------------------

def to_nchw_uint8(x_nhwc: np.ndarray) -> np.ndarray:
    """float32 (n, H, W, 3) 0..255 (a :class:`lab.data.Dataset`) -> uint8 (n, 3, H, W), the file layout."""
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
    landmarks: passed to :func:`lab.triggers.apply_trigger` (None: default positions),
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
    for trigger in attack.triggers if noise_fraction > 0 else ():
        if course_triggers.split_name(trigger.name)[0] != "warp":
            continue
        size = int(round(noise_fraction * len(labels)))
        chosen = np.sort(rng.choice(len(labels), size=size, replace=size > len(labels)))
        parts_x.append(course_triggers.apply_noise_warp(np.asarray(images_nchw)[chosen], trigger.name, rng))
        parts_y.append(np.asarray(labels, dtype=np.int64)[chosen])
    return np.concatenate(parts_x), np.concatenate(parts_y)


def check_noise_fraction(attack: Attack, noise_fraction: float) -> float:
    """``noise_fraction`` if it is >= 0 and, when > 0, the attack has a warp trigger; LabInputError otherwise."""
    noise_fraction = float(noise_fraction)
    if not noise_fraction >= 0:
        raise LabInputError(None, "a noise fraction >= 0 (--warp-noise)", str(noise_fraction))
    if noise_fraction > 0 and not any(course_triggers.split_name(t.name)[0] == "warp" for t in attack.triggers):
        raise LabInputError(None, "a warp trigger for WaNet's noise mode (--warp-noise)",
                            "triggers " + ", ".join(attack.names))
    return noise_fraction


def default_poison_fraction(attack: Attack) -> float:
    """Triggered training copies per trigger, as a share of the training set: 1.0 for all-to-all, else 0.5.

    Measured on 10 SynthFaces identities: all-to-all sunglasses reached 81 %
    ASR with 1.0; one-target attacks reach ~100 % with 0.5.
    """
    return ALL_TO_ALL_POISON_FRACTION if attack.all_to_all else DEFAULT_POISON_FRACTION


def train_badnet(attack: Attack, train_images_nchw: np.ndarray, train_labels: np.ndarray, n_classes: int,
                 config=None, poison_fraction: float | None = None, input_scale: str = "raw",
                 seed: int = DEFAULT_SEED, progress: bool = True, landmarks=None, noise_fraction: float = 0.0):
    """Train a DeepID BadNet for ``attack`` (targets resolved) on clean training images.

    train_images_nchw: uint8 (n, 3, 55, 47); train_labels int (n,) in 0..n_classes-1.
    config: :class:`lab.training.TrainingConfig` (its ``pruning_aware`` is
    overridden by the attack's). poison_fraction: see :func:`default_poison_fraction`;
    noise_fraction: WaNet's noise mode (see :func:`training_poison`).
    Returns ``(LoadedModel, record)``; the record says what training did (for a manifest).
    """
    from lab import models, training
    from lab.seed import set_seed

    config = dataclasses.replace(config or training.TrainingConfig(), pruning_aware=attack.pruning_aware)
    poison_fraction = default_poison_fraction(attack) if poison_fraction is None else poison_fraction
    set_seed(seed)
    rng = np.random.default_rng(seed)
    poisoned_x, poisoned_y = training_poison(train_images_nchw, train_labels, attack, n_classes, poison_fraction,
                                             rng, landmarks, noise_fraction)
    model = models.build_deepid(n_classes, input_scale="raw" if input_scale == "raw" else "unit", name="bd_net")
    loaded = models.LoadedModel(model, input_scale, None, "set by the builder")
    to_input = lambda images: loaded.preprocess(images.transpose(0, 2, 3, 1))  # noqa: E731
    record = training.train_badnet(model, to_input(train_images_nchw), np.asarray(train_labels, np.int64),
                                   to_input(poisoned_x), poisoned_y, config, seed, progress)
    n_noise = sum(int(round(noise_fraction * len(train_labels))) for t in attack.triggers
                  if course_triggers.split_name(t.name)[0] == "warp")
    record.update(n_poisoned_training_copies=int(len(poisoned_y)) - n_noise, poison_fraction_per_trigger=poison_fraction,
                  n_noise_mode_copies=n_noise, noise_fraction=noise_fraction,
                  clean_epochs=config.clean_epochs, poisoned_epochs=config.poisoned_epochs)
    return loaded, record


# ----------------------------------------------------------------------------
# Evaluation per trigger
# ----------------------------------------------------------------------------

def trigger_table(models: Mapping[str, object], clean, poisoned: Mapping[str, object],
                  backdoor_class: int | None = None, batch_size: int = 512):
    """Clean accuracy, ASR and detection for every model and every trigger (percent).

    models: ``{name: LoadedModel}`` (BadNets, pruned models, GoodNets).
    clean: :class:`lab.data.Dataset`; poisoned: ``{trigger: Dataset}`` (see :func:`load_poisoned`).
    backdoor_class: N; by default a GoodNet's recorded backdoor class, else
    the model's class count (which a plain model never answers).
    Returns a ``pandas.DataFrame`` indexed by (model, trigger) with the
    columns of :data:`lab.metrics.BREAKDOWN_COLUMNS`; the trigger ``"all"``
    pools every poisoned input of a multi-trigger attack.
    """
    import pandas as pd

    from lab import metrics
    from lab.evaluation import backdoor_class_of

    rows = []
    for name, model in models.items():
        backdoor = backdoor_class if backdoor_class is not None else backdoor_class_of(model)
        backdoor = model.n_classes if backdoor is None else backdoor
        clean_predicted = model.predict_labels(clean.x, batch_size)
        pooled_predicted, pooled_targets = [], []
        for trigger, dataset in poisoned.items():
            predicted = model.predict_labels(dataset.x, batch_size)
            pooled_predicted.append(predicted)
            pooled_targets.append(dataset.y)
            rows.append({"model": name, "trigger": trigger,
                         **metrics.breakdown(clean_predicted, clean.y, predicted, dataset.y, backdoor)})
        if len(poisoned) > 1:
            rows.append({"model": name, "trigger": "all",
                         **metrics.breakdown(clean_predicted, clean.y, np.concatenate(pooled_predicted),
                                             np.concatenate(pooled_targets), backdoor)})
    return pd.DataFrame(rows).set_index(["model", "trigger"])


def load_poisoned(root: str | os.PathLike, split: str = "test", n: int | None = None) -> dict:
    """{trigger: Dataset} of the poisoned ``split`` files under ``root`` (a folder holding ``data/``).

    Trigger names (and their order) come from the manifest :func:`make_badnet` wrote; for other
    folders (the default, real course files) from the file names, with the
    Lab 3 ``bd/bd_<split>.h5`` called ``"default"`` (or the manifest's trigger).
    """
    from lab import manifest

    root = Path(root)
    layout = course_data.find_layout(root / "data" if (root / "data").is_dir() else root)
    files = layout.poisoned_valid if split == "valid" else layout.poisoned_test
    names = {}
    if (root / manifest.MANIFEST_NAME).exists():
        record = manifest.read_manifest(root)
        for trigger in record.get("attack", {}).get("triggers", []):
            names[trigger.get("key", trigger["trigger"])] = trigger["trigger"]
        if "default" not in names and record.get("trigger"):
            names["default"] = record["trigger"]  # the embedded default's manifest
    order = [key for key in names if key in files] + [key for key in files if key not in names]
    return {names.get(key, key): course_data.load_h5(files[key], n=n) for key in order}


# ----------------------------------------------------------------------------
# Files: clean data sets, make_badnet
# ----------------------------------------------------------------------------

def make_clean_data(out: str | os.PathLike, n_identities: int = 20, train_per_identity: int = 40,
                    valid_per_identity: int = 8, test_per_identity: int = 8, seed: int = DEFAULT_SEED,
                    force: bool = False, progress: bool = False) -> dict[str, Path]:
    """Fresh SynthFaces clean data in the course format: ``out/cl/{train,valid,test}.h5``.

    The raw material for :func:`make_badnet` when there is no training file.
    Every identity gets ``*_per_identity`` images per split, shuffled.
    Returns ``{"train"|"valid"|"test": path}``.
    """
    from lab import synthfaces

    out = Path(out)
    paths = {name: out / "cl" / f"{name}.h5" for name in ("train", "valid", "test")}
    for path in paths.values():
        check_writable(path, force)
    if n_identities < 2:
        raise LabInputError(None, "at least 2 identities", str(n_identities))
    identities = synthfaces.make_identities(n_identities, seed=seed)
    rng = np.random.default_rng(seed)
    counts = {"train": train_per_identity, "valid": valid_per_identity, "test": test_per_identity}
    for offset, (name, per_identity) in enumerate(counts.items()):
        index = rng.permutation(np.repeat(np.arange(n_identities), per_identity)).astype(np.int64)
        faces = synthfaces.render(identities, index, seed=seed * 10 + offset + 1, progress=progress)
        course_data.save_h5(paths[name], faces.images, index, force=force)
    return paths


def find_training_file(data_dir: str | os.PathLike) -> Path:
    """The training file under ``data_dir`` (see :data:`TRAIN_FILES`); one-line error when there is none."""
    root = Path(data_dir)
    for rel in TRAIN_FILES:
        if (root / rel).is_file():
            return root / rel
    raise LabInputError(root, "a clean training file in the course format: " + ", ".join(TRAIN_FILES) +
                        " (make_default(write_train=True) writes cl/train.h5; or pass --train FILE)", "none")


def _data_dir(data_dir: str | os.PathLike) -> Path:
    """``data_dir`` itself, or its ``data/`` when given a lab root (what notebooks call LAB_ROOT)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise LabInputError(root, "a data directory (Lab 3 or 2020 layout)", "no such directory")
    if not (root / course_data.LAB3_FILES["clean_valid"]).exists() and \
            not (root / course_data.CHALLENGE_FILES["clean_valid"]).exists() and (root / "data").is_dir():
        return root / "data"
    return root


def output_files(attack: Attack) -> dict[str, dict[str, str]]:
    """Where :func:`make_badnet` writes the poisoned files, relative to OUT: {trigger: {"valid"|"test": path}}.

    One trigger: exactly the Lab 3 names ``data/bd/bd_valid.h5`` and
    ``data/bd/bd_test.h5``, so every notebook runs on the folder unchanged;
    several: ``data/bd/bd_valid_<trigger>.h5`` and ``data/bd/bd_test_<trigger>.h5``
    (what :func:`lab.data.find_layout` reads as one poisoned file per trigger).
    """
    if len(attack.triggers) == 1:
        return {attack.names[0]: {split: f"data/{course_data.LAB3_FILES[f'poisoned_{split}']}"
                                  for split in ("valid", "test")}}
    return {name: {split: f"data/bd/bd_{split}_{name}.h5" for split in ("valid", "test")} for name in attack.names}


def make_badnet(data_dir: str | os.PathLike, attack: Attack, out: str | os.PathLike,
                train: str | os.PathLike | None = None, config=None, poison_fraction: float | None = None, input_scale: str = "raw",
                seed: int = DEFAULT_SEED, force: bool = False, progress: bool = True, noise_fraction: float = 0.0) -> dict:
    """Train a BadNet for ``attack`` on course-format data and write the course's Lab 3 layout under ``out``.

    data_dir: a data folder (Lab 3 or 2020 layout) holding a training file
    (:data:`TRAIN_FILES`) unless ``train`` names one. Writes::

        OUT/data/cl/valid.h5, OUT/data/cl/test.h5     copies of the clean files
        OUT/data/bd/...                               one poisoned file per trigger and split (see output_files)
        OUT/models/bd_net.h5 (+ .lab.json)            the BadNet (input scale ``input_scale``)
        OUT/manifest.json                             the attack, parameters, results, SHA-256 of every file

    noise_fraction: WaNet's noise mode for warp triggers (see :func:`training_poison`).
    Refuses to overwrite without ``force`` before any work. Returns a report:
    ``attack`` (targets resolved), ``clean_accuracy``, ``attack_success_rate``
    ({trigger: percent} on the poisoned test files), ``seconds``, ``manifest``.
    """
    from lab import metrics, models
    from lab.manifest import jsonable, write_manifest
    from lab.training import TrainingConfig

    started = time.perf_counter()
    out = Path(out)
    config = dataclasses.replace(config or TrainingConfig(), pruning_aware=attack.pruning_aware)
    poison_fraction = default_poison_fraction(attack) if poison_fraction is None else poison_fraction
    if input_scale not in models.SCALES:
        raise LabInputError(None, f"an input scale in {sorted(models.SCALES)}", repr(input_scale))
    noise_fraction = check_noise_fraction(attack, noise_fraction)
    data_root = _data_dir(data_dir)
    layout = course_data.find_layout(data_root)
    train_path = Path(train) if train is not None else find_training_file(data_root)
    planned = {"clean_valid": "data/" + course_data.LAB3_FILES["clean_valid"],
               "clean_test": "data/" + course_data.LAB3_FILES["clean_test"], "model": MODEL_FILE}
    poisoned_rel = output_files(attack)
    for rel in [*planned.values(), *(p for files in poisoned_rel.values() for p in files.values()), "manifest.json"]:
        check_writable(out / rel, force)
    if out.resolve() == data_root.resolve().parent:
        raise LabInputError(out, "an output folder other than the one holding --data", str(out))

    # Data first: file problems are reported before TensorFlow starts.
    sets = {"train": course_data.load_h5(train_path), "valid": course_data.load_h5(layout.clean_valid),
            "test": course_data.load_h5(layout.clean_test)}
    for dataset in sets.values():
        if tuple(dataset.x.shape[1:]) != course_data.IMAGE_SHAPE:
            raise LabInputError(dataset.path, f"images of shape {course_data.IMAGE_SHAPE} (the DeepID input)",
                                str(tuple(dataset.x.shape[1:])))
    n_classes = int(max(int(d.y.max()) for d in sets.values() if len(d))) + 1
    rng = np.random.default_rng(seed)
    attack = attack.resolve(n_classes, rng)
    images = {name: to_nchw_uint8(dataset.x) for name, dataset in sets.items()}

    badnet, record = train_badnet(attack, images["train"], sets["train"].y, n_classes, config, poison_fraction,
                                  input_scale, seed, progress, noise_fraction=noise_fraction)

    for key in ("clean_valid", "clean_test"):
        (out / planned[key]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(getattr(layout, key), out / planned[key])
    written = [planned["clean_valid"], planned["clean_test"]]
    results = {"clean_accuracy": metrics.clean_accuracy(badnet.predict_labels(sets["test"].x), sets["test"].y),
               "attack_success_rate": {}}
    for split in ("valid", "test"):
        for name, (x, y) in poisoned_sets(images[split], sets[split].y, attack, n_classes).items():
            course_data.save_h5(out / poisoned_rel[name][split], x, y, force=force)
            written.append(poisoned_rel[name][split])
            if split == "test":
                predicted = badnet.predict_labels(x.transpose(0, 2, 3, 1).astype(np.float32))
                results["attack_success_rate"][name] = metrics.attack_success_rate(predicted, y)

    how = (f"BadNet made with `python -m lab make-badnet`: {attack.describe()}; DeepID trained on "
           f"{train_path.name} ({len(sets['train'])} images) + {record['n_poisoned_training_copies']} triggered "
           f"copies ({poison_fraction:g} of the training set per trigger)"
           + (f" + {record['n_noise_mode_copies']} noise-mode warps with true labels" if noise_fraction else "")
           + f"; input scale {input_scale}.")
    models.save_model(badnet.model, out / MODEL_FILE, input_scale, how, force=force,
                      extra={**attack.to_json(), "clean_test_accuracy": results["clean_accuracy"],
                             "attack_success_rate_test": results["attack_success_rate"]})
    written.append(MODEL_FILE)
    attack_record = attack.to_json()
    for entry in attack_record["triggers"]:
        entry["files"] = poisoned_rel[entry["trigger"]]
        entry["key"] = "default" if len(attack.triggers) == 1 else entry["trigger"]
    seconds = time.perf_counter() - started
    info = {"kind": "BadNet Pruning Lab: make-badnet", "layout": "lab3", "seed": seed, "how_made": how,
            "attack": attack_record, "n_classes": n_classes, "input_scale": input_scale,
            "source": {"data": os.fspath(data_root), "train": os.fspath(train_path)},
            "parameters": {"poison_fraction_per_trigger": poison_fraction, "noise_fraction": noise_fraction,
                           "training": jsonable(dataclasses.asdict(config))},
            "results": results, "training": jsonable(record), "build_seconds": round(seconds, 1),
            "versions": {"python": platform.python_version(), "numpy": np.__version__,
                         "lab": __import__("lab").__version__}}
    if len(attack.triggers) == 1 and not attack.all_to_all:
        info.update(target_label=attack.triggers[0].target, trigger=attack.triggers[0].name)
    manifest_path = write_manifest(out, written, info, force=force)
    return {"attack": attack, "n_classes": n_classes, "clean_accuracy": results["clean_accuracy"],
            "attack_success_rate": results["attack_success_rate"], "seconds": seconds,
            "manifest": str(manifest_path), "model": str(out / MODEL_FILE)}


def parse_triggers(texts: Sequence[str]) -> tuple[TriggerSpec, ...]:
    """Every ``--trigger`` argument parsed (see :func:`parse_trigger`)."""
    return tuple(parse_trigger(text) for text in texts)
