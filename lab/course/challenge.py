"""The hidden-trigger challenge (the CSAW-HackML 2020 format): make it, hand it out, grade submissions.

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
    OUT/grader/manifest.json

``grade(grader_dir, {name: submission})`` scores one submission per BadNet:
a GoodNet model file (``.keras`` / ``.h5``, loaded in safe mode) or an
``eval.py``-style script. Scripts run as separate processes with a time
limit per call, given image paths (``python SCRIPT IMG [IMG ...]``, 47x55 RGB
PNGs) and read back from the last lines of their standard output, one class
in [0, N] per image. A submission that is missing, crashes, hangs, prints
nonsense or does not load scores zero with the reason; it never stops the
grader. Score per BadNet: clean accuracy x (100 - attack success rate) / 100,
so a net must both keep the clean task and stop the attack (answering the
true class or N both count as stopping it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lab import attacks
from lab.io import data as course_data
from lab.errors import LabError, LabInputError, RefuseOverwrite
from lab.seed import DEFAULT_SEED
from lab.attacks.triggers import TRIGGERS

STUDENT = "student"
GRADER = "grader"
ANSWER_KEY = "answer_key.json"
CHALLENGE_KIND = "BadNet Pruning Lab hidden-trigger challenge"
MULTI_TRIGGERS = ("sunglasses", "eyebrows", "lipstick")  # the 2020 course's multi-trigger multi-target BadNet
# All-to-all BadNets get a face trigger: with the corner patch, DeepID learnt the n -> n+1 shift poorly
# (30 identities, 8 + 8 epochs: 48-60 % clean accuracy, 52-70 % ASR; sunglasses: 89 % and 83 %).
ALL_TO_ALL_TRIGGERS = ("sunglasses", "eyebrows", "lipstick")
INPUT_SCALE = "unit"  # the 2020 models take x/255
SCORE_RULE = "clean accuracy x (100 - attack success rate) / 100"
MODEL_SUFFIXES = (".keras", ".h5")
SCRIPT_SUFFIXES = (".py",)
OUTPUT_LIMIT = 1 << 20  # bytes of a script's output the grader reads (the end of it)


@dataclasses.dataclass
class ChallengeConfig:
    """Size of a challenge's data and training (recorded in the answer key)."""

    n_identities: int = 30
    train_per_identity: int = 40
    valid_per_identity: int = 10
    test_per_identity: int = 10
    epochs: int = 8  # clean epochs = poisoned epochs (plain BadNets train 2 x epochs on the mixed set)


def badnet_names(n_badnets: int) -> list[str]:
    """``anonymous_1`` .. ``anonymous_K`` (the 2020 challenge's naming)."""
    return [f"anonymous_{i}" for i in range(1, n_badnets + 1)]


def plan_attacks(n_badnets: int, n_classes: int, seed: int) -> list[attacks.Attack]:
    """K random attacks, targets resolved. The kinds cycle through a shuffled order, so K >= 3 has each one.

    All-to-one: any trigger of :data:`lab.triggers.TRIGGERS`; all-to-all: one of
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
            attack = attacks.Attack((str(rng.choice(TRIGGERS)),), pruning_aware=pruning_aware)
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


def make_challenge(out: str | os.PathLike, n_badnets: int = 3, seed: int = DEFAULT_SEED,
                   config: ChallengeConfig | None = None, force: bool = False, progress: bool = True,
                   keep_work: bool = False) -> dict:
    """Make a hidden-trigger challenge under ``out`` (see the module docstring); returns a report.

    Each BadNet is built with :func:`lab.attacks.make_badnet` in a scratch
    folder under ``out`` (removed afterwards; ``out/work``, kept, with
    ``keep_work``), then packaged with
    :func:`package_challenge`. Report: ``answer_key`` (the key's dict),
    ``student``, ``grader`` (folders), ``seconds``.
    """
    from lab.attacks.training import TrainingConfig

    started = time.perf_counter()
    out = Path(out)
    config = config or ChallengeConfig()
    if n_badnets < 1:
        raise LabInputError(None, "--badnets K with K >= 1", str(n_badnets))
    for folder in (out / STUDENT, out / GRADER):
        _check_replaceable(folder, force)
    if keep_work:
        work = out / "work"
        _clear(work, force)
        work.mkdir(parents=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="make-challenge-", dir=out))
    (work / WORK_MARKER).write_text("scratch folder of make-challenge\n")
    try:
        attacks.make_clean_data(work / "data", config.n_identities, config.train_per_identity,
                                config.valid_per_identity, config.test_per_identity, seed=seed)
        training = TrainingConfig(clean_epochs=config.epochs, poisoned_epochs=config.epochs)
        dirs = {}
        for i, (name, attack) in enumerate(zip(badnet_names(n_badnets),
                                               plan_attacks(n_badnets, config.n_identities, seed))):
            if progress:
                print(f"{name}: training ({i + 1} of {n_badnets})", flush=True)
            dirs[name] = work / name
            attacks.make_badnet(work / "data", attack, dirs[name], config=training, input_scale=INPUT_SCALE,
                                seed=seed + 101 * (i + 1), progress=False)
        report = package_challenge(dirs, out, force=force,
                                   info={"seed": seed, "config": dataclasses.asdict(config)})
    finally:
        if not keep_work and work.exists():
            shutil.rmtree(work)
    report["seconds"] = time.perf_counter() - started
    return report


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
    SHA-256), as the 2020 challenge's did. Returns the same report as
    :func:`make_challenge` (without ``seconds``).
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
    shutil.copyfile(first_dir / clean_keys[1], grader / "data" / course_data.CHALLENGE_FILES["clean_test"])
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
        for trigger in record["attack"]["triggers"]:
            rel = f"data/{name}/{trigger['trigger']}_poisoned_data.h5"
            (grader / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / trigger["files"]["test"], grader / rel)
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


def student_readme(key: Mapping, n_valid: int) -> str:
    """The instructions students get: what they have, what to build, how to hand it in, how it is scored."""
    n = key["n_classes"]
    names = list(key["badnets"])
    models_list = "\n".join(f"- `models/{name}_bd_net.h5`" for name in names)
    scale = key.get("input_scale", INPUT_SCALE)
    scale_text = "pixels divided by 255 (values 0..1)" if scale == "unit" else \
        "raw pixels (0..255)" if scale == "raw" else "as recorded in each model's `.lab.json`"
    count = "one backdoored face classifier (BadNet). It recognises" if len(names) == 1 else \
        f"{len(names)} backdoored face classifiers (BadNets). Each recognises"
    return f"""# Hidden-trigger challenge

You get {count} {n} people
(classes 0..{n - 1}) and behaves well on ordinary faces, but it also obeys a hidden
trigger: something drawn on a face, or a faint change over the whole image, makes it
answer what the attacker chose. You do
not know the trigger, the target, or even the kind of attack (one target for every
face, a different target per face, several triggers...), and you get no poisoned data.

## What you have

- `data/clean_validation_data.h5`: {n_valid} clean, labelled faces in the course format
  (HDF5: `data` uint8 of shape (n, 3, 55, 47), channels first, pixels 0..255;
  `label` of shape (n,)).
{models_list}
  Keras models (DeepID, layers `conv_1`..`conv_4`, `pool_1`..`pool_3`, `fc_1`,
  `fc_2`, `output`). They take images of shape (55, 47, 3), channels last,
  {scale_text}. Load them with `keras.models.load_model(path, compile=False)`
  or `lab.models.load_model(path)`; `manifest.json` holds every file's SHA-256.

## What to build

For each BadNet, a repaired network G ("GoodNet") with {n + 1} classes: classes
0..{n - 1} as the BadNet, and class {n} meaning "this input is backdoored". A good G
keeps the BadNet's clean accuracy and answers {n} (or the true class) on triggered
faces. Pruning and fine-pruning (notebooks 03-05) are one way; anything that uses
only the files above is allowed.

## What to hand in

One folder with one file per BadNet, named after it:

- `<name>.keras` or `<name>.h5`: a Keras model with {n + 1} outputs whose argmax is
  your answer, loadable with `keras.models.load_model(path, safe_mode=True)` (no
  `Lambda` layers; `lab.goodnet.save_goodnet` writes such files). It gets the same
  input as the BadNet unless a `<file>.lab.json` beside it (written by the lab)
  records another input scale; or
- `<name>.py`: a script in the course's `eval.py` style. It is run as
  `python <name>.py IMAGE [IMAGE ...]` from its own folder, with one or more
  paths of 47x55 (width x height) RGB PNG faces, and must print one class in
  [0, {n}] per image, one per line, in order, as the last lines of its output
  (earlier lines are ignored). A script that only reads `sys.argv[1]` still works,
  one image per call, just slowly. Each call has a time limit; a script that
  crashes or runs out of time scores zero for that BadNet.

Names: {", ".join(f"`{name}`" for name in names)}.

## How it is scored

On hidden test data (clean faces and faces with each BadNet's trigger), per BadNet:
clean accuracy, clean false-positive rate (clean faces answered {n}), attack success
rate (triggered faces answered the attacker's class), detection rate (triggered faces
answered {n}). Score = {SCORE_RULE}, from 0 to 100.
"""


# ----------------------------------------------------------------------------
# Grading
# ----------------------------------------------------------------------------

class SubmissionFailed(Exception):
    """A submission could not be scored; the message is the reason shown in the score table."""


def read_answer_key(grader_dir: str | os.PathLike) -> dict:
    """The grader folder's answer key (one-line error when missing or not one)."""
    path = Path(grader_dir) / ANSWER_KEY
    if not path.exists():
        raise LabInputError(path, "the answer key of a grader folder written by make-challenge", "no such file")
    try:
        key = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LabInputError(path, "a JSON answer key", f"invalid JSON ({error.msg})") from None
    if key.get("kind") != CHALLENGE_KIND or "badnets" not in key:
        raise LabInputError(path, "an answer key written by make-challenge", f"kind {key.get('kind')!r}")
    return key


def resolve_submissions(specs: Sequence[str], names: Sequence[str]) -> dict[str, Path | None]:
    """Map ``--submission`` arguments to one path (or None: nothing handed in) per BadNet name.

    Each spec is ``NAME=PATH`` (a model file or a script for BadNet NAME), a
    directory (searched for ``NAME.keras``, ``NAME.h5``, ``NAME.py`` for every
    name), or, when the challenge has one BadNet, a bare PATH.
    """
    found: dict[str, Path | None] = {name: None for name in names}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if sep:
            if name not in found:
                raise LabInputError(None, f"--submission NAME=PATH with NAME one of {', '.join(names)}", repr(spec))
            found[name] = Path(path)
            continue
        path = Path(spec)
        if path.is_dir():
            for candidate in names:
                for suffix in MODEL_SUFFIXES + SCRIPT_SUFFIXES:
                    if found[candidate] is None and (path / f"{candidate}{suffix}").is_file():
                        found[candidate] = path / f"{candidate}{suffix}"
        elif len(names) == 1:
            found[names[0]] = path
        else:
            raise LabInputError(None, "--submission NAME=PATH or a directory with one file per BadNet "
                                f"({', '.join(names)})", repr(spec))
    return found


def _test_sets(grader: Path, key: Mapping, name: str, n: int | None):
    clean = course_data.load_h5(grader / key["clean_test"], n=n)
    poisoned = {t["trigger"]: course_data.load_h5(grader / t["poisoned_test"], n=n)
                for t in key["badnets"][name]["triggers"]}
    return clean, poisoned


def _one_line(text: str, limit: int = 200) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _model_answers(path: Path, entry: Mapping, n_classes: int, images: np.ndarray) -> tuple[np.ndarray, str]:
    """Answers of a model submission (loaded in safe mode, in this process); note on the input scale."""
    from lab.io import models

    if not path.is_file():
        raise SubmissionFailed(f"no such file {path}")
    recorded = models.read_metadata(path).get("input_scale")
    scale = None if recorded else entry["input_scale"]
    note = "" if recorded else f"input scale not recorded: the BadNet's ({entry['input_scale']})"
    try:
        loaded = models.load_model(path, scale=scale)
    except LabError as error:
        raise SubmissionFailed(f"does not load: {error}") from None
    except Exception as error:  # a foreign file must not take the grader down
        raise SubmissionFailed(f"does not load: {error.__class__.__name__}: {_one_line(error)}") from None
    if loaded.n_classes not in (n_classes, n_classes + 1):
        raise SubmissionFailed(f"has {loaded.n_classes} outputs; expected {n_classes + 1} (classes 0..{n_classes})")
    if tuple(loaded.model.input_shape[1:]) != course_data.IMAGE_SHAPE:
        raise SubmissionFailed(f"takes input {tuple(loaded.model.input_shape[1:])}; expected {course_data.IMAGE_SHAPE}")
    try:
        return loaded.predict_labels(images), note
    except Exception as error:
        raise SubmissionFailed(f"failed to predict: {error.__class__.__name__}: {_one_line(error)}") from None


def _tail(handle, limit: int = OUTPUT_LIMIT) -> str:
    handle.flush()
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit))
    return handle.read().decode("utf-8", errors="replace")


def run_script(script: str | os.PathLike, image_paths: Sequence[str | os.PathLike], timeout: float,
               python: str | None = None) -> list[str]:
    """Run ``python SCRIPT IMG ...`` once, in the script's folder; the non-empty lines of its output.

    A separate process group with no input, output to temporary files (a
    chatty script cannot fill a pipe or the grader's memory: only the last
    :data:`OUTPUT_LIMIT` bytes are read). Raises :class:`SubmissionFailed`
    when it runs past ``timeout`` seconds (the whole group is killed) or
    exits with a non-zero status.
    """
    script = Path(script).resolve()
    command = [python or sys.executable, str(script), *[os.fspath(p) for p in image_paths]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(command, cwd=script.parent, stdin=subprocess.DEVNULL, stdout=stdout,
                                       stderr=stderr, env=env, start_new_session=True)
        except OSError as error:
            raise SubmissionFailed(f"could not start: {error}") from None
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise SubmissionFailed(f"timed out: no answer within {timeout:g} s "
                                   f"for {len(image_paths)} image(s)") from None
        finally:
            _kill_group(process)  # children left behind by a script that exited
        if status != 0:
            reason = _one_line(_tail(stderr)) or _one_line(_tail(stdout)) or "no output"
            raise SubmissionFailed(f"crashed (exit status {status}): {reason}")
        return [line.strip() for line in _tail(stdout).splitlines() if line.strip()]


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _parse_answers(lines: list[str], count: int) -> list[int]:
    """The last ``count`` output lines as classes; SubmissionFailed naming the first that is not a number."""
    if len(lines) < count:
        raise SubmissionFailed(f"printed {len(lines)} line(s) for {count} image(s)")
    answers = []
    for line in lines[-count:]:
        try:
            answers.append(int(line))
        except ValueError:
            raise SubmissionFailed(f"printed {line[:60]!r} where a class number was expected") from None
    return answers


def _script_answers(script: Path, images: np.ndarray, timeout: float, batch: int, time_limit: float,
                    python: str | None) -> tuple[np.ndarray, str]:
    """Answers of a script submission for float32 (n, 55, 47, 3) images, written as shuffled PNGs."""
    from lab.io.images import save_image

    if not script.is_file():
        raise SubmissionFailed(f"no such file {script}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="grade-") as folder:
        # Names say nothing about the image: clean and poisoned are mixed in a random order.
        order = np.random.default_rng(len(images)).permutation(len(images))
        paths = [Path(folder) / f"face_{i:05d}.png" for i in range(len(images))]
        for position, index in enumerate(order):
            save_image(paths[position], images[index])
        answers = np.full(len(images), -1, dtype=np.int64)
        note, start, size = "", 0, max(1, batch)
        while start < len(paths):
            left = time_limit - (time.perf_counter() - started)
            if left <= 0:
                raise SubmissionFailed(f"ran past the time limit of {time_limit:g} s "
                                       f"after {start} of {len(paths)} images")
            chunk = paths[start:start + size]
            lines = run_script(script, chunk, min(timeout, left), python)
            if len(chunk) > 1 and len(lines) < len(chunk):
                # Likely an eval.py that reads only sys.argv[1]: go on one image per call
                # (bounded by time_limit if it is something else).
                size, note = 1, "script answers one image per call"
                continue
            answers[order[start:start + len(chunk)]] = _parse_answers(lines, len(chunk))
            start += len(chunk)
    return answers, note


def grade_one(grader_dir: str | os.PathLike, name: str, submission: str | os.PathLike | None, n: int | None = None,
              timeout: float = 60.0, batch: int = 500, time_limit: float = 300.0, python: str | None = None,
              key: Mapping | None = None) -> dict:
    """Score one submission for BadNet ``name``; never raises for a bad submission (score 0 and ``reason``).

    Returns ``badnet``, ``submission``, ``kind`` (model | script | none),
    ``status`` (scored | zero), ``reason``, ``note``, the rates (percent;
    None when not scored) ``clean_accuracy``, ``clean_false_positive_rate``,
    ``attack_success_rate``, ``detection_rate`` (all poisoned inputs pooled),
    ``per_trigger`` ({trigger: {attack_success_rate, detection_rate}}),
    ``score``, ``n_clean``, ``n_poisoned``, ``seconds``.
    """
    from lab.evaluation import metrics

    grader = Path(grader_dir)
    key = key or read_answer_key(grader)
    entry = key["badnets"][name]
    n_classes = int(key["n_classes"])
    clean, poisoned = _test_sets(grader, key, name, n)
    images = np.concatenate([clean.x, *(d.x for d in poisoned.values())])
    result = {"badnet": name, "submission": None if submission is None else os.fspath(submission), "kind": "none",
              "status": "zero", "reason": "", "note": "", "clean_accuracy": None, "clean_false_positive_rate": None,
              "attack_success_rate": None, "detection_rate": None, "per_trigger": {}, "score": 0.0,
              "n_clean": len(clean), "n_poisoned": int(sum(len(d) for d in poisoned.values())), "seconds": 0.0}
    started = time.perf_counter()
    try:
        if submission is None:
            raise SubmissionFailed("nothing handed in")
        path = Path(submission)
        if path.suffix in MODEL_SUFFIXES:
            result["kind"] = "model"
            answers, note = _model_answers(path, entry, n_classes, images)
        elif path.suffix in SCRIPT_SUFFIXES:
            result["kind"] = "script"
            answers, note = _script_answers(path, images, timeout, batch, time_limit, python)
        else:
            raise SubmissionFailed(f"{path.name}: expected a model ({', '.join(MODEL_SUFFIXES)}) or a script (.py)")
    except SubmissionFailed as failure:
        result.update(reason=str(failure), seconds=time.perf_counter() - started)
        return result
    invalid = int(np.sum((answers < 0) | (answers > n_classes)))
    notes = [note] if note else []
    if invalid:
        notes.append(f"{invalid} answer(s) outside [0, {n_classes}] counted wrong")
    clean_answers, rest = answers[:len(clean)], answers[len(clean):]
    per_trigger, pooled_targets = {}, []
    for trigger, dataset in poisoned.items():
        part, rest = rest[:len(dataset)], rest[len(dataset):]
        per_trigger[trigger] = {"attack_success_rate": metrics.attack_success_rate(part, dataset.y),
                                "detection_rate": metrics.detection_rate(part, n_classes)}
        pooled_targets.append(dataset.y)
    parts = metrics.breakdown(clean_answers, clean.y, answers[len(clean):], np.concatenate(pooled_targets), n_classes)
    result.update(status="scored", note="; ".join(notes), per_trigger=per_trigger,
                  clean_accuracy=parts["clean_accuracy"], clean_false_positive_rate=parts["clean_false_positive_rate"],
                  attack_success_rate=parts["attack_success_rate"], detection_rate=parts["detection_rate"],
                  score=score(parts["clean_accuracy"], parts["attack_success_rate"]),
                  seconds=time.perf_counter() - started)
    return result


def score(clean_accuracy: float, attack_success_rate: float) -> float:
    """The challenge's score (0..100): clean accuracy x (100 - attack success rate) / 100."""
    return float(clean_accuracy) * (100.0 - float(attack_success_rate)) / 100.0


def grade(grader_dir: str | os.PathLike, submissions: Mapping[str, str | os.PathLike | None], n: int | None = None,
          timeout: float = 60.0, batch: int = 500, time_limit: float = 300.0, python: str | None = None,
          progress: bool = False) -> list[dict]:
    """Score a submission for every BadNet of the challenge (see :func:`grade_one`); BadNets missing from
    ``submissions`` score zero ("nothing handed in"). Returns one result per BadNet, in the key's order."""
    grader = Path(grader_dir)
    key = read_answer_key(grader)
    unknown = sorted(set(submissions) - set(key["badnets"]))
    if unknown:
        raise LabInputError(grader / ANSWER_KEY, f"submissions for {', '.join(key['badnets'])}",
                            f"unknown name(s) {', '.join(unknown)}")
    if n is not None and n < 1:
        raise LabInputError(None, "--n N with N >= 1", str(n))
    results = []
    for name in key["badnets"]:
        if progress:
            print(f"grading {name} ...", file=sys.stderr, flush=True)
        results.append(grade_one(grader, name, submissions.get(name), n, timeout, batch, time_limit, python, key))
    return results


def _percent(value) -> str:
    return "     -" if value is None or value != value else f"{value:6.1f}"


def format_table(results: Sequence[Mapping]) -> str:
    """The score table as text: one row per BadNet (all poisoned inputs pooled), one indented row per
    trigger of a multi-trigger BadNet, the reason for every zero, and the total."""
    header = f"{'BadNet':<22} {'kind':<6} {'clean %':>7} {'FPR %':>6} {'ASR %':>6} {'detect %':>8} {'score':>6}  note"
    lines = [header, "-" * len(header)]
    for row in results:
        note = row["reason"] if row["status"] == "zero" else row["note"]
        lines.append(f"{row['badnet']:<22} {row['kind']:<6} {_percent(row['clean_accuracy']):>7} "
                     f"{_percent(row['clean_false_positive_rate'])} {_percent(row['attack_success_rate'])} "
                     f"{_percent(row['detection_rate']):>8} {row['score']:6.1f}  {note}".rstrip())
        if len(row["per_trigger"]) > 1:
            for trigger, rates in row["per_trigger"].items():
                lines.append(f"  {trigger:<20} {'':<6} {'':>7} {'':>6} {_percent(rates['attack_success_rate'])} "
                             f"{_percent(rates['detection_rate']):>8}")
    total = sum(row["score"] for row in results) / max(1, len(results))
    lines.append("-" * len(header))
    lines.append(f"{'mean score':<22} {'':<6} {'':>7} {'':>6} {'':>6} {'':>8} {total:6.1f}  ({SCORE_RULE})")
    return "\n".join(lines)


def reference_submission(student_dir: str | os.PathLike, out: str | os.PathLike, threshold: float = 10.0,
                         rule: str = "first-reach", force: bool = False) -> dict[str, Path]:
    """The course's defense applied to every BadNet of a student folder: ``out/<name>.keras`` GoodNets.

    Prunes ``conv_3`` by mean ``pool_3`` activation on the student's clean
    validation data (nothing else), takes the model at ``threshold``
    (percentage points of accuracy drop, :func:`lab.pruning.select_thresholds`)
    and builds G with :func:`lab.goodnet.build_goodnet`: a baseline that a
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
