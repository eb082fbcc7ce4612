"""Build any BadNet on any course-format data set and write it in the Lab 3 layout.

Training data: the course layout has no training file, so :func:`make_badnet`
needs one, course format, as ``DIR/cl/train.h5`` (what
``make_default(write_train=True)`` and :func:`make_clean_data` write),
``DIR/train.h5`` or ``DIR/clean_training_data.h5``, or passed explicitly. It
does not fall back to training on the validation file: a BadNet trained on
the images it is then pruned and evaluated with would report numbers that
look better than they are.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from lab.attacks.poisoning import check_noise_fraction, default_poison_fraction, poisoned_sets, to_nchw_uint8
from lab.attacks.spec import Attack
from lab.attacks.training import TrainingConfig, check_epochs, train_badnet
from lab.constants import DEFAULT_SEED, MODEL_FILE
from lab.errors import LabInputError, check_output_location, check_writable
from lab.io import data as course_data

TRAIN_FILES = ("cl/train.h5", "train.h5", "clean_training_data.h5")  # searched in this order under --data


def make_clean_data(out: str | os.PathLike, n_identities: int = 20, train_per_identity: int = 40,
                    valid_per_identity: int = 8, test_per_identity: int = 8, seed: int = DEFAULT_SEED,
                    force: bool = False, progress: bool = False, test_seed: int | None = None) -> dict[str, Path]:
    """Fresh SynthFaces clean data in the course format: ``out/cl/{train,valid,test}.h5``.

    The raw material for :func:`make_badnet` when there is no training file.
    Every identity gets ``*_per_identity`` images per split, shuffled.
    ``seed`` draws the identities and every split; ``test_seed``, when given,
    draws the test split's order and images instead, so that whoever learns
    the seed behind the training and validation files still cannot rebuild
    the test file (a hidden-trigger challenge's hidden data).
    Returns ``{"train"|"valid"|"test": path}``.
    """
    from lab.synthetic import synthfaces

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
        render_seed = seed * 10 + offset + 1
        if name == "test" and test_seed is not None:
            index = np.random.default_rng(test_seed).permutation(index)
            render_seed = test_seed
        faces = synthfaces.render(identities, index, seed=render_seed, progress=progress)
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
    (what :func:`lab.io.data.find_layout` reads as one poisoned file per trigger).
    """
    if len(attack.triggers) == 1:
        return {attack.names[0]: {split: f"data/{course_data.LAB3_FILES[f'poisoned_{split}']}"
                                  for split in ("valid", "test")}}
    return {name: {split: f"data/bd/bd_{split}_{name}.h5" for split in ("valid", "test")} for name in attack.names}


MIN_CLEAN_ACCURACY = 80.0   # floors of make-badnet and A1 (percent, test files); --force-weak packages anyway
MIN_ATTACK_SUCCESS = 80.0


class WeakBadNet(LabInputError):
    """A trained BadNet below the stated clean-accuracy or attack-success floor."""


def check_strength(results: dict, min_clean_accuracy: float | None, min_attack_success: float | None,
                   where=None) -> None:
    """Raise :class:`WeakBadNet` when ``results`` (clean_accuracy, {trigger: attack_success_rate}) miss a floor."""
    weak = []
    if min_clean_accuracy is not None and results["clean_accuracy"] < min_clean_accuracy:
        weak.append(f"clean accuracy {results['clean_accuracy']:.1f} % < {min_clean_accuracy:g} %")
    for trigger, rate in results["attack_success_rate"].items():
        if min_attack_success is not None and rate < min_attack_success:
            weak.append(f"attack success rate ({trigger}) {rate:.1f} % < {min_attack_success:g} %")
    if weak:
        raise WeakBadNet(where, "a BadNet strong enough to teach with (train longer or on more data, or pass "
                                "--force-weak / force_weak=True to package it anyway); nothing was written",
                         "; ".join(weak))


def make_badnet(data_dir: str | os.PathLike, attack: Attack, out: str | os.PathLike,
                train: str | os.PathLike | None = None, config=None, poison_fraction: float | None = None, input_scale: str = "raw",
                seed: int = DEFAULT_SEED, force: bool = False, progress: bool = True,
                min_clean_accuracy: float | None = None, min_attack_success: float | None = None,
                noise_fraction: float = 0.0) -> dict:
    """Train a BadNet for ``attack`` on course-format data and write the course's Lab 3 layout under ``out``.

    data_dir: a data folder (Lab 3 or 2020 layout) holding a training file
    (:data:`TRAIN_FILES`) unless ``train`` names one. Writes::

        OUT/data/cl/valid.h5, OUT/data/cl/test.h5     copies of the clean files
        OUT/data/bd/...                               one poisoned file per trigger and split (see output_files)
        OUT/models/bd_net.h5 (+ .lab.json)            the BadNet (input scale ``input_scale``)
        OUT/manifest.json                             the attack, parameters, results, SHA-256 of every file

    noise_fraction: WaNet's noise mode for warp triggers (see
    :func:`lab.attacks.poisoning.training_poison`).
    Refuses to overwrite without ``force`` before any work. With
    ``min_clean_accuracy`` / ``min_attack_success`` (percent, on the test
    files) a BadNet below either floor is refused (:class:`WeakBadNet`) after
    training and before anything is written: a weak BadNet makes a
    meaningless exercise or challenge. Returns a report:
    ``attack`` (targets resolved), ``clean_accuracy``, ``attack_success_rate``
    ({trigger: percent} on the poisoned test files), ``seconds``, ``manifest``.
    """
    from lab.evaluation import metrics
    from lab.io import models
    from lab.io.manifest import jsonable, write_manifest

    started = time.perf_counter()
    out = Path(out)
    config = dataclasses.replace(config or TrainingConfig(), pruning_aware=attack.pruning_aware)
    poison_fraction = default_poison_fraction(attack) if poison_fraction is None else poison_fraction
    if input_scale not in models.SCALES:
        raise LabInputError(None, f"an input scale in {sorted(models.SCALES)}", repr(input_scale))
    check_epochs(config)
    check_output_location(out, "--out", "directory")
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

    results = {"clean_accuracy": metrics.clean_accuracy(badnet.predict_labels(sets["test"].x), sets["test"].y),
               "attack_success_rate": {}}
    poisoned = {split: poisoned_sets(images[split], sets[split].y, attack, n_classes) for split in ("valid", "test")}
    for name, (x, y) in poisoned["test"].items():
        predicted = badnet.predict_labels(x.transpose(0, 2, 3, 1).astype(np.float32))
        results["attack_success_rate"][name] = metrics.attack_success_rate(predicted, y)
    check_strength(results, min_clean_accuracy, min_attack_success, out)

    for key in ("clean_valid", "clean_test"):
        (out / planned[key]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(getattr(layout, key), out / planned[key])
    written = [planned["clean_valid"], planned["clean_test"]]
    for split in ("valid", "test"):
        for name, (x, y) in poisoned[split].items():
            course_data.save_h5(out / poisoned_rel[name][split], x, y, force=force)
            written.append(poisoned_rel[name][split])

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


def load_poisoned(root: str | os.PathLike, split: str = "test", n: int | None = None) -> dict:
    """{trigger: Dataset} of the poisoned ``split`` files under ``root`` (a folder holding ``data/``).

    Trigger names (and their order) come from the manifest :func:`make_badnet` wrote; for other
    folders (the default, real course files) from the file names, with the
    Lab 3 ``bd/bd_<split>.h5`` called ``"default"`` (or the manifest's trigger).
    """
    from lab.io import manifest

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
