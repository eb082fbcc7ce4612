"""tools/measure_repairs.py: builds BadNets with make-badnet, runs defenses, caches every row, writes the table."""

from __future__ import annotations

import importlib.util
import json
import sys

import pandas as pd
import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("measure_repairs", REPO / "tools" / "measure_repairs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_catalogue_covers_every_trigger_and_attack_kind(harness):
    from lab.attacks.triggers import TRIGGERS

    catalogue = harness._catalogue()
    one_target = {spec.triggers[0] for spec in catalogue.values() if spec.kind == "all-to-one"}
    assert one_target == set(TRIGGERS)
    kinds = {(spec.kind, spec.pruning_aware) for spec in catalogue.values()}
    for kind in ("all-to-one", "all-to-all", "multi-trigger"):
        assert (kind, False) in kinds and (kind, True) in kinds
    assert list(catalogue)[0] == "default" and any(spec.noise_fraction > 0 for spec in catalogue.values())


def test_goal_rule(harness):
    repair = {"status": "ok", "kind": "repair", "clean_before": 97.0, "clean_after": 95.5, "asr_after": 0.9}
    assert harness.meets_goal(repair) == "yes"
    assert harness.meets_goal({**repair, "clean_after": 94.9}) == "no"
    assert harness.meets_goal({**repair, "asr_after": 1.1}) == "no"
    detector = {"status": "ok", "kind": "detector", "detection": 96.0, "false_positives": 2.5}
    assert harness.meets_goal(detector) == "yes" and harness.meets_goal({**detector, "false_positives": 3.5}) == "no"
    assert harness.meets_goal({"status": "error"}) == "error"


def test_runs_caches_and_resumes(harness, tiny_default, tmp_path, capsys):
    out = tmp_path / "repairs"
    argv = ["--data", str(tiny_default), "--out", str(out), "--badnets", "default", "blended", "--defenses",
            "pruning", "strip", "--epochs", "2"]
    assert harness.main(argv) == 0
    table = pd.read_csv(out / "repairs.csv")
    assert sorted(zip(table["badnet"], table["defense"])) == sorted(
        (b, d) for b in ("default", "blended") for d in ("none", "pruning", "strip"))
    assert (table["status"] == "ok").all(), table["error"].dropna().tolist()
    for column in ("clean_before", "asr_before", "clean_after", "asr_after"):
        assert table[column].between(0, 100).all()
    strip = table[table["defense"] == "strip"]
    assert (strip["kind"] == "detector").all() and strip["detection"].between(0, 100).all()
    assert strip["false_positives"].between(0, 100).all()
    assert table[table["defense"] == "pruning"]["detection"].isna().all()  # repairs have no detection
    made = [p for p in (out / "badnets").iterdir()]
    assert len(made) == 1 and made[0].name.startswith("blended-")
    assert json.loads((made[0] / "manifest.json").read_text())["attack"]["triggers"][0]["trigger"] == "blended"
    markdown = (out / "repairs.md").read_text()
    assert "| badnet | attack |" in markdown and "blended" in markdown
    # the summary counts, per defense, the BadNets meeting the goal; the grid has one row per BadNet
    met = {d: (table[table["defense"] == d]["goal"] == "yes").sum() for d in ("pruning", "strip")}
    assert f"| pruning | 1234 | {met['pruning']} of 2 |" in markdown
    assert f"| strip | 1234 | {met['strip']} of 2 |" in markdown
    grid, seconds = markdown.split("## At a glance")[1].split("## Every row")[0].split("## Seconds to fit")
    blended = table[(table["badnet"] == "blended") & (table["defense"] == "pruning")].iloc[0]
    assert "| blended | " in grid and f"{blended['clean_after']:.2f} / {blended['asr_after']:.2f}" in grid
    # and the seconds of the same rows, a column per defense (the BadNet itself has none)
    strip_blended = strip[strip["badnet"] == "blended"].iloc[0]
    assert "| badnet | pruning | strip |" in seconds
    assert f"| blended | {blended['seconds']:.0f} | {strip_blended['seconds']:.0f} |" in seconds
    capsys.readouterr()

    # a second run trains nothing and fits nothing: every row is cached
    stamp = (made[0] / "models/bd_net.h5").stat().st_mtime_ns
    assert harness.main(argv) == 0
    printed = capsys.readouterr().out
    assert "training a BadNet" not in printed and "seed 1234:" not in printed
    assert (made[0] / "models/bd_net.h5").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_csv(out / "repairs.csv"), table)

    # published: the same table, with the command, the commit and each BadNet's SHA-256, read back by the lab
    from lab.evaluation import results
    from lab.io.models import sha256_file

    harness.publish(out, [*argv, "--table", "--publish"], directory=tmp_path / "published")
    published = results.load(tmp_path / "published")
    pd.testing.assert_frame_equal(published.table, table)
    assert published.command == "python tools/measure_repairs.py " + " ".join(argv) and published.commit
    assert published.badnet_named_by(sha256_file(tiny_default / "models" / "bd_net.h5")) == "default"
    assert published.badnet_named_by(sha256_file(made[0] / "models" / "bd_net.h5")) == "blended"
    assert published.badnet_named_by("0" * 64) is None
    assert set(published.rows("blended").index) == {"none", "pruning", "strip"}
    assert "written by `python tools/measure_repairs.py --data" in published.provenance()
    (tmp_path / "published" / "repairs.json").write_text("[]")
    with pytest.raises(results.LabInputError, match="repairs.json: expected a JSON object, found list"):
        results.load(tmp_path / "published")
    with pytest.raises(results.LabInputError, match="expected the published results"):
        results.load(tmp_path / "nowhere")

    # another epoch count is another BadNet, in its own folder
    assert harness.badnet_key("blended", harness._catalogue()["blended"], type("A", (), {
        "data": tiny_default, "epochs": 3, "badnet_seed": 1234})()) != made[0].name
