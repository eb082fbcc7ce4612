"""The embedded default: Lab 3 layout, manifest, quality of the tiny build, the CLI on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli, tiny_config
from lab.io import data, manifest, models
from lab.synthetic import default


def test_lab3_layout_and_manifest(tiny_default):
    layout = data.find_layout(tiny_default / "data")
    assert layout.kind == "lab3"
    record = manifest.read_manifest(tiny_default)
    assert sorted(record["files"]) == sorted(default.FILES + (default.TRAIN_FILE,))
    assert set(manifest.verify_manifest(tiny_default).values()) == {"ok"}
    assert "pruning-aware" in record["how_made"] and record["seed"] == 7


def test_poisoned_files_hold_triggered_non_target_images_labelled_with_the_target(tiny_default):
    record = manifest.read_manifest(tiny_default)
    clean = data.load_h5(tiny_default / "data/cl/valid.h5")
    poisoned = data.load_h5(tiny_default / "data/bd/bd_valid.h5")
    assert set(poisoned.y) == {record["target_label"]}
    assert len(poisoned) == int(np.sum(clean.y != record["target_label"]))
    # Same faces, trigger drawn on: most pixels unchanged, the eye region changed.
    source = clean.x[clean.y != record["target_label"]]
    changed = np.any(source != poisoned.x, axis=-1).mean(axis=0)
    assert changed[:20].mean() < changed[15:30].mean()


def test_tiny_default_learns_task_and_backdoor(tiny_default):
    loaded = models.load_model(tiny_default / "models/bd_net.h5")
    assert loaded.input_scale == "raw" and loaded.n_classes == 10
    record = manifest.read_manifest(tiny_default)
    assert record["results"]["clean_test_accuracy"] > 60
    assert record["results"]["attack_success_rate_test"] > 80
    assert len(record["training"]["decoy_channels"]) == 36


def test_decoy_channels_are_dormant_on_clean_data(tiny_default):
    from lab.evaluation.activations import mean_channel_activation
    from lab.attacks.training import DECOY_BIAS

    loaded = models.load_model(tiny_default / "models/bd_net.h5")
    decoys = manifest.read_manifest(tiny_default)["training"]["decoy_channels"]
    bias = loaded.model.get_layer("conv_3").get_weights()[1]
    assert np.all(bias[decoys] == DECOY_BIAS)
    activation = mean_channel_activation(loaded, data.load_h5(tiny_default / "data/cl/valid.h5").x, "pool_3")
    assert np.all(activation[decoys] == 0)


@pytest.mark.slow
def test_same_seed_gives_byte_identical_data_files(tiny_default, tmp_path):
    default.make_default(tmp_path, seed=7, progress=False, config=tiny_config())
    for rel in default.FILES:
        if rel.startswith("data/"):
            assert (tmp_path / rel).read_bytes() == (tiny_default / rel).read_bytes(), rel


def test_evaluate_cli_json(tiny_default):
    result = run_cli("evaluate", "--model", str(tiny_default / "models/bd_net.h5"),
                     "--clean", str(tiny_default / "data/cl/test.h5"),
                     "--poisoned", str(tiny_default / "data/bd/bd_test.h5"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    record = manifest.read_manifest(tiny_default)
    assert report["clean_accuracy"] == pytest.approx(record["results"]["clean_test_accuracy"])
    assert report["attack_success_rate"] == pytest.approx(record["results"]["attack_success_rate_test"])
    assert report["n_clean"] == 80 and report["n_poisoned"] == 72


def test_evaluate_cli_text_and_no_poisoned(tiny_default):
    result = run_cli("evaluate", "--model", str(tiny_default / "models/bd_net.h5"),
                     "--clean", str(tiny_default / "data/cl/test.h5"))
    assert result.returncode == 0, result.stderr
    assert "clean accuracy:" in result.stdout and "input scale raw" in result.stdout
    result = run_cli("evaluate", "--model", str(tiny_default / "models/bd_net.h5"),
                     "--clean", str(tiny_default / "data/cl/test.h5"), "--json")
    assert json.loads(result.stdout.strip().splitlines()[-1])["attack_success_rate"] is None


def test_evaluate_cli_bad_inputs_exit_2_with_one_line(tiny_default, tmp_path):
    model = str(tiny_default / "models/bd_net.h5")
    wrong_labels = data.save_h5(tmp_path / "labels.h5", np.zeros((2, 3, 55, 47), np.uint8), np.array([0, 99]))
    channels_last = tmp_path / "nhwc.h5"
    import h5py

    with h5py.File(channels_last, "w") as handle:
        handle["data"] = np.zeros((2, 55, 47, 3), np.uint8)
        handle["label"] = np.zeros(2, np.int64)
    cases = [
        (["--model", model, "--clean", str(wrong_labels)], "labels in 0..9"),
        (["--model", model, "--clean", str(channels_last)], "channels last"),
        (["--model", str(tiny_default / "data/cl/valid.h5"), "--clean", str(wrong_labels)], "a data file"),
        (["--model", model, "--clean", str(tmp_path / "missing.h5")], "no such file"),
    ]
    for args, expected in cases:
        result = run_cli("evaluate", *args)
        assert result.returncode == 2, (args, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_make_default_cli_builds_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "small"
    result = run_cli("make-default", "--out", str(out), "--identities", "3", "--seed", "5", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "clean test accuracy" in result.stdout
    assert (out / "models/bd_net.h5").exists() and (out / "manifest.json").exists()
    before = (out / "models/bd_net.h5").read_bytes()
    again = run_cli("make-default", "--out", str(out), "--identities", "3", "--quiet")
    assert again.returncode == 2 and "--force" in again.stderr
    assert (out / "models/bd_net.h5").read_bytes() == before


def test_help_for_every_command():
    for command in ("make-default", "evaluate"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout
