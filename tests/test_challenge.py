"""The hidden-trigger challenge: make it (CLI), what students and graders get, grading models and scripts.

Real tiny BadNets and real h5 files; student scripts are real processes: one
that works, one that crashes, one that hangs (and leaves a child behind),
one that answers one image per call, one that prints nonsense.
"""

from __future__ import annotations

import json
import secrets
import shutil
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lab import attacks
from lab.course import challenge
from lab.io import data, manifest, models
from lab.errors import LabInputError
from conftest import CHALLENGE_IDENTITIES as N_IDENTITIES
from conftest import processes_with
from test_attacks import run_instructor

pytestmark = pytest.mark.slow  # trains a challenge of BadNets and grades scripts in subprocesses

N_GRADE = 12  # test images per set when grading: keeps every script run short


def write_script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


# ---------------------------------------------------------------- what is handed out


def test_student_folder_holds_models_clean_validation_and_readme_only(made, key):
    student = made / "student"
    files = sorted(str(p.relative_to(student)) for p in student.rglob("*") if p.is_file())
    assert files == ["README.md", "data/clean_validation_data.h5", "manifest.json",
                     *[f"models/anonymous_{i}_bd_net.h5{suffix}" for i in (1, 2, 3) for suffix in ("", ".lab.json")]]
    assert set(manifest.verify_manifest(student).values()) == {"ok"}
    readme = (student / "README.md").read_text()
    assert "anonymous_3" in readme and f"[0, {N_IDENTITIES}]" in readme and "x (100 - attack success rate)" in readme
    secrets = {t["trigger"] for entry in key["badnets"].values() for t in entry["triggers"]}
    for path in [student / "README.md", student / "manifest.json", *(student / "models").glob("*.json")]:
        text = path.read_text()
        assert not any(secret in text for secret in secrets), f"{path.name} gives the trigger away"
        assert "all-to" not in text and "pruning-aware" not in text
    for i in (1, 2, 3):
        sidecar = json.loads((student / f"models/anonymous_{i}_bd_net.h5.lab.json").read_text())
        assert set(sidecar) == {"input_scale", "n_classes", "description", "sha256"}
        badnet = models.load_model(student / f"models/anonymous_{i}_bd_net.h5")
        assert badnet.input_scale == "unit" and badnet.n_classes == N_IDENTITIES
    assert not (made / "student").joinpath("data/clean_test_data.h5").exists()


def test_answer_key_and_grader_data(made, key):
    grader = made / "grader"
    assert key["n_classes"] == key["backdoor_class"] == N_IDENTITIES
    kinds = sorted(entry["attack"] for entry in key["badnets"].values())
    assert kinds == sorted(attacks.ATTACKS)  # three BadNets: one of each kind
    clean_test = data.load_h5(grader / key["clean_test"])
    for name, entry in key["badnets"].items():
        for trigger in entry["triggers"]:
            poisoned = data.load_h5(grader / trigger["poisoned_test"])
            if entry["attack"] == "all-to-all":  # other faces than the clean ones, as many of each class
                assert trigger["target"] is None and np.array_equal(np.sort(poisoned.y),
                                                                    np.sort((clean_test.y + 1) % N_IDENTITIES))
            else:
                assert set(poisoned.y) == {trigger["target"]}
        assert entry["model_sha256"] == models.sha256_file(made / entry["model"])
    multi = next(e for e in key["badnets"].values() if e["attack"] == "multi-trigger multi-target")
    assert [t["trigger"] for t in multi["triggers"]] == list(challenge.MULTI_TRIGGERS)
    assert set(manifest.verify_manifest(grader).values()) == {"ok"}


def test_plan_is_seeded_and_refuses_to_overwrite(made):
    first = challenge.plan_attacks(4, 10, seed=9)
    assert first == challenge.plan_attacks(4, 10, seed=9) and first != challenge.plan_attacks(4, 10, seed=10)
    assert len({a.kind for a in first[:3]}) == 3
    again = run_instructor("make-challenge", "--out", made, "--badnets", "1")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr


def test_hidden_test_data_cannot_be_rebuilt_and_weak_challenges_are_refused(tmp_path):
    """Without --seed the challenge's seed is secret, and the seed behind the student's validation file, which
    a student could search for, rebuilds that file but none of the hidden test images. A BadNet below the
    floors stops make-challenge in one line, with nothing handed out, unless --force-weak."""
    import hashlib

    from lab.constants import DEFAULT_SEED

    small = ["--badnets", "1", "--identities", str(N_IDENTITIES), "--epochs", "1", "--quiet"]
    weak = run_instructor("make-challenge", "--out", tmp_path / "weak", *small)
    assert weak.returncode == 2 and weak.stderr.count("\n") == 1 and "--force-weak" in weak.stderr, weak.stderr
    assert not (tmp_path / "weak" / "student").exists() and not (tmp_path / "weak" / "grader").exists()

    out = tmp_path / "secret"
    made = run_instructor("make-challenge", "--out", out, *small, "--force-weak")
    assert made.returncode == 0, made.stderr[-2000:]
    assert "warning" not in made.stdout
    key = challenge.read_answer_key(out / "grader")
    assert key["seed_given"] is False and key["seed"] != DEFAULT_SEED
    assert str(key["seed"]) not in "".join(p.read_text(errors="replace") for p in (out / "student").rglob("*")
                                            if p.suffix in (".json", ".md"))
    config = key["config"]
    n_parts = 1 + max(len(entry["triggers"]) for entry in key["badnets"].values())
    hidden = {x.tobytes() for x in data.load_h5(out / "grader" / key["clean_test"]).x}

    def rebuilt(seed: int, folder: str) -> dict:
        return attacks.make_clean_data(tmp_path / folder, config["n_identities"], config["train_per_identity"],
                                       config["valid_per_identity"], config["test_per_identity"] * n_parts, seed=seed)

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    behind_valid = rebuilt(challenge.derive_seed(key["seed"], "student data"), "valid-seed")
    assert sha(behind_valid["valid"]) == sha(out / "student/data/clean_validation_data.h5")
    public = rebuilt(DEFAULT_SEED, "public-seed")
    for guess in (behind_valid, public):
        assert not hidden & {x.tobytes() for x in data.load_h5(guess["test"]).x}


def test_package_refuses_badnets_with_different_clean_data(made, tmp_path):
    source = made / "work" / "anonymous_1"
    other = tmp_path / "other"
    shutil.copytree(source, other)
    valid = data.load_h5(other / "data/cl/valid.h5")
    data.save_h5(other / "data/cl/valid.h5", attacks.to_nchw_uint8(valid.x[:5]), valid.y[:5], force=True)
    record = manifest.read_manifest(other)
    manifest.write_manifest(other, list(record.pop("files")), record, force=True)
    with pytest.raises(LabInputError, match="share their clean validation and test files"):
        challenge.package_challenge({"a": source, "b": other}, tmp_path / "package")


# ---------------------------------------------------------------- grading


def test_grade_cli_model_script_and_crash(made, key, reference, tmp_path):
    """One command scores a GoodNet file, a working eval.py-style script and a crashing script."""
    script_dir = tmp_path / "script"  # handed in as a folder: the script reads the model beside it
    script_dir.mkdir()
    shutil.copy(reference["anonymous_2"], script_dir / "goodnet.keras")
    eval_script = write_script(script_dir, "anonymous_2.py", """
        import os, sys
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras, numpy as np
        from PIL import Image
        model = keras.models.load_model("goodnet.keras", compile=False)  # relative: runs in its own folder
        x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in sys.argv[1:]])
        print("classified", len(x), "faces")  # chatter before the answers is ignored
        for label in model.predict(x, verbose=0).argmax(axis=1):
            print(int(label))
    """)
    crash = write_script(tmp_path, "crash.py", "raise RuntimeError('my GoodNet file is missing')\n")
    started = time.perf_counter()
    result = run_instructor("grade", "--grader", made / "grader", "--n", N_GRADE, "--json",
                            "--submission", f"anonymous_1={reference['anonymous_1']}",
                            "--submission", script_dir, "--submission", f"anonymous_3={crash}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.perf_counter() - started < 120
    rows = {row["badnet"]: row for row in json.loads(result.stdout)}
    assert rows["anonymous_1"]["kind"] == "model" and rows["anonymous_1"]["status"] == "scored"
    assert rows["anonymous_2"]["kind"] == "script" and rows["anonymous_2"]["status"] == "scored"
    assert rows["anonymous_3"]["status"] == "zero" and rows["anonymous_3"]["score"] == 0
    assert rows["anonymous_3"]["reason"] == "crashed (exit status 1): RuntimeError: my GoodNet file is missing"
    # The script and the model file it wraps give exactly the same numbers.
    direct = challenge.grade_one(made / "grader", "anonymous_2", reference["anonymous_2"], n=N_GRADE)
    for column in ("clean_accuracy", "clean_false_positive_rate", "attack_success_rate", "detection_rate", "score"):
        assert rows["anonymous_2"][column] == pytest.approx(direct[column]), column
    n_triggers = len(key["badnets"]["anonymous_2"]["triggers"])
    assert rows["anonymous_2"]["n_clean"] == N_GRADE and rows["anonymous_2"]["n_poisoned"] == N_GRADE * n_triggers

    table = challenge.format_table(list(rows.values()))  # what the command prints without --json
    assert table.splitlines()[0].split()[:3] == ["BadNet", "kind", "clean"] and "mean score" in table
    assert "crashed (exit status 1): RuntimeError" in table


def test_a_goodnet_scores_well_and_beats_the_badnet_itself(made, key, reference, tmp_path):
    """A GoodNet that catches the backdoor scores far above the BadNet handed in unchanged.

    G is the lab's GoodNet (lab.defenses.goodnet.build_goodnet) whose second network
    is a clean DeepID trained on the challenge's clean training images: B and
    it disagree on triggered faces, so G flags them. (The pruning GoodNet's
    numbers depend on how well pruning works on a tiny BadNet; it is only
    required to be scored.)
    """
    import keras

    from lab.attacks import training
    from lab.defenses import goodnet

    name = next(n for n, e in key["badnets"].items() if e["attack"] == "all-to-one")
    badnet_path = made / key["badnets"][name]["model"]
    train = data.load_h5(made / "work/data/cl/train.h5")
    keras.utils.set_random_seed(1)
    clean_model = models.build_deepid(N_IDENTITIES, input_scale="unit", name="clean")
    training.fit(clean_model, train.x / 255.0, train.y, 6, training.TrainingConfig(), seed=1, progress=False)
    repaired = goodnet.build_goodnet(models.load_model(badnet_path), models.LoadedModel(clean_model, "unit"))
    goodnet_path = goodnet.save_goodnet(repaired, tmp_path / f"{name}.keras")

    # One grading run (the grader folder checked and read once, the model workers two at a time).
    multi = next(n for n, e in key["badnets"].items() if e["attack"] == "multi-trigger multi-target")
    rows = challenge.grade_class(made / "grader", {"good": {name: goodnet_path}, "unchanged": {name: badnet_path},
                                                   "reference": {name: reference[name], multi: reference[multi]}},
                                 jobs=2)
    by = {(row["student"], row["badnet"]): row for row in rows}
    good, unchanged = by[("good", name)], by[("unchanged", name)]
    assert unchanged["status"] == good["status"] == "scored"
    assert unchanged["detection_rate"] == 0 and unchanged["attack_success_rate"] > 50
    assert good["attack_success_rate"] < 10 and good["detection_rate"] > 60
    assert good["score"] > unchanged["score"] + 25
    assert by[("reference", name)]["status"] == "scored"
    # Per trigger for the multi-trigger BadNet.
    row = by[("reference", multi)]
    assert list(row["per_trigger"]) == list(challenge.MULTI_TRIGGERS)
    assert "  eyebrows" in challenge.format_table([row])


def test_a_hanging_script_is_killed_with_its_children_and_scores_zero(made, tmp_path):
    marker = f"lab-test-hang-{secrets.token_hex(6)}"
    hang = write_script(tmp_path, "hang.py", f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", {marker!r}])
        time.sleep(600)
    """)
    started = time.perf_counter()
    row = challenge.grade_one(made / "grader", "anonymous_1", hang, n=3, timeout=3)
    assert time.perf_counter() - started < 20
    assert row["status"] == "zero" and row["score"] == 0 and row["reason"].startswith("timed out: no answer within 3 s")
    assert processes_with(marker) == [], "a process of the hanging script survived"


def test_one_image_scripts_nonsense_and_broken_models(made, key, tmp_path):
    one = write_script(tmp_path, "one.py", "import sys\nprint('reading', sys.argv[1])\nprint(3)\n")
    row = challenge.grade_one(made / "grader", "anonymous_1", one, n=2)
    assert row["status"] == "scored" and row["note"] == "script answers one image per call"
    nonsense = write_script(tmp_path, "nonsense.py", "print('hello')\n")
    row = challenge.grade_one(made / "grader", "anonymous_1", nonsense, n=2, time_limit=30)
    assert row["status"] == "zero" and "printed 'hello' where a class number in [0, 8] was expected" in row["reason"]
    out_of_range = write_script(tmp_path, "wild.py", "import sys\nfor _ in sys.argv[1:]: print(999)\n")
    row = challenge.grade_one(made / "grader", "anonymous_1", out_of_range, n=2)
    assert row["status"] == "zero" and row["reason"] == "printed '999' where a class number in [0, 8] was expected"

    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a model at all")
    row = challenge.grade_one(made / "grader", "anonymous_1", garbage, n=2)
    assert row["status"] == "zero" and row["reason"].startswith("does not load:")
    import keras

    small = keras.Sequential([keras.Input((55, 47, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    models.save_model(small, tmp_path / "three.keras", "unit")
    row = challenge.grade_one(made / "grader", "anonymous_1", tmp_path / "three.keras", n=2)
    assert row["status"] == "zero" and row["reason"] == f"has 3 outputs; expected {N_IDENTITIES + 1} (classes 0..8)"
    for submission, reason in [(None, "nothing handed in"), (tmp_path / "notes.txt", "notes.txt: expected a model")]:
        row = challenge.grade_one(made / "grader", "anonymous_1", submission, n=2)
        assert row["status"] == "zero" and row["reason"].startswith(reason)


def test_resolve_submissions(tmp_path):
    """A folder is handed in whole (its files copied with the script); NAME=FILE is that file alone."""
    names = ["anonymous_1", "anonymous_2"]
    (tmp_path / "anonymous_1.keras").write_bytes(b"")
    (tmp_path / "anonymous_2.py").write_text("")
    Submission = challenge.Submission
    assert challenge.resolve_submissions([str(tmp_path)], names) == {
        "anonymous_1": Submission(tmp_path / "anonymous_1.keras", tmp_path),
        "anonymous_2": Submission(tmp_path / "anonymous_2.py", tmp_path)}
    assert challenge.resolve_submissions(["anonymous_2=x.h5"], names) == {"anonymous_1": None,
                                                                           "anonymous_2": Submission(Path("x.h5"))}
    with pytest.raises(LabInputError, match="NAME one of anonymous_1, anonymous_2"):
        challenge.resolve_submissions(["anonymous_9=x.h5"], names)
    with pytest.raises(LabInputError):
        challenge.resolve_submissions(["x.h5"], names)
    assert challenge.resolve_submissions(["x.h5"], names[:1]) == {"anonymous_1": Submission(Path("x.h5"))}


def test_grade_cli_bad_grader_folder_is_one_line(tmp_path):
    result = run_instructor("grade", "--grader", tmp_path, "--submission", tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "answer_key.json" in result.stderr
