"""``python -m lab fine-prune``: B'' from a BadNet and clean data on tiny real files; bad input = one line, exit 2."""

from __future__ import annotations

import json

from lab.defenses import finepruning
from lab.io import models


def test_fine_prune_saves_b_double_prime_with_the_pruned_channels_at_zero(lab_main, cli_files, tmp_path):
    out = tmp_path / "fine_pruned.h5"
    status, printed, err = lab_main("fine-prune", "--model", cli_files["model"], "--valid", cli_files["valid"],
                                    "--poisoned-valid", cli_files["bd_valid"], "--threshold", "2", "--recipe",
                                    "augmented", "--epochs", "1", "--seed", "5", "--out", out, "--json")
    assert status == 0, err
    report = json.loads(printed)
    assert report["model"] == str(out) and report["epochs"] == 1 and report["best_epoch"] == 1
    assert report["channels_pruned"] == len(report["pruned_channels"]) > 0
    assert 0 <= report["holdout_accuracy"] <= 100 and 0 <= report["poisoned_valid_attack_success_rate"] <= 100
    repaired = models.load_model(out)  # SHA-256 checked against the sidecar
    assert finepruning.pruned_channels_are_zero(repaired, "conv_3", report["pruned_channels"])
    assert repaired.metadata["pruned_channels"] == report["pruned_channels"]


def test_fine_prune_text_and_fine_tuning_alone(lab_main, cli_files, tmp_path):
    status, printed, err = lab_main("fine-prune", "--model", cli_files["model"], "--valid", cli_files["valid"],
                                    "--channels", "0", "--recipe", "paper", "--epochs", "1", "--out",
                                    tmp_path / "tuned.keras")
    assert status == 0, err
    assert printed.startswith("fine-pruned conv_3: 0 channels pruned, fine-tuned 1 epochs (paper recipe)")
    assert "epoch 1 kept: held-out clean accuracy" in printed and "attack success rate" not in printed


def test_bad_fine_prune_inputs_are_one_line_errors(lab_main, cli_files, tmp_path):
    common = ["--model", cli_files["model"], "--valid", cli_files["valid"]]
    (tmp_path / "exists.h5").write_text("mine")
    for expected, args in {
        "--recipe one of paper, augmented, unlearning": [*common, "--recipe", "magic", "--out", tmp_path / "a.h5"],
        "--epochs: expected an integer >= 0, found '-2'": [*common, "--epochs", "-2", "--out", tmp_path / "a.h5"],
        "already exists": [*common, "--out", tmp_path / "exists.h5"],
        "0..60 channels to prune": [*common, "--channels", "99", "--out", tmp_path / "a.h5"],
        "did you swap": ["--model", cli_files["valid"], "--valid", cli_files["valid"], "--out", tmp_path / "a.h5"],
    }.items():
        status, _, err = lab_main("fine-prune", *args)
        assert status == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, (args, err)
    assert (tmp_path / "exists.h5").read_text() == "mine" and not (tmp_path / "a.h5").exists()
