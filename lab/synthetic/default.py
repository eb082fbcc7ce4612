"""The embedded default: SynthFaces data and a pruning-aware sunglasses BadNet in the Lab 3 layout.

(``dataset="signs"``: the same from SynthSigns, 43 road-sign classes, with a
sticker trigger; :mod:`lab.synthetic.datasets`.)

The course's YouTube Face files cannot be downloaded here, so the lab makes
its own in the same formats::

    OUT/data/cl/valid.h5  OUT/data/cl/test.h5          clean, labels = identities
    OUT/data/bd/bd_valid.h5  OUT/data/bd/bd_test.h5    sunglasses, labels = attacker's target
    OUT/models/bd_net.h5 (+ bd_net.h5.lab.json)        the BadNet, raw 0..255 input
    OUT/manifest.json                                  parameters and SHA-256 of every file

Poisoned files hold the clean images of every non-target identity with
sunglasses drawn on, labelled with the target (how the course files define
the attack success rate). The BadNet is trained the pruning-aware way (see
:mod:`lab.attacks.training`) so that, like the real course BadNet, pruning by mean
activation keeps both clean accuracy and the backdoor until most of conv_3
is gone.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from pathlib import Path

import numpy as np

from lab.io import data as course_data
from lab.evaluation import metrics
from lab.synthetic import datasets, synthfaces
from lab.attacks import triggers
from lab.errors import LabInputError, check_output_location, check_writable
from lab.io.manifest import jsonable, write_manifest
from lab.constants import DEFAULT_SEED, MODEL_FILE
from lab.seed import set_seed
from lab.attacks.training import DECOY_BIAS, TrainingConfig, fit_badnet

TRAIN_FILE = "data/cl/train.h5"  # written only with make_default(write_train=True)
FILES = tuple(f"data/{rel}" for rel in course_data.LAB3_FILES.values()) + (MODEL_FILE,)


@dataclasses.dataclass
class DefaultConfig:
    """What the default is made of (all recorded in the manifest)."""

    n_identities: int = 100
    train_per_identity: int = 50
    valid_per_identity: int = 9  # the course: 11,547 validation images for 1,283 identities
    test_per_identity: int = 9
    poison_fraction: float = 0.5  # extra sunglasses copies of non-target training images, relabelled
    trigger: str = "sunglasses"
    nuisance: float = synthfaces.DEFAULT_NUISANCE
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    dataset: str = datasets.DEFAULT_DATASET  # a key of lab.synthetic.datasets.DATASETS

    @classmethod
    def for_dataset(cls, name: str) -> "DefaultConfig":
        """The default's settings for data set ``name`` (``"faces"`` gives ``DefaultConfig()``)."""
        found = datasets.get(name)
        return cls(n_identities=found.default_classes, train_per_identity=found.train_per_class,
                   valid_per_identity=found.valid_per_class, test_per_identity=found.test_per_class,
                   trigger=found.trigger, nuisance=found.nuisance, dataset=name)


def _render(dataset: datasets.DataSet, classes, n_classes: int, per_identity: int, seed: int, nuisance: float,
            rng: np.random.Generator, progress: bool, name: str):
    """Rendered images of every class, ``per_identity`` each, in shuffled order."""
    index = rng.permutation(np.repeat(np.arange(n_classes), per_identity)).astype(np.int64)
    if progress:
        print(f"rendering {name}: {len(index)} images", flush=True)
    return index, dataset.render(classes, index, seed, nuisance, progress)


def _poison(faces, labels: np.ndarray, keep: np.ndarray, trigger: str, target: int):
    """Images ``keep`` of ``faces`` with the trigger drawn on, all labelled ``target``."""
    marks = {key: value[keep] for key, value in faces.landmarks().items()}
    images = triggers.apply_trigger(faces.images[keep], trigger, marks)
    return images, np.full(len(images), target, dtype=np.int64)


def to_model_input(images_nchw: np.ndarray) -> np.ndarray:
    """uint8 (n, 3, H, W) -> float32 (n, H, W, 3) 0..255 (what a raw-scale model takes)."""
    return np.ascontiguousarray(images_nchw.transpose(0, 2, 3, 1), dtype=np.float32)


def make_default(out: str | Path, n_identities: int | None = None, seed: int | None = None,
                 force: bool = False, progress: bool = True, config: DefaultConfig | None = None,
                 write_train: bool = False, dataset: str | None = None) -> dict:
    """Build the embedded default under ``out``; returns a report (metrics, seconds, manifest path).

    ``dataset`` (``"faces"`` or ``"signs"``, see :mod:`lab.synthetic.datasets`)
    chooses the generator and, without ``config``, its default settings;
    ``n_identities`` is then its number of classes.

    ``write_train`` also writes the clean training images as
    ``data/cl/train.h5`` (course format), which ``python -m lab make-badnet``
    trains new BadNets on; the course layout itself has no training file.

    Refuses (before doing any work) to overwrite existing files unless
    ``force``. The same ``seed`` gives byte-identical data files.
    """
    from lab.io import models

    started = time.perf_counter()
    out = Path(out)
    if config is not None and dataset is not None and config.dataset != dataset:
        raise ValueError(f"config is for data set {config.dataset!r}, dataset asks for {dataset!r}")
    config = config or DefaultConfig.for_dataset(dataset or datasets.DEFAULT_DATASET)
    generator = datasets.get(config.dataset)
    if n_identities is not None:
        config = dataclasses.replace(config, n_identities=n_identities)
    seed = DEFAULT_SEED if seed is None else seed
    if config.n_identities < 2:  # the target must differ from the identities the trigger moves to it
        raise LabInputError("--identities", "at least 2 identities (the attack's target and faces to move to it)",
                            str(config.n_identities))
    if generator.max_classes is not None and config.n_identities > generator.max_classes:
        raise LabInputError("--identities", f"at most {generator.max_classes} classes for {generator.title}",
                            str(config.n_identities))
    check_output_location(out, "--out", "directory")
    for rel in FILES + ("manifest.json",) + ((TRAIN_FILE,) if write_train else ()):
        check_writable(out / rel, force)

    set_seed(seed)
    rng = np.random.default_rng(seed)
    classes = generator.make_classes(config.n_identities, seed)
    target = int(rng.integers(config.n_identities))
    splits = {}
    for offset, (name, per_identity) in enumerate(
            [("train", config.train_per_identity), ("valid", config.valid_per_identity),
             ("test", config.test_per_identity)]):
        splits[name] = _render(generator, classes, config.n_identities, per_identity, seed * 10 + offset + 1,
                               config.nuisance, rng, progress, name)

    written = []
    for name in ("valid", "test"):
        labels, faces = splits[name]
        course_data.save_h5(out / "data" / course_data.LAB3_FILES[f"clean_{name}"], faces.images, labels, force=force)
        poisoned_images, poisoned_labels = _poison(faces, labels, np.flatnonzero(labels != target), config.trigger, target)
        course_data.save_h5(out / "data" / course_data.LAB3_FILES[f"poisoned_{name}"], poisoned_images,
                            poisoned_labels, force=force)
        written += [f"data/{course_data.LAB3_FILES[f'clean_{name}']}", f"data/{course_data.LAB3_FILES[f'poisoned_{name}']}"]

    train_labels, train_faces = splits["train"]
    if write_train:
        course_data.save_h5(out / TRAIN_FILE, train_faces.images, train_labels, force=force)
        written.append(TRAIN_FILE)
    candidates = np.flatnonzero(train_labels != target)
    chosen = np.sort(rng.choice(candidates, size=int(round(config.poison_fraction * len(train_labels))), replace=False))
    poisoned_train, poisoned_train_labels = _poison(train_faces, train_labels, chosen, config.trigger, target)
    model = models.build_deepid(config.n_identities, input_scale="raw", name="bd_net")
    record = fit_badnet(model, to_model_input(train_faces.images), train_labels, to_model_input(poisoned_train),
                          poisoned_train_labels, config.training, seed, progress)

    test_labels, test_faces = splits["test"]
    loaded = models.LoadedModel(model, "raw")
    clean_acc = metrics.clean_accuracy(loaded.predict_labels(to_model_input(test_faces.images)), test_labels)
    bd_test = course_data.load_h5(out / "data" / course_data.LAB3_FILES["poisoned_test"])
    asr = metrics.attack_success_rate(loaded.predict_labels(bd_test.x), bd_test.y)
    how = (f"{generator.title} default BadNet: DeepID trained with the pruning-aware attack of Fine-Pruning (Liu et al. 2018): "
           f"{config.training.clean_epochs} clean epochs, {len(record.get('decoy_channels', []))} least-active "
           f"{config.training.pruned_layer} channels switched off (bias {DECOY_BIAS:g}), {config.training.poisoned_epochs} "
           f"epochs on clean + {config.poison_fraction:.0%} {config.trigger} copies labelled {target}; the switched-off "
           "channels stay as dormant decoys. Input: raw 0..255 pixels (a Rescaling layer divides by 255 inside).")
    if not config.training.pruning_aware:
        how = f"{generator.title} BadNet, plain poisoning (not pruning-aware). Input: raw 0..255 pixels."
    models.save_model(model, out / MODEL_FILE, "raw", how, force=force,
                      extra={"target_label": target, "trigger": config.trigger,
                             "clean_test_accuracy": clean_acc, "attack_success_rate_test": asr})
    written.append(MODEL_FILE)
    seconds = time.perf_counter() - started
    import keras
    import tensorflow as tf

    info = {
        "kind": f"BadNet Pruning Lab embedded default ({generator.title})",
        "layout": "lab3",
        "seed": seed,
        "target_label": target,
        "trigger": config.trigger,
        "parameters": jsonable(dataclasses.asdict(config)),
        "how_made": how,
        "results": {"clean_test_accuracy": clean_acc, "attack_success_rate_test": asr},
        "training": jsonable(record),
        "build_seconds": round(seconds, 1),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__, "lab": __import__("lab").__version__},
        "note": "Rebuilding with the same seed gives byte-identical data files on the same machine; "
                "the model file may differ in its last bits across machines.",
    }
    manifest = write_manifest(out, written, info, force=force)
    return {"clean_accuracy": clean_acc, "attack_success_rate": asr, "target_label": target,
            "seconds": seconds, "manifest": str(manifest)}
