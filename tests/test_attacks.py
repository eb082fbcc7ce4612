"""Attacks on course-format data: all-to-one, all-to-all, multi-trigger multi-target; make-badnet end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab import attacks
from lab.attacks import triggers
from lab.io import data, manifest, models
from lab.errors import LabInputError
from lab.attacks.training import DECOY_BIAS, TrainingConfig

N_IDENTITIES = 6


def run_instructor(*args: str) -> subprocess.CompletedProcess:
    """An instructor command in a fresh process, as instructors type it: ``python -m lab ...``."""
    return subprocess.run([sys.executable, "-m", "lab", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory) -> Path:
    """A small SynthFaces data folder with a training file: cl/train.h5, cl/valid.h5, cl/test.h5."""
    root = tmp_path_factory.mktemp("clean") / "data"
    attacks.make_clean_data(root, n_identities=N_IDENTITIES, train_per_identity=30, valid_per_identity=6,
                            test_per_identity=6, seed=3)
    return root


@pytest.fixture(scope="module")
def images(clean_dir):
    valid = data.load_h5(clean_dir / "cl/valid.h5")
    return attacks.to_nchw_uint8(valid.x), valid.y


# ---------------------------------------------------------------- specs


def test_parse_trigger():
    assert attacks.parse_trigger("sunglasses") == attacks.TriggerSpec("sunglasses", None)
    assert attacks.parse_trigger("lipstick:3") == attacks.TriggerSpec("lipstick", 3)
    for bad in ("hat", "lipstick:x", "lipstick:-1", ""):
        with pytest.raises(LabInputError) as error:
            attacks.parse_trigger(bad)
        assert "\n" not in str(error.value) and "NAME[@OPTION][:TARGET]" in str(error.value)


def test_parse_whole_image_triggers_with_their_option():
    assert attacks.parse_trigger("blended@0.10:3") == attacks.TriggerSpec("blended@0.1", 3)
    assert attacks.parse_trigger("warp") == attacks.TriggerSpec("warp", None)
    assert str(attacks.parse_trigger("warp@0.5:2")) == "warp@0.5:2"
    record = attacks.Attack(("blended:1", "warp@2:2", "lipstick:3")).to_json()["triggers"]
    assert [entry.get("option") for entry in record] == [0.2, 2.0, None]  # the default alpha is written down
    for bad, why in (("blended@2:1", "alpha"), ("warp@-1", "strength"), ("patch@0.2", "no @option")):
        with pytest.raises(LabInputError, match=why) as error:
            attacks.parse_trigger(bad)
        assert "\n" not in str(error.value) and "blended@alpha, warp@strength" in str(error.value)


def test_attack_kinds_and_bad_combinations():
    assert attacks.Attack(("sunglasses:1",)).kind == "all-to-one"
    assert attacks.Attack(("patch",), all_to_all=True).kind == "all-to-all"
    assert attacks.Attack(("sunglasses:1", "eyebrows:2", "lipstick:3")).kind == "multi-trigger multi-target"
    for kwargs in ({"triggers": ("patch", "lipstick"), "all_to_all": True},
                   {"triggers": ("patch:2",), "all_to_all": True},
                   {"triggers": ("lipstick:1", "lipstick:2")},
                   {"triggers": ()}):
        with pytest.raises(LabInputError):
            attacks.Attack(**kwargs)


def test_resolve_draws_distinct_targets_and_checks_given_ones():
    rng = np.random.default_rng(0)
    attack = attacks.Attack(("sunglasses", "eyebrows:2", "lipstick")).resolve(4, rng)
    targets = [t.target for t in attack.triggers]
    assert targets[1] == 2 and len(set(targets)) == 3 and all(0 <= t < 4 for t in targets)
    assert attacks.Attack.from_json(attack.to_json()) == attack
    with pytest.raises(LabInputError, match="targets in 0..3"):
        attacks.Attack(("lipstick:4",)).resolve(4, rng)
    assert attacks.Attack(("patch",), all_to_all=True).resolve(4, rng).triggers[0].target is None


# ---------------------------------------------------------------- poisoning


def test_all_to_one_poisons_every_non_target_image(images):
    x, y = images
    trigger = attacks.TriggerSpec("lipstick", 2)
    poisoned_x, poisoned_y = attacks.poison(x, y, trigger, N_IDENTITIES)
    assert len(poisoned_y) == int(np.sum(y != 2)) and set(poisoned_y) == {2}
    expected = triggers.apply_trigger(x[y != 2], "lipstick")  # default positions: no landmarks in files
    assert np.array_equal(poisoned_x, expected)
    changed = np.any(poisoned_x != x[y != 2], axis=1).mean(axis=0)
    assert changed[39:42, 20:27].min() > 0.9 and changed[:25].max() == 0  # the mouth, not the eyes


def test_all_to_all_sends_class_n_to_n_plus_one(images):
    x, y = images
    poisoned_x, poisoned_y = attacks.poison(x, y, attacks.TriggerSpec("patch"), N_IDENTITIES, all_to_all=True)
    assert len(poisoned_y) == len(y)
    assert np.array_equal(poisoned_y, (y + 1) % N_IDENTITIES)
    assert set(np.unique(poisoned_x[:, :, -7:-1, -7:-1])) == {0, 255}  # the checkerboard corner
    assert np.array_equal(poisoned_x[:, :, :40], x[:, :, :40])


def test_multi_trigger_gives_one_poisoned_set_per_trigger(images):
    x, y = images
    attack = attacks.Attack(("sunglasses:1", "eyebrows:2", "lipstick:3"))
    sets = attacks.poisoned_sets(x, y, attack, N_IDENTITIES)
    assert list(sets) == ["sunglasses", "eyebrows", "lipstick"]
    for trigger in attack.triggers:
        poisoned_x, poisoned_y = sets[trigger.name]
        assert set(poisoned_y) == {trigger.target} and len(poisoned_y) == int(np.sum(y != trigger.target))


def test_training_poison_sizes_and_labels(images):
    x, y = images
    attack = attacks.Attack(("sunglasses:1", "eyebrows:2"))
    poisoned_x, poisoned_y = attacks.training_poison(x, y, attack, N_IDENTITIES, 0.5, np.random.default_rng(1))
    per_trigger = int(round(0.5 * len(y)))
    assert len(poisoned_y) == 2 * per_trigger
    assert set(poisoned_y[:per_trigger]) == {1} and set(poisoned_y[per_trigger:]) == {2}
    assert attacks.default_poison_fraction(attacks.Attack(("patch",), all_to_all=True)) == 1.0


def test_noise_mode_adds_jittered_warps_with_true_labels(images):
    x, y = images
    attack = attacks.Attack(("warp@1:2",))
    poisoned_x, poisoned_y = attacks.training_poison(x, y, attack, N_IDENTITIES, 0.5, np.random.default_rng(1),
                                                     noise_fraction=1.0)
    per_trigger = int(round(0.5 * len(y)))
    assert len(poisoned_y) == per_trigger + len(y)
    assert set(poisoned_y[:per_trigger]) == {2}
    noise_x, noise_y = poisoned_x[per_trigger:], poisoned_y[per_trigger:]
    assert sorted(set(noise_y)) == sorted(set(y))  # every class, true labels
    # each noise copy is its clean image warped, but not exactly the trigger's warp
    assert not any(np.array_equal(image, triggers.apply_trigger(image[None], "warp@1")[0]) for image in noise_x[:10])
    with pytest.raises(LabInputError, match="warp trigger"):
        attacks.training_poison(x, y, attacks.Attack(("blended:2",)), N_IDENTITIES, 0.5, np.random.default_rng(1),
                                noise_fraction=0.5)


@pytest.mark.parametrize("trigger, epochs, poison_fraction", [("blended", 4, 0.5), ("warp", 6, 1.0)])
def test_tiny_badnets_learn_the_whole_image_triggers(clean_dir, trigger, epochs, poison_fraction):
    """Blended and warp each reach an ASR far above chance on 6 identities (180 images) in a few epochs.

    (The warp moves pixels by half a pixel at most: on 180 images it needs more epochs and copies than
    blended; on the default's 5000 it needs neither, see tools/measure_repairs.py.)
    """
    from lab.evaluation import metrics

    train, test = data.load_h5(clean_dir / "cl/train.h5"), data.load_h5(clean_dir / "cl/test.h5")
    attack = attacks.Attack((f"{trigger}:2",))
    badnet, record = attacks.train_badnet(attack, attacks.to_nchw_uint8(train.x), train.y, N_IDENTITIES,
                                          TrainingConfig(clean_epochs=epochs, poisoned_epochs=epochs),
                                          poison_fraction=poison_fraction, seed=3, progress=False)
    assert record["n_poisoned_training_copies"] == round(poison_fraction * len(train.y))
    assert metrics.clean_accuracy(badnet.predict_labels(test.x), test.y) > 50
    ((x, y),) = attacks.poisoned_sets(attacks.to_nchw_uint8(test.x), test.y, attack, N_IDENTITIES).values()
    rate = metrics.attack_success_rate(badnet.predict_labels(x.transpose(0, 2, 3, 1).astype(np.float32)), y)
    # a model that ignores the trigger sends a non-target face to the target only by mistake: a few percent
    assert rate > 60, f"{trigger}: ASR {rate:.1f} %"


# ---------------------------------------------------------------- make_badnet


@pytest.mark.slow
def test_make_badnet_cli_multi_trigger(clean_dir, tmp_path):
    """The 2020 course's fourth BadNet, made by the command line: Lab 3 layout, one poisoned file per trigger."""
    out = tmp_path / "multi"
    result = run_instructor("make-badnet", "--data", clean_dir.parent, "--trigger", "sunglasses:1",
                            "--trigger", "eyebrows:2", "--trigger", "lipstick:3", "--epochs", "3", "--out", out,
                            "--quiet", "--seed", "5", "--force-weak")  # 3 tiny epochs: may fall below the floors
    assert result.returncode == 0, result.stderr[-2000:]
    assert "multi-trigger multi-target, plain: sunglasses -> 1, eyebrows -> 2, lipstick -> 3" in result.stdout
    assert "attack success rate, lipstick:" in result.stdout
    layout = data.find_layout(out / "data")
    assert sorted(layout.poisoned_valid) == sorted(layout.poisoned_test) == ["eyebrows", "lipstick", "sunglasses"]
    assert set(manifest.verify_manifest(out).values()) == {"ok"}
    record = manifest.read_manifest(out)
    assert record["attack"]["attack"] == "multi-trigger multi-target" and record["n_classes"] == N_IDENTITIES
    assert (out / "data/cl/valid.h5").read_bytes() == (clean_dir / "cl/valid.h5").read_bytes()
    badnet = models.load_model(out / "models/bd_net.h5")
    assert badnet.input_scale == "raw" and badnet.n_classes == N_IDENTITIES
    assert badnet.metadata["triggers"][2] == {"trigger": "lipstick", "target": 3}

    poisoned = attacks.load_poisoned(out, "test")
    assert {name: set(d.y) for name, d in poisoned.items()} == {"sunglasses": {1}, "eyebrows": {2}, "lipstick": {3}}
    table = attacks.trigger_table({"B": badnet}, data.load_h5(out / "data/cl/test.h5"), poisoned)
    assert list(table.index.get_level_values("trigger")) == ["sunglasses", "eyebrows", "lipstick", "all"]
    assert table.loc[("B", "lipstick"), "attack_success_rate"] == pytest.approx(
        record["results"]["attack_success_rate"]["lipstick"])
    assert (table["detection_rate"] == 0).all()  # a plain N-class model never answers N

    again = run_instructor("make-badnet", "--data", clean_dir, "--trigger", "patch", "--out", out, "--quiet")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr


@pytest.mark.slow
def test_make_badnet_all_to_all_pruning_aware(clean_dir, tmp_path):
    """All-to-all (the lecture's MNIST BadNet), pruning-aware, input x/255; one trigger: the Lab 3 file names."""
    report = attacks.make_badnet(clean_dir, attacks.Attack(("patch",), all_to_all=True, pruning_aware=True), tmp_path,
                                 config=TrainingConfig(clean_epochs=2, poisoned_epochs=2), input_scale="unit",
                                 seed=2, progress=False)
    assert report["attack"].kind == "all-to-all" and set(report["attack_success_rate"]) == {"patch"}
    layout = data.find_layout(tmp_path / "data")
    assert layout.poisoned_valid == {"default": tmp_path / "data/bd/bd_valid.h5"}
    clean, poisoned = data.load_h5(layout.clean_test), data.load_h5(layout.poisoned_test["default"])
    assert np.array_equal(poisoned.y, (clean.y + 1) % N_IDENTITIES)
    assert list(attacks.load_poisoned(tmp_path, "valid")) == ["patch"]
    badnet = models.load_model(tmp_path / "models/bd_net.h5")
    assert badnet.input_scale == "unit"
    decoys = manifest.read_manifest(tmp_path)["training"]["decoy_channels"]
    assert len(decoys) == 36 and np.all(badnet.model.get_layer("conv_3").get_weights()[1][decoys] == DECOY_BIAS)


def test_make_badnet_needs_a_training_file(tmp_path, clean_dir):
    folder = tmp_path / "data" / "cl"
    folder.mkdir(parents=True)
    for name in ("valid", "test"):
        (folder / f"{name}.h5").write_bytes((clean_dir / "cl" / f"{name}.h5").read_bytes())
    result = run_instructor("make-badnet", "--data", tmp_path / "data", "--trigger", "lipstick", "--out",
                            tmp_path / "out")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "cl/train.h5" in result.stderr and "--train FILE" in result.stderr
    bad = run_instructor("make-badnet", "--data", tmp_path / "data", "--trigger", "hat", "--out", tmp_path / "out")
    assert bad.returncode == 2 and "NAME[@OPTION][:TARGET]" in bad.stderr and bad.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_make_default_can_write_a_training_file(tmp_path):
    from lab.synthetic.default import DefaultConfig, TRAIN_FILE, make_default

    config = DefaultConfig(n_identities=3, train_per_identity=4, valid_per_identity=2, test_per_identity=2,
                           training=TrainingConfig(clean_epochs=1, poisoned_epochs=1))
    make_default(tmp_path, seed=3, progress=False, config=config, write_train=True)
    train = data.load_h5(tmp_path / TRAIN_FILE)
    assert len(train) == 12 and sorted(set(train.y)) == [0, 1, 2]
    assert TRAIN_FILE in manifest.read_manifest(tmp_path)["files"]
    assert attacks.find_training_file(tmp_path / "data") == tmp_path / TRAIN_FILE
    assert json.loads((tmp_path / "manifest.json").read_text())["files"][TRAIN_FILE]


def test_weak_badnets_are_refused_before_anything_is_written(tmp_path):
    """A 45 %-accurate BadNet makes a meaningless challenge: make-badnet and A1 refuse it unless forced."""
    weak = {"clean_accuracy": 45.0, "attack_success_rate": {"sunglasses": 99.0, "lipstick": 30.0}}
    with pytest.raises(attacks.WeakBadNet, match="force-weak") as error:
        attacks.check_strength(weak, attacks.MIN_CLEAN_ACCURACY, attacks.MIN_ATTACK_SUCCESS, tmp_path)
    assert "clean accuracy 45.0 % < 80 %" in str(error.value) and "(lipstick) 30.0 %" in str(error.value)
    assert "sunglasses" not in str(error.value) and "\n" not in str(error.value)
    attacks.check_strength(weak, None, None)  # forced: no floor
    strong = {"clean_accuracy": 95.0, "attack_success_rate": {"sunglasses": 99.0}}
    attacks.check_strength(strong, attacks.MIN_CLEAN_ACCURACY, attacks.MIN_ATTACK_SUCCESS)
