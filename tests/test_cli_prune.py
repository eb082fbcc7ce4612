"""``python -m lab prune | goodnet | evaluate | classify`` end to end on tiny real files; bad input = one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import _helpers_pruning as helpers
from conftest import assert_no_log_noise
from lab import classify, cli, data, models


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny BadNet saved by the lab and clean/poisoned validation files in the course format."""
    root = tmp_path_factory.mktemp("cli")
    clean, poisoned = helpers.datasets()
    for name, dataset in {"valid": clean, "bd_valid": poisoned}.items():
        pixels = np.rint(dataset.x).astype(np.uint8).transpose(0, 3, 1, 2)  # NHWC float -> course NCHW uint8
        data.save_h5(root / f"{name}.h5", pixels, dataset.y)
    models.save_model(helpers.trained_deepid().model, root / "badnet.h5", "unit", "tiny test BadNet")
    return {"root": root, "model": root / "badnet.h5", "valid": root / "valid.h5", "bd_valid": root / "bd_valid.h5"}


def _run(*args: str) -> subprocess.CompletedProcess:
    # The user's environment as it is: the lab itself keeps TensorFlow's C++ log lines out of stderr.
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPP_")}
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=600, env=env)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    status = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def pruned(files) -> dict:
    """``prune --json`` in a fresh process, as a student or grader runs it."""
    out = files["root"] / "pruned"
    result = _run("prune", "--model", str(files["model"]), "--valid", str(files["valid"]),
                  "--poisoned-valid", str(files["bd_valid"]), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_log_noise(result.stderr, "prune stderr")  # a whole sweep: TensorFlow imported, models run and saved
    return {"out": out, "report": json.loads(result.stdout.strip().splitlines()[-1])}


def test_prune_json_and_files(pruned):
    report, out = pruned["report"], pruned["out"]
    assert {"sweep", "thresholds", "rule", "seconds"} <= set(report) and report["rule"] == "first-reach"
    assert len(report["sweep"]) == 61 and report["sweep"][0]["channels_pruned"] == 0
    assert {"channels_pruned", "fraction_pruned", "clean_accuracy", "attack_success_rate"} <= set(report["sweep"][0])
    assert [row["threshold"] for row in report["thresholds"]] == [2, 4, 10]
    for row in report["thresholds"]:
        assert {"threshold", "channels_pruned", "clean_accuracy", "model_path"} <= set(row)
        assert row["found"] and Path(row["model_path"]).exists()
        assert row["model_path"].endswith(f"pruned_{row['threshold']:g}.h5")
    for name in ("sweep.csv", "thresholds.csv", "sweep.png", "report.json"):
        assert (out / name).stat().st_size > 100
    assert report["method"] == "fast"


def test_prune_refuses_to_overwrite_without_force(capsys, files, pruned):
    status, _, err = _main(capsys, "prune", "--model", files["model"], "--valid", files["valid"], "--out", pruned["out"])
    assert status == 2 and err.startswith("error: ") and "already exists" in err and err.count("\n") == 1


def test_prune_text_output_states_the_rule_and_unreached_thresholds(capsys, files):
    out = files["root"] / "text"
    status, printed, _ = _main(capsys, "prune", "--model", files["model"], "--valid", files["valid"], "--out", out,
                               "--thresholds", "1", "99", "--rule", "first-reach")
    assert status == 0
    assert "rule: first-reach = first step whose clean accuracy drop reaches X" in printed
    assert "99 pp: no step reaches a drop of 99" in printed
    assert (out / "pruned_1.h5").exists() and not (out / "pruned_99.h5").exists()


def test_goodnet_evaluate_and_classify(capsys, files, pruned, tmp_path):
    pruned_model = pruned["report"]["thresholds"][1]["model_path"]
    goodnet_path = tmp_path / "goodnet.keras"
    status, printed, err = _main(capsys, "goodnet", "--badnet", files["model"], "--pruned", pruned_model,
                                 "--out", goodnet_path)
    assert status == 0, err
    assert "class 5 = backdoor" in printed
    status, printed, _ = _main(capsys, "evaluate", "--model", goodnet_path, "--clean", files["valid"],
                               "--poisoned", files["bd_valid"], "--json")
    result = json.loads(printed)
    assert status == 0 and result["backdoor_class"] == 5
    assert {"detection_rate", "clean_false_positive_rate", "clean_accuracy", "attack_success_rate"} <= set(result)
    status, printed, _ = _main(capsys, "evaluate", "--model", goodnet_path, "--clean", files["valid"])
    assert "clean false positive rate:" in printed and "backdoor class" in printed

    clean = data.load_h5(files["valid"])
    images = []
    for index in range(6):
        images.append(tmp_path / f"face_{index}.png")
        classify.save_image(images[-1], clean.x[index])
    status, printed, _ = _main(capsys, "classify", "--model", goodnet_path, *images)
    expected = models.load_model(goodnet_path).predict_labels(clean.x[:6])
    assert status == 0
    assert printed.splitlines() == [f"{path}\t{label}" for path, label in zip(images, expected)]


def test_classify_accepts_jpeg_and_greyscale(capsys, files, tmp_path):
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((55, 47), 120, np.uint8)).save(grey)
    jpeg = tmp_path / "face.jpg"
    Image.fromarray(np.full((55, 47, 3), 90, np.uint8)).save(jpeg, format="JPEG")
    status, printed, _ = _main(capsys, "classify", "--model", files["model"], grey, jpeg)
    assert status == 0 and [line.split("\t")[0] for line in printed.splitlines()] == [str(grey), str(jpeg)]
    assert all(0 <= int(line.split("\t")[1]) < 5 for line in printed.splitlines())


def _bad_inputs(files, tmp_path) -> dict[str, list]:
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((55, 60, 3), np.uint8)).save(wide)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    gif = tmp_path / "face.gif"
    Image.fromarray(np.zeros((55, 47, 3), np.uint8)).save(gif, format="GIF")
    common = ["--model", files["model"], "--valid", files["valid"], "--out", tmp_path / "out"]
    return {
        "60 wide and 55 high": ["classify", "--model", files["model"], wide],
        "a file that is not an image": ["classify", "--model", files["model"], text],
        "a GIF image": ["classify", "--model", files["model"], gif],
        "no such file": ["classify", "--model", files["model"], tmp_path / "missing.png"],
        "ending in .keras": ["goodnet", "--badnet", files["model"], "--pruned", files["model"], "--out", tmp_path / "g.h5"],
        "thresholds > 0": ["prune", *common, "--thresholds", "-1"],
        "a layer named 'conv_9'": ["prune", *common, "--layer", "conv_9"],
        "a Conv or Dense layer": ["prune", *common, "--layer", "pool_3"],
        "did you swap": ["prune", "--model", files["valid"], "--valid", files["valid"], "--out", tmp_path / "out"],
    }


def test_bad_inputs_are_one_line_errors(capsys, files, tmp_path):
    for expected, args in _bad_inputs(files, tmp_path).items():
        status, _, err = _main(capsys, *args)
        assert status == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, (args, err)


def test_bad_input_in_a_fresh_process(files, tmp_path):
    result = _run("classify", "--model", str(files["model"]), str(files["valid"]))
    assert result.returncode == 2 and result.stdout == ""
    assert_no_log_noise(result.stderr, "classify stderr")
    # One line and nothing else: no TensorFlow start-up lines before the error (TensorFlow was imported).
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {files['valid']}: expected a PNG or JPEG image")
