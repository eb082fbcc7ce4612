"""``python -m lab prune`` end to end on tiny real files (fixtures in conftest.py); bad input = one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_prune_json_and_files(cli_pruned):
    report, out = cli_pruned["report"], cli_pruned["out"]
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


def test_prune_refuses_to_overwrite_without_force(lab_main, cli_files, cli_pruned):
    status, _, err = lab_main("prune", "--model", cli_files["model"], "--valid", cli_files["valid"],
                              "--out", cli_pruned["out"])
    assert status == 2 and err.startswith("error: ") and "already exists" in err and err.count("\n") == 1


def test_prune_text_output_states_the_rule_and_unreached_thresholds(lab_main, cli_files, cli_pruned):
    """A threshold within the starting accuracy that the sweep never reaches: results kept, one error line, exit 2."""
    accuracy = [row["clean_accuracy"] for row in cli_pruned["report"]["sweep"]]
    start, largest_drop = accuracy[0], accuracy[0] - min(accuracy)
    assert largest_drop < start  # the tiny BadNet never drops to 0 %: some threshold in between is never reached
    unreached = round((largest_drop + start) / 2, 1)
    out = cli_files["root"] / "text"
    status, printed, err = lab_main("prune", "--model", cli_files["model"], "--valid", cli_files["valid"], "--out", out,
                                    "--thresholds", "1", str(unreached), "--rule", "first-reach")
    assert status == 2
    assert "rule: first-reach = first step whose clean accuracy drop reaches X" in printed
    assert f"{unreached:g} pp: no step reaches a drop of {unreached:g}" in printed
    assert err.count("\n") == 1 and err.startswith("error: --thresholds: expected accuracy drops the sweep reaches")
    assert f"found {unreached:g}: no step reaches" in err and str(out) in err
    assert (out / "pruned_1.h5").exists() and not (out / f"pruned_{unreached:g}.h5").exists()
    report = json.loads((out / "report.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert [row["found"] for row in report["thresholds"]] == [True, False]
    assert report["sweep"][0]["attack_success_rate"] is None  # no poisoned file: null, not NaN


def test_bad_prune_inputs_are_one_line_errors(lab_main, cli_files, tmp_path):
    common = ["--model", cli_files["model"], "--valid", cli_files["valid"], "--out", tmp_path / "out"]
    for expected, args in {
        "strictly between 0 and 100": [*common, "--thresholds", "-1"],
        "a layer named 'conv_9'": [*common, "--layer", "conv_9"],
        "a Conv or Dense layer": [*common, "--layer", "pool_3"],
        "did you swap": ["--model", cli_files["valid"], "--valid", cli_files["valid"], "--out", tmp_path / "out"],
    }.items():
        status, _, err = lab_main("prune", *args)
        assert status == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, (args, err)
