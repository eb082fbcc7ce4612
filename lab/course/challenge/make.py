"""Make a hidden-trigger challenge: plan K random attacks, train the BadNets, package student and grader folders.

``make_challenge(out, n_badnets=K, seed=S)`` trains K anonymous BadNets on
fresh SynthFaces data, each with a random attack (all-to-one, all-to-all,
multi-trigger multi-target; plain or pruning-aware), a random trigger and
random targets, and writes::

    OUT/student/README.md                          the task, the files, the submission contract, the score
    OUT/student/data/clean_validation_data.h5      clean labelled data (all the student gets)
    OUT/student/models/<name>_bd_net.h5 (+ .lab.json)   the BadNets, input x/255, nothing about the attack
    OUT/student/manifest.json
    OUT/grader/answer_key.json                     attack, triggers and targets of every BadNet
    OUT/grader/data/clean_test_data.h5
    OUT/grader/data/<name>/<trigger>_poisoned_data.h5   poisoned test data (labels = attacker's wish)
    OUT/grader/manifest.json                       SHA-256 of every grader file (checked before grading)

What a student has must not give the hidden data away. The lab's code is
public, so a challenge made from a seed anyone can guess could be rebuilt,
test set and all, by calling the lab's own generator. Without ``seed``,
:func:`make_challenge` draws one from the operating system's cryptographic
source (:func:`draw_seed`) and records it in the answer key only; every
random choice then comes from its own seed derived from it
(:func:`derive_seed`), and the test images from one that the seed behind
the student's validation file does not reveal. Poisoned test images are
triggered copies of faces that are not in the clean test set
(:func:`split_test_rows`): a face and its triggered twin side by side would
tell which one is poisoned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lab import attacks
from lab.io import data as course_data
from lab.course.challenge.key import ANSWER_KEY, CHALLENGE_KIND, GRADER, INPUT_SCALE, SCORE_RULE, STUDENT
from lab.course.challenge.readme import student_readme
from lab.errors import LabInputError, RefuseOverwrite, check_output_location
# All-to-one BadNets draw from a fixed list, not from the trigger registry: a seed draws the same challenge
# whatever triggers later versions register.
ALL_TO_ONE_TRIGGERS = ("sunglasses", "eyebrows", "lipstick", "patch", "blended", "warp")
MULTI_TRIGGERS = ("sunglasses", "eyebrows", "lipstick")  # the 2020 course's multi-trigger multi-target BadNet
# All-to-all BadNets get a face trigger: DeepID learns the n -> n+1 shift poorly from a small corner patch.
ALL_TO_ALL_TRIGGERS = ("sunglasses", "eyebrows", "lipstick")




@dataclasses.dataclass
class ChallengeConfig:
    """Size of a challenge's data and training (recorded in the answer key)."""

    n_identities: int = 30
    train_per_identity: int = 40
    valid_per_identity: int = 10
    test_per_identity: int = 10  # clean test faces, and as many other faces for each trigger's poisoned set
    epochs: int = 8  # clean epochs = poisoned epochs (plain BadNets train 2 x epochs on the mixed set)


SEED_BITS = 64  # a drawn challenge seed: far beyond any search over seeds


def draw_seed() -> int:
    """A challenge seed from the operating system's cryptographic source (``secrets``): nobody can guess it."""
    return secrets.randbits(SEED_BITS)


def derive_seed(seed: int, purpose: str, bits: int = 63) -> int:
    """A seed for one ``purpose`` of the challenge made from ``seed``: the first ``bits`` bits of SHA-256.

    Seeds of different purposes are independent: knowing one (say, by
    searching for the seed that rebuilds the student's validation file)
    tells nothing about the others. ``bits=31`` fits numpy's global seed.
    """
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)


def split_test_rows(labels: np.ndarray, n_parts: int) -> list[np.ndarray]:
    """Rows of a test file dealt into ``n_parts`` disjoint parts, class by class (file order kept in each).

    Part 0 is the clean test set; part ``1 + j`` holds the faces that get
    trigger ``j`` of a BadNet. No face is in two parts, so no poisoned test
    image is a triggered copy of a clean test image, nor of another poisoned
    one. labels: int (n,); returns ``n_parts`` int64 index arrays.
    """
    labels = np.asarray(labels)
    rank = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rank[rows] = np.arange(len(rows))
    return [np.flatnonzero(rank % n_parts == part) for part in range(n_parts)]


def badnet_names(n_badnets: int) -> list[str]:
    """``anonymous_1`` .. ``anonymous_K`` (the 2020 challenge's naming)."""
    return [f"anonymous_{i}" for i in range(1, n_badnets + 1)]


def plan_attacks(n_badnets: int, n_classes: int, seed: int) -> list[attacks.Attack]:
    """K random attacks, targets resolved. The kinds cycle through a shuffled order, so K >= 3 has each one.

    All-to-one: one of :data:`ALL_TO_ONE_TRIGGERS`; all-to-all: one of
    :data:`ALL_TO_ALL_TRIGGERS`; multi-trigger: :data:`MULTI_TRIGGERS`, each
    with its own target. Plain or pruning-aware with even odds.
    """
    rng = np.random.default_rng([seed, 2020])
    kinds = list(rng.permutation(attacks.ATTACKS))
    planned = []
    for i in range(n_badnets):
        kind = kinds[i % len(kinds)]
        pruning_aware = bool(rng.random() < 0.5)
        if kind == "all-to-all":
            attack = attacks.Attack((str(rng.choice(ALL_TO_ALL_TRIGGERS)),), all_to_all=True,
                                    pruning_aware=pruning_aware)
        elif kind == "all-to-one":
            attack = attacks.Attack((str(rng.choice(ALL_TO_ONE_TRIGGERS)),), pruning_aware=pruning_aware)
        else:
            attack = attacks.Attack(MULTI_TRIGGERS, pruning_aware=pruning_aware)
        planned.append(attack.resolve(n_classes, rng))
    return planned


WORK_MARKER = ".make-challenge-work"


def _check_replaceable(folder: Path, force: bool) -> None:
    """Raise unless ``folder`` is absent, or ``force`` is given and an earlier make-challenge wrote it."""
    if not folder.exists():
        return
    if not force:
        raise RefuseOverwrite(folder)
    if (folder / WORK_MARKER).exists():
        return
    try:
        ours = json.loads((folder / "manifest.json").read_text()).get("kind", "").startswith(CHALLENGE_KIND)
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise LabInputError(folder, "a folder written by make-challenge to replace with --force",
                            "another folder; remove it yourself or choose another --out")


def _clear(folder: Path, force: bool) -> None:
    """Remove a folder an earlier make-challenge wrote (only with ``force``, only ours)."""
    _check_replaceable(folder, force)
    if folder.exists():
        shutil.rmtree(folder)


def make_challenge(out: str | os.PathLike, n_badnets: int = 3, seed: int | None = None,
                   config: ChallengeConfig | None = None, force: bool = False, progress: bool = True,
                   keep_work: bool = False, force_weak: bool = False) -> dict:
    """Make a hidden-trigger challenge under ``out`` (see the module docstring); returns a report.

    seed: None (a real challenge) draws a secret one (:func:`draw_seed`),
    kept in the answer key only; an explicit seed makes the same challenge
    again, and lets anyone who knows it rebuild the hidden test data.
    Each BadNet is built with :func:`lab.attacks.make_badnet` in a scratch
    folder under ``out`` (removed afterwards; ``out/work``, kept, with
    ``keep_work``), then packaged with :func:`package_challenge`. A BadNet
    below make-badnet's floors (:data:`lab.attacks.MIN_CLEAN_ACCURACY`,
    :data:`lab.attacks.MIN_ATTACK_SUCCESS`) is trained again from another
    seed, and after :data:`TRAINING_ATTEMPTS` stops the challenge before
    anything is handed out, unless ``force_weak``. Report: ``answer_key``
    (the key's dict), ``student``, ``grader`` (folders), ``seed_given``,
    ``seconds``.
    """
    from lab.attacks.training import TrainingConfig

    started = time.perf_counter()
    out = Path(out)
    config = config or ChallengeConfig()
    if n_badnets < 1:
        raise LabInputError(None, "--badnets K with K >= 1", str(n_badnets))
    if config.n_identities < len(MULTI_TRIGGERS):
        raise LabInputError("--identities", f"at least {len(MULTI_TRIGGERS)} identities (a multi-trigger BadNet "
                            "needs distinct targets)", str(config.n_identities))
    training = TrainingConfig(clean_epochs=config.epochs, poisoned_epochs=config.epochs)
    attacks.check_epochs(training)
    check_output_location(out, "--out", "directory")
    for folder in (out / STUDENT, out / GRADER):
        _check_replaceable(folder, force)
    seed_given = seed is not None
    seed = int(seed) if seed_given else draw_seed()
    planned = plan_attacks(n_badnets, config.n_identities, derive_seed(seed, "attack plan"))
    n_parts = 1 + max(len(attack.triggers) for attack in planned)  # clean part + one part per trigger
    if keep_work:
        work = out / "work"
        _clear(work, force)
        work.mkdir(parents=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="make-challenge-", dir=out))
    (work / WORK_MARKER).write_text("scratch folder of make-challenge\n")
    floors = {} if force_weak else {"min_clean_accuracy": attacks.MIN_CLEAN_ACCURACY,
                                    "min_attack_success": attacks.MIN_ATTACK_SUCCESS}
    try:
        attacks.make_clean_data(work / "data", config.n_identities, config.train_per_identity,
                                config.valid_per_identity, config.test_per_identity * n_parts,
                                seed=derive_seed(seed, "student data"), test_seed=derive_seed(seed, "hidden test data"))
        dirs = {}
        for i, (name, attack) in enumerate(zip(badnet_names(n_badnets), planned)):
            if progress:
                print(f"{name}: training ({i + 1} of {n_badnets})", flush=True)
            dirs[name] = work / name
            _train_strong_enough(work / "data", attack, dirs[name], training, seed, name, floors, progress)
        report = package_challenge(dirs, out, force=force,
                                   info={"seed": seed, "seed_given": seed_given, "config": dataclasses.asdict(config)})
    finally:
        if not keep_work and work.exists():
            shutil.rmtree(work)
    report["seed_given"] = seed_given
    report["seconds"] = time.perf_counter() - started
    return report


TRAINING_ATTEMPTS = 3  # training seeds tried per BadNet before make-challenge gives up on the floors


def _train_strong_enough(data_dir: Path, attack, out: Path, training, seed: int, name: str, floors: dict,
                         progress: bool) -> None:
    """Train ``name`` with :func:`lab.attacks.make_badnet`; a BadNet below ``floors`` is trained again from
    the next training seed, up to :data:`TRAINING_ATTEMPTS` times (the same data and attack: an unlucky
    start, not a different challenge). Raises :class:`lab.attacks.WeakBadNet` naming the BadNet after the last."""
    for attempt in range(1, TRAINING_ATTEMPTS + 1):
        purpose = f"training {name}" if attempt == 1 else f"training {name}, attempt {attempt}"
        try:
            attacks.make_badnet(data_dir, attack, out, config=training, input_scale=INPUT_SCALE,
                                seed=derive_seed(seed, purpose, bits=31), progress=False, **floors)
            return
        except attacks.WeakBadNet as weak:
            if attempt == TRAINING_ATTEMPTS:  # name the BadNet, not the scratch folder that is about to go
                raise attacks.WeakBadNet(f"{name} ({attack.describe()})", "a BadNet strong enough to hand out "
                                         f"after {TRAINING_ATTEMPTS} training seeds (train longer with --epochs, or "
                                         "pass --force-weak to hand it out anyway); nothing was written",
                                         weak.found) from None
            if progress:
                print(f"{name}: too weak ({weak.found}); training again ({attempt + 1} of {TRAINING_ATTEMPTS})",
                      flush=True)


def _scrubbed_sidecar(model_path: Path, input_scale: str, n_classes: int) -> None:
    """Metadata beside a student's copy of a BadNet: its input scale and checksum, nothing about the attack."""
    from lab.io.models import META_SUFFIX, sha256_file

    record = {"input_scale": input_scale, "n_classes": n_classes,
              "description": "anonymous BadNet of a hidden-trigger challenge: trigger, target and attack are secret",
              "sha256": sha256_file(model_path)}
    Path(os.fspath(model_path) + META_SUFFIX).write_text(json.dumps(record, indent=2) + "\n")


def package_challenge(badnet_dirs: Mapping[str, str | os.PathLike], out: str | os.PathLike, force: bool = False,
                      info: dict | None = None) -> dict:
    """Hand out BadNets made by :func:`lab.attacks.make_badnet` as a challenge (student and grader folders).

    badnet_dirs: ``{name: folder written by make_badnet}``; names become the
    models' file names (``<name>_bd_net.h5``), so use anonymous ones. That
    name is the 2020 convention for models taking x/255: make them with
    ``input_scale="unit"`` (the scale is recorded beside each copy either way). All
    BadNets must share the same clean validation and test files (same
    SHA-256), as the 2020 challenge's did. The clean test file is dealt into
    disjoint parts (:func:`split_test_rows`): the grader's clean test set,
    and for each trigger the faces its poisoned test set is drawn on, so
    each part holds about ``1 / (1 + most triggers of a BadNet)`` of it.
    Returns the same report as :func:`make_challenge` (without ``seconds``).
    """
    from lab.io import manifest, models

    out = Path(out)
    if not badnet_dirs:
        raise LabInputError(None, "at least one BadNet folder", "none")
    records = {}
    for name, folder in badnet_dirs.items():
        if not name.replace("_", "").replace("-", "").isalnum():
            raise LabInputError(None, "BadNet names of letters, digits, '_' and '-'", repr(name))
        record = manifest.read_manifest(folder)
        if "attack" not in record:
            raise LabInputError(Path(folder) / manifest.MANIFEST_NAME, "a manifest written by make-badnet "
                                "(with an 'attack' entry)", "none")
        manifest.check_manifest(folder)
        records[name] = record
    first_name, first = next(iter(records.items()))
    clean_keys = ("data/" + course_data.LAB3_FILES["clean_valid"], "data/" + course_data.LAB3_FILES["clean_test"])
    for name, record in records.items():
        if any(record["files"][key] != first["files"][key] for key in clean_keys) or \
                record["n_classes"] != first["n_classes"]:
            raise LabInputError(Path(badnet_dirs[name]), f"the clean data of {first_name} (the BadNets of one "
                                "challenge share their clean validation and test files)", "different files")
    n_classes = int(first["n_classes"])
    _clear(out / STUDENT, force)
    _clear(out / GRADER, force)
    student, grader = out / STUDENT, out / GRADER
    first_dir = Path(badnet_dirs[first_name])
    (student / "data").mkdir(parents=True)
    (student / "models").mkdir()
    (grader / "data").mkdir(parents=True)
    shutil.copyfile(first_dir / clean_keys[0], student / "data" / course_data.CHALLENGE_FILES["clean_valid"])
    test = course_data.load_h5(first_dir / clean_keys[1])
    test_images = attacks.to_nchw_uint8(test.x)
    parts = split_test_rows(test.y, 1 + max(len(record["attack"]["triggers"]) for record in records.values()))
    if any(len(part) == 0 for part in parts):
        raise LabInputError(first_dir / clean_keys[1], f"a clean test file with at least {len(parts)} images of "
                            "some class (clean test images and faces to trigger must differ)", f"{len(test)} images")
    course_data.save_h5(grader / "data" / course_data.CHALLENGE_FILES["clean_test"], test_images[parts[0]],
                        test.y[parts[0]])
    student_files = ["data/" + course_data.CHALLENGE_FILES["clean_valid"]]
    grader_files = ["data/" + course_data.CHALLENGE_FILES["clean_test"]]
    key = {"kind": CHALLENGE_KIND, "n_classes": n_classes, "backdoor_class": n_classes,
           "clean_test": "data/" + course_data.CHALLENGE_FILES["clean_test"], "score": SCORE_RULE,
           **(info or {}), "badnets": {}}
    scales = set()
    for name, record in records.items():
        folder = Path(badnet_dirs[name])
        model_rel = f"models/{name}_bd_net.h5"
        shutil.copyfile(folder / attacks.MODEL_FILE, student / model_rel)
        _scrubbed_sidecar(student / model_rel, record["input_scale"], n_classes)
        student_files.append(model_rel)
        scales.add(record["input_scale"])
        entry = {**{k: v for k, v in record["attack"].items() if k != "triggers"}, "triggers": [],
                 "input_scale": record["input_scale"], "model": f"{STUDENT}/{model_rel}",
                 "model_sha256": models.sha256_file(student / model_rel),
                 "badnet_clean_accuracy": record["results"]["clean_accuracy"],
                 "badnet_attack_success_rate": record["results"]["attack_success_rate"]}
        attack = attacks.Attack.from_json(record["attack"])
        for spec, trigger, faces in zip(attack.triggers, record["attack"]["triggers"], parts[1:]):
            rel = f"data/{name}/{trigger['trigger']}_poisoned_data.h5"
            (grader / rel).parent.mkdir(parents=True, exist_ok=True)
            x, y = attacks.poison(test_images[faces], test.y[faces], spec, n_classes, attack.all_to_all)
            course_data.save_h5(grader / rel, x, y)
            grader_files.append(rel)
            entry["triggers"].append({"trigger": trigger["trigger"], "target": trigger["target"], "poisoned_test": rel})
        key["badnets"][name] = entry
    key["input_scale"] = scales.pop() if len(scales) == 1 else "per BadNet"
    (grader / ANSWER_KEY).write_text(json.dumps(key, indent=2) + "\n")
    grader_files.append(ANSWER_KEY)
    (student / "README.md").write_text(student_readme(key, len(course_data.load_h5(
        student / "data" / course_data.CHALLENGE_FILES["clean_valid"]))))
    student_files.append("README.md")
    manifest.write_manifest(student, student_files, {"kind": CHALLENGE_KIND + " (student folder)",
                                                     "n_badnets": len(records), "n_classes": n_classes})
    manifest.write_manifest(grader, grader_files, {"kind": CHALLENGE_KIND + " (grader folder)",
                                                   "n_badnets": len(records), "n_classes": n_classes})
    return {"answer_key": key, "student": str(student), "grader": str(grader)}



def reference_submission(student_dir: str | os.PathLike, out: str | os.PathLike, threshold: float = 10.0,
                         rule: str = "first-reach", force: bool = False) -> dict[str, Path]:
    """The course's defense applied to every BadNet of a student folder: ``out/<name>.keras`` GoodNets.

    Prunes ``conv_3`` by mean ``pool_3`` activation on the student's clean
    validation data (nothing else), takes the model at ``threshold``
    (percentage points of accuracy drop, :func:`lab.defenses.pruning.select_thresholds`)
    and builds G with :func:`lab.defenses.goodnet.build_goodnet`: a baseline that a
    student should beat and a check that the grader scores a real GoodNet.
    Returns ``{name: path}`` (BadNets whose sweep never reaches the threshold
    use the last step within it).
    """
    from lab.defenses import goodnet, pruning
    from lab.io import models

    student = Path(student_dir)
    clean = course_data.load_h5(student / "data" / course_data.CHALLENGE_FILES["clean_valid"])
    out = Path(out)
    written = {}
    for model_path in sorted((student / "models").glob("*_bd_net.h5")):
        name = model_path.name.removesuffix("_bd_net.h5")
        badnet = models.load_model(model_path)
        table = pruning.sweep(badnet, clean)
        selection = pruning.select_thresholds(table, [threshold], rule)
        if not bool(selection["found"].iloc[0]):
            selection = pruning.select_thresholds(table, [threshold], "last-within")
        channels = pruning.pruned_channels(table, int(selection["channels_pruned"].iloc[0]))
        repaired = goodnet.build_goodnet(badnet, pruning.prune_model(badnet, channels))
        written[name] = goodnet.save_goodnet(repaired, out / f"{name}.keras", force=force)
    return written
