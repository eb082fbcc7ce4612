"""``python -m lab detect``: confidence and STRIP detectors calibrated on clean data, judged on test files."""

from __future__ import annotations

import json


def test_strip_is_calibrated_on_clean_data_and_judged_on_the_test_files(lab_main, cli_files):
    status, printed, err = lab_main("detect", "--method", "strip", "--badnet", cli_files["model"], "--valid",
                                    cli_files["valid"], "--overlays", "4", "--budget", "10", "--clean-test",
                                    cli_files["valid"], "--poisoned-test", cli_files["bd_valid"], "--json")
    assert status == 0, err
    report = json.loads(printed)
    assert report["method"] == "strip" and report["backdoor_class"] == 5
    assert report["calibration"]["false_rejection_rate"] <= 10 and report["calibration"]["n_overlays"] == 4
    badnet, detector = report["test"]["badnet"], report["test"]["detector"]
    assert badnet["detection_rate"] == 0 and badnet["clean_false_positive_rate"] == 0
    assert detector["detection_rate"] + detector["attack_success_rate"] <= 100
    assert detector["attack_success_rate"] <= badnet["attack_success_rate"]  # flagged inputs leave the target


def test_confidence_detector_text_output(lab_main, cli_files, cli_pruned):
    repaired = cli_pruned["report"]["thresholds"][-1]["model_path"]
    status, printed, err = lab_main("detect", "--method", "confidence", "--badnet", cli_files["model"],
                                    "--repaired", repaired, "--valid", cli_files["valid"], "--clean-test",
                                    cli_files["valid"])
    assert status == 0, err
    lines = printed.splitlines()
    assert lines[0].startswith("confidence detector: threshold") and "(budget 2 %)" in lines[1]
    assert lines[2].startswith("  badnet on the test sets: clean accuracy") and "attack success" not in lines[2]
    assert lines[3].startswith("  detector on the test sets")


def test_bad_detect_inputs_are_one_line_errors(lab_main, cli_files, tmp_path):
    common = ["--badnet", cli_files["model"], "--valid", cli_files["valid"]]
    for expected, args in {
        "--repaired FILE for the confidence detector": ["--method", "confidence", *common],
        "--clean-test FILE with --poisoned-test": ["--method", "strip", *common, "--poisoned-test",
                                                   cli_files["bd_valid"]],
        "--budget: expected a percentage: a number >= 0 and < 100, found '100'": ["--method", "strip", *common,
                                                                                 "--budget", "100"],
        "no such file": ["--method", "strip", "--badnet", tmp_path / "missing.h5", "--valid", cli_files["valid"]],
    }.items():
        status, _, err = lab_main("detect", *args)
        assert status == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, (args, err)
