"""Repair defenses and ``python -m lab repair`` on real small DeepIDs (no mocks).

The tiny default (10 identities, sunglasses BadNet) is repaired end to end
through the CLI with shortened schedules; a clean DeepID trained here must
come out of ``auto`` unchanged; every registered defense runs and takes no
poisoned data; on the real course weights (1283 classes) every registered
defense completes with short schedules, and the candidate search reverses
as many triggers as on 10 classes (its cost follows candidates, not classes).
"""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest

from conftest import run_cli
from lab import defenses
from lab.evaluation import metrics
from lab.io import data, models
from lab.defenses import finepruning, gate, reverse
from lab.defenses.reverse_unlearn import ReverseUnlearnConfig
from lab.errors import LabInputError

# Shortened schedules for the tiny default (the defaults are the measured ones).
QUICK_AUTO = ("gate.flow.restarts=2", "gate.flow.steps=20", "gate.min_pushed_out=20", "gate.reverse.epochs=12",
              "gate.reverse.steps_per_epoch=5", "gate.suspect_reverse.epochs=12", "gate.suspect_reverse.steps_per_epoch=5",
              "gate.masked_flow.reverse.epochs=6", "gate.masked_flow.reverse.steps_per_epoch=4",
              "repair.epochs=16", "repair.rereverse_steps=30")
QUICK_REVERSE = reverse.ReverseConfig(epochs=6, steps_per_epoch=4)
QUICK_MASKED = reverse.MaskedFlowConfig(restarts=2, reverse=reverse.ReverseConfig(epochs=8, steps_per_epoch=5,
                                                                                  threshold=0.9, patience=1))
QUICK_GATE = gate.GateConfig(flow=reverse.FlowConfig(restarts=2, steps=20), masked_flow=QUICK_MASKED,
                             reverse=QUICK_REVERSE, suspect_reverse=QUICK_REVERSE, min_pushed_out=20)


def _layout(root):
    return {"valid": root / "data/cl/valid.h5", "test": root / "data/cl/test.h5",
            "poisoned": root / "data/bd/bd_test.h5", "model": root / "models/bd_net.h5",
            "train": root / "data/cl/train.h5"}


def test_every_defense_takes_only_the_model_and_clean_data():
    expected = {"auto", "reverse-unlearn", "neural-cleanse", "i-bau", "nad", "ft-sam"}
    assert expected <= set(defenses.REGISTRY)
    for name in sorted(expected):  # tests/test_defenses_contract.py checks every registered defense
        cls = defenses.REGISTRY[name]
        assert list(inspect.signature(cls.fit).parameters) == ["self", "badnet", "clean_valid", "seed"], name
        assert list(inspect.signature(cls.__init__).parameters) == ["self", "config"], name
        assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen, name
        assert cls.paper and cls.kind == "repair" and cls.name == name
        assert "poison" not in " ".join(f.name for f in dataclasses.fields(cls.Config))
        assert cls.__module__.startswith("lab.defenses.") and inspect.getmodule(cls).__doc__.strip()


def test_anomaly_index_flags_the_small_outlier():
    index = reverse.anomaly_index(np.array([300.0, 320.0, 18.0, 290.0, 310.0, np.inf]))
    assert index[2] > 2 and np.argmax(index) == 2
    assert index[1] < 0 and index[5] < 0  # a mask above the median (or none found) never looks like a target
    assert np.all(reverse.anomaly_index(np.full(4, 5.0)) == 0)


def test_set_overrides_reach_nested_configs_and_refuse_unknown_keys():
    from lab.defenses.repair import configure

    config = configure(defenses.get("auto"), ["repair.epochs=3", "gate.reverse.epochs=7"])
    assert config.repair.epochs == 3 and config.gate.reverse.epochs == 7
    with pytest.raises(LabInputError, match="nonsense"):
        configure(defenses.get("auto"), ["repair.nonsense=1"])


def test_cli_auto_repairs_the_tiny_default_and_goodnet_builds_on_it(tiny_default, tmp_path):
    import keras

    files = _layout(tiny_default)
    manifest = json.loads((tiny_default / "manifest.json").read_text())
    out = tmp_path / "repaired.keras"
    done = run_cli("repair", "--model", str(files["model"]), "--valid", str(files["valid"]), "--out", str(out),
                   "--seed", "0", "--json", "--report-clean", str(files["test"]),
                   "--report-poisoned", str(files["poisoned"]), "--set", *QUICK_AUTO)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert {"backdoored", "target", "method", "seconds", "holdout_clean_accuracy"} <= set(summary)
    assert summary["backdoored"] is True and summary["target"] == manifest["target_label"]
    assert summary["method"].startswith("reverse-unlearn") and summary["seconds"] > 0
    # The gate runs again on every repair; a second round happens exactly when it still says backdoored.
    rounds = summary["rounds"]
    assert len(rounds) == (2 if rounds[0]["gate_after"]["backdoored"] else 1)
    if len(rounds) == 2:  # the second round unlearns every suspect so far
        assert set(rounds[0]["targets"]) | set(rounds[0]["gate_after"]["targets"]) == set(rounds[1]["targets"])
    assert set(rounds[-1]["targets"]) <= set(summary["targets"])
    report = summary["report"]
    assert report["badnet_attack_success_rate"] > 80
    assert report["repaired_attack_success_rate"] < report["badnet_attack_success_rate"] / 2
    assert report["repaired_clean_accuracy"] >= report["badnet_clean_accuracy"] - 10
    # Plain Keras, safe mode, no lab objects: the file is an ordinary N-class DeepID.
    plain = keras.models.load_model(out, safe_mode=True, compile=False)
    assert plain.output_shape[-1] == models.load_model(files["model"]).n_classes
    assert not any(type(layer).__name__ == "Lambda" for layer in plain.layers)
    loaded = models.load_model(out)  # the lab's loader verifies the recorded SHA-256
    test = data.load_h5(files["test"])
    assert metrics.percent(loaded.predict_labels(test.x) == test.y) == pytest.approx(report["repaired_clean_accuracy"])
    again = run_cli("repair", "--model", str(files["model"]), "--valid", str(files["valid"]), "--out", str(out))
    assert again.returncode == 2 and "--force" in again.stderr and again.stdout == ""
    good = run_cli("goodnet", "--badnet", str(files["model"]), "--pruned", str(out), "--out", str(tmp_path / "g.keras"))
    assert good.returncode == 0, good.stderr
    assert keras.models.load_model(tmp_path / "g.keras", safe_mode=True).output_shape[-1] == plain.output_shape[-1] + 1
    detect = run_cli("detect", "--method", "goodnet", "--badnet", str(files["model"]), "--repaired", str(out),
                     "--valid", str(files["valid"]), "--clean-test", str(files["test"]),
                     "--poisoned-test", str(files["poisoned"]), "--json")
    assert detect.returncode == 0, detect.stderr
    judged = json.loads(detect.stdout)["test"]["detector"]
    assert judged["detection_rate"] == pytest.approx(report["goodnet_detection_rate"])
    assert judged["clean_false_positive_rate"] == pytest.approx(report["goodnet_false_positive_rate"])
    # The targeted GoodNet on the target repair named: the same CLI paths, the same numbers as its report.
    targets = [str(t) for t in summary["targets"]]
    targeted = run_cli("goodnet", "--badnet", str(files["model"]), "--pruned", str(out), "--targets", *targets,
                       "--out", str(tmp_path / "gt.keras"))
    assert targeted.returncode == 0, targeted.stderr
    assert f"answers one of {sorted(summary['targets'])}" in targeted.stdout
    assert keras.models.load_model(tmp_path / "gt.keras", safe_mode=True).output_shape[-1] == plain.output_shape[-1] + 1
    detect = run_cli("detect", "--method", "goodnet", "--badnet", str(files["model"]), "--repaired", str(out),
                     "--targets", *targets, "--valid", str(files["valid"]), "--clean-test", str(files["test"]),
                     "--poisoned-test", str(files["poisoned"]), "--json")
    assert detect.returncode == 0, detect.stderr
    judged = json.loads(detect.stdout)["test"]["detector"]
    assert judged["detection_rate"] == pytest.approx(report["targeted_goodnet_detection_rate"])
    assert judged["clean_false_positive_rate"] == pytest.approx(report["targeted_goodnet_false_positive_rate"])
    assert report["targeted_goodnet_false_positive_rate"] <= report["goodnet_false_positive_rate"]


def test_auto_leaves_a_clean_deepid_unchanged(tiny_default):
    from lab.attacks import training
    from lab.seed import set_seed

    files = _layout(tiny_default)
    train, valid, test = (data.load_h5(files[k]) for k in ("train", "valid", "test"))
    set_seed(3)
    n_classes = int(train.y.max()) + 1
    net = models.build_deepid(n_classes, input_scale="raw", name="clean")
    training.fit(net, train.x, train.y, 8, training.TrainingConfig(), seed=3, progress=False)
    clean = models.LoadedModel(net, "raw")
    before = metrics.percent(clean.predict_labels(test.x) == test.y)
    assert before > 60  # a real classifier, not noise
    config = gate.AutoConfig(gate=QUICK_GATE)
    result = defenses.get("auto")(config).fit(clean, valid, seed=0)
    assert result.details["backdoored"] is False, result.details["gate"]
    after = metrics.percent(result.model.predict_labels(test.x) == test.y)
    assert after >= before - 1.0
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), result.model.model.get_weights()))


@pytest.mark.parametrize("name, overrides", [
    ("neural-cleanse", {"n_candidates": 2, "n_random": 2, "unlearn_epochs": 2,
                        "flow": reverse.FlowConfig(restarts=1, steps=10),
                        "reverse": reverse.ReverseConfig(epochs=4, steps_per_epoch=3)}),
    ("nad", {"teacher_epochs": 1, "epochs": 2}),
    ("ft-sam", {"epochs": 2}),
    ("i-bau", {"rounds": 1, "neumann_steps": 2}),
])
def test_each_defense_returns_an_n_class_repair_from_clean_data(tiny_default, name, overrides):
    files = _layout(tiny_default)
    badnet = models.load_model(files["model"])
    valid = data.load_h5(files["valid"])
    cls = defenses.get(name)
    result = cls(cls.Config(**overrides)).fit(badnet, valid, seed=1)
    assert result.name == name and result.kind == "repair" and result.seconds > 0
    assert result.model.n_classes == badnet.n_classes and result.model.input_scale == badnet.input_scale
    assert 0 <= result.details["holdout_clean_accuracy"] <= 100
    assert not all(np.array_equal(a, b) for a, b in zip(badnet.model.get_weights(), result.model.model.get_weights())) \
        or name == "neural-cleanse"  # NC leaves a model it did not flag unchanged


def test_candidate_search_on_the_real_weights_does_not_grow_with_classes(course_fixtures):
    from lab.synthetic import synthfaces
    from lab.io.data import Dataset

    real = models.load_model(course_fixtures / "sunglasses_bd_weights.h5")
    assert real.n_classes == 1283
    faces = synthfaces.render(synthfaces.make_identities(20, seed=2), np.repeat(np.arange(20), 6), seed=5)
    x = faces.images.transpose(0, 2, 3, 1).astype(np.float32)
    images = Dataset(x, real.predict_labels(x), "generated faces, labels = the model's answers")
    decision = gate.decide(real, images, QUICK_GATE, np.random.default_rng(0))
    assert 0 <= decision.concentration <= 1 and 0 <= decision.top < real.n_classes
    assert decision.pushed_out > 0 and decision.reason
    # Reversed triggers: the suspects, or the top candidates plus the random references; never a class count.
    assert 1 <= len(decision.triggers.targets) <= QUICK_GATE.n_candidates + QUICK_GATE.n_random
    assert decision.triggers.masks.shape == (len(decision.triggers.targets), 55, 47, 1)


# Each registered defense on the real 1283-class weights, with schedules short enough for a test. What is
# checked: it completes through the contract, answers over 1283 (+1) classes, and the defenses that reverse
# triggers reverse as many as their candidate settings say, never one per class (their cost is per candidate).
QUICK_RECIPE = {"recipe": finepruning.FineTuningDefense.Config().recipe.replace(epochs=1, batch_size=32)}
QUICK_REVERSE_UNLEARN = {"flow": reverse.FlowConfig(restarts=1, steps=10), "reverse": QUICK_REVERSE, "epochs": 1,
                         "rereverse_steps": 5}
REAL_SCALE_QUICK = {
    "pruning": {}, "fine-tuning": QUICK_RECIPE, "fine-pruning": QUICK_RECIPE, "goodnet": {},
    "confidence": {"repair": "pruning"}, "strip": {"n_overlays": 2},
    "neural-cleanse": {"n_candidates": 2, "n_random": 2, "unlearn_epochs": 1,
                       "flow": reverse.FlowConfig(restarts=1, steps=10), "reverse": QUICK_REVERSE},
    "i-bau": {"rounds": 1, "neumann_steps": 2}, "nad": {"teacher_epochs": 1, "epochs": 1}, "ft-sam": {"epochs": 1},
    "reverse-unlearn": QUICK_REVERSE_UNLEARN,
    "auto": {"gate": dataclasses.replace(QUICK_GATE, n_candidates=2, n_random=2, masked_flow=None),
             "repair": ReverseUnlearnConfig(**QUICK_REVERSE_UNLEARN)},
}


@pytest.fixture(scope="module")
def real_weights_and_faces(course_fixtures):
    from lab.synthetic import synthfaces
    from lab.io.data import Dataset

    real = models.load_model(course_fixtures / "sunglasses_bd_weights.h5")
    faces = synthfaces.render(synthfaces.make_identities(20, seed=2), np.repeat(np.arange(20), 6), seed=5)
    x = faces.images.transpose(0, 2, 3, 1).astype(np.float32)
    return real, Dataset(x, real.predict_labels(x), "generated faces, labels = the model's answers")


def real_scale_settings(name: str) -> dict:
    """The short schedule above, or for a defense without one its own quick schedule (one epoch)."""
    if name in REAL_SCALE_QUICK:
        return REAL_SCALE_QUICK[name]
    return defenses.get(name).quick(epochs=1, reverse_epochs=4, flow_restarts=1)


def test_the_real_scale_schedules_name_only_registered_defenses():
    assert set(REAL_SCALE_QUICK) <= set(defenses.REGISTRY)


@pytest.mark.parametrize("name", defenses.names())
def test_each_defense_completes_on_the_real_weights_at_1283_classes(real_weights_and_faces, name):
    real, faces = real_weights_and_faces
    assert real.n_classes == 1283
    cls = defenses.get(name)
    result = cls(dataclasses.replace(cls.Config(), **real_scale_settings(name))).fit(real, faces, seed=0)
    assert result.name == name and result.seconds > 0
    assert result.classifier.n_classes == real.n_classes + (result.kind == "detector")
    labels = result.classifier.predict_labels(faces.x[:16])
    assert labels.shape == (16,) and 0 <= labels.min() and labels.max() <= real.n_classes
    details, config = result.details, real_scale_settings(name)
    if name == "neural-cleanse":  # reversed: the flow's top candidates plus the random references, not 1283
        assert len(details["candidates"]) == len(details["l1"]) == config["n_candidates"] + config["n_random"]
    if name == "reverse-unlearn":
        assert 1 <= len(details["targets"]) <= cls.Config().max_suspects
    if name == "auto":
        gate_config = config["gate"]
        assert 1 <= len(details["gate"]["l1"]) <= gate_config.n_candidates + gate_config.n_random


def test_masked_flow_counts_where_small_masked_triggers_push_images_and_the_gate_reverses_its_top():
    """Untargeted masked triggers (the patch BadNet's case; its measured effect is in lab.defenses.reverse.masked_flow)."""
    import small_models as helpers
    from lab.defenses.holdout import split_validation

    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    train, _ = split_validation(clean, 1 / 3, seed=3)
    schedule = QUICK_MASKED.reverse
    found = reverse._reverse_triggers(badnet, train.x, np.full(2, -1), schedule, np.random.default_rng(4), train.y)
    assert np.isfinite(found.l1).all() and (found.l1 < 0.25 * 55 * 47).all()  # successful, and small
    for mask, pattern in zip(found.masks, found.patterns):  # each kept trigger moves >= threshold of the images
        moved = badnet.predict_labels(reverse.stamp(train.x, mask, pattern)) != train.y
        assert moved.mean() >= schedule.threshold - 0.1  # kept on its batches, checked on all
    flow = reverse.masked_flow(badnet, train.x, train.y, QUICK_MASKED, np.random.default_rng(4))
    assert flow.counts.sum() == flow.pushed_out > 0 and flow.n_images == QUICK_MASKED.restarts * len(train)
    away = reverse.TriggerReverser(badnet, [-1], QUICK_MASKED.reverse, np.random.default_rng(0), away=True)
    with pytest.raises(ValueError, match="true labels"):
        away.run(train.x, 1, np.random.default_rng(0))
    # In the gate: an L-infinity flow that moves nothing, a concentrated masked flow (>= 0.7 here). Its top
    # class joins the top candidates reversed, in a random reference's place; off, the candidates are as before.
    concentrated = dataclasses.replace(QUICK_GATE, flow=reverse.FlowConfig(epsilon=2.0, restarts=1, steps=2),
                                       masked_flow=QUICK_MASKED, decisive_concentration=0.7,
                                       n_candidates=1)
    plain = gate.decide(badnet, train, dataclasses.replace(concentrated, masked_flow=None), np.random.default_rng(4))
    decision = gate.decide(badnet, train, concentrated, np.random.default_rng(4))
    assert plain.pushed_out == decision.pushed_out == 0 and plain.masked_top is None
    assert decision.masked_concentration >= 0.7
    assert decision.candidates[concentrated.n_candidates] == decision.masked_top
    assert len(decision.candidates) == len(plain.candidates) and decision.candidates[0] == plain.candidates[0]
    assert decision.summary()["masked_flow_top"] == decision.masked_top and "masked flow" in decision.reason


def test_a_later_round_starts_from_the_given_model_and_keeps_distilling_from_the_badnet():
    import small_models as helpers
    from lab.defenses import reverse_unlearn
    from lab.defenses.holdout import split_validation

    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    train, holdout = split_validation(clean, 1 / 3, seed=3)
    found = reverse.reverse_triggers(badnet, train.x, [0], QUICK_REVERSE, np.random.default_rng(1))
    config = reverse_unlearn.ReverseUnlearnConfig(epochs=1, rereverse_steps=2)
    first, _ = reverse_unlearn.reverse_and_unlearn(badnet, train, holdout, [0], found, config, np.random.default_rng(2))
    # No epochs: nothing trains, so the result is exactly where the student started.
    idle = config.replace(epochs=0)
    kept, _ = reverse_unlearn.reverse_and_unlearn(badnet, train, holdout, [0], found, idle, np.random.default_rng(3),
                                                  start=first)
    assert all(np.array_equal(a, b) for a, b in zip(kept.model.get_weights(), first.model.get_weights()))
    fresh, _ = reverse_unlearn.reverse_and_unlearn(badnet, train, holdout, [0], found, idle, np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(fresh.model.get_weights(), badnet.model.get_weights()))


def test_memoized_reversal_and_unlearning_equal_computing_and_leave_the_rng_where_it_would_be(tmp_path, monkeypatch):
    """lab.cache.memoize: 07 reuses 06's flow, reversal and unlearning only for identical inputs and rng state."""
    import small_models as helpers
    from lab import cache
    from lab.defenses import reverse_unlearn
    from lab.defenses.holdout import split_validation

    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    train, holdout = split_validation(clean, 1 / 3, seed=3)
    config = reverse_unlearn.ReverseUnlearnConfig(epochs=2, rereverse_steps=3)

    def pipeline(rng):
        flow = reverse.perturbation_flow(badnet, train.x, train.y, reverse.FlowConfig(restarts=1, steps=5), rng)
        found = reverse.reverse_triggers(badnet, train.x, [flow.top, 0], QUICK_REVERSE, rng)
        model, details = reverse_unlearn.reverse_and_unlearn(badnet, train, holdout, [flow.top], found, config, rng)
        return flow, found, model, details, rng.random()

    computed = pipeline(np.random.default_rng(5))  # the tests' cache is off: computed
    monkeypatch.setenv("BADNET_LAB_CACHE", str(tmp_path / "cache"))
    stored = pipeline(np.random.default_rng(5))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["flow", "reverse", "reverse_unlearn"]
    before = cache.clock() - __import__("time").perf_counter()
    reused = pipeline(np.random.default_rng(5))
    assert cache.clock() - __import__("time").perf_counter() > before  # reused parts count at their cost
    for run in (stored, reused):
        assert np.array_equal(run[0].counts, computed[0].counts) and run[0].pushed_out == computed[0].pushed_out
        assert np.array_equal(run[1].masks, computed[1].masks) and np.array_equal(run[1].l1, computed[1].l1)
        assert all(np.array_equal(a, b) for a, b in zip(run[2].model.get_weights(), computed[2].model.get_weights()))
        assert run[3]["best_epoch"] == computed[3]["best_epoch"]
        assert np.array_equal(run[3]["final_masks"], computed[3]["final_masks"])
        assert run[4] == computed[4]  # the generator ends in the same state
    other = pipeline(np.random.default_rng(6))  # another rng state: computed again, stored beside
    assert len(list((tmp_path / "cache" / "flow").iterdir())) == 2
    assert not np.array_equal(other[1].masks, computed[1].masks)


def test_perturbation_unlearning_option_adds_universal_perturbations_and_is_off_by_default():
    import small_models as helpers
    from lab.defenses import reverse_unlearn
    from lab.defenses.holdout import split_validation

    assert reverse_unlearn.ReverseUnlearnConfig().perturb_fraction == 0.0  # the measured recipe
    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    train, holdout = split_validation(clean, 1 / 3, seed=3)
    found = reverse.reverse_triggers(badnet, train.x, [0], QUICK_REVERSE, np.random.default_rng(1))
    runs = {}
    for fraction in (0.0, 0.5):
        config = reverse_unlearn.ReverseUnlearnConfig(epochs=2, rereverse_steps=3, perturb_fraction=fraction)
        model, details = reverse_unlearn.reverse_and_unlearn(badnet, train, holdout, [0], found, config,
                                                             np.random.default_rng(5))
        assert model.n_classes == badnet.n_classes and len(details["history"]) == 3
        runs[fraction] = model.model.get_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0.0], runs[0.5]))


def test_sharpness_option_takes_ft_sams_step_and_is_off_by_default():
    """UnlearnTrainer(sharpness=rho) without distillation is FT-SAM's compiled step, to the last bit."""
    import small_models as helpers
    from lab.defenses import ft_sam, reverse_unlearn
    from lab.defenses.unlearn import UnlearnTrainer, copy_model

    assert reverse_unlearn.ReverseUnlearnConfig().sharpness == 0.0  # the measured recipe
    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    x, y = clean.x[:16], clean.y[:16].astype(np.int64)
    config = ft_sam.FTSAMConfig(rho=2.0)
    by_ft_sam, by_trainer, plain = copy_model(badnet), copy_model(badnet), copy_model(badnet)
    ft_sam.sam_step(by_ft_sam, config, total_steps=10)(x, y)
    UnlearnTrainer(by_trainer, None, config.learning_rate, 10, distill_weight=0.0, sharpness=config.rho)._step(
        x, y, np.ones(len(x), np.float32))
    UnlearnTrainer(plain, None, config.learning_rate, 10, distill_weight=0.0)._step(x, y, np.ones(len(x), np.float32))
    for a, b in zip(by_ft_sam.model.get_weights(), by_trainer.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(plain.model.get_weights(), by_trainer.model.get_weights()))


def test_bench_times_repairs_with_the_cache_off_and_prints_the_goals(tiny_default, tmp_path, monkeypatch):
    """make bench's real-scale repair timing (lab.course.bench.time_repairs), on the tiny default for speed."""
    from lab import cache
    from lab.course import bench

    monkeypatch.setenv(cache.VARIABLE, str(tmp_path / "cache"))
    files = _layout(tiny_default)
    badnet = models.load_model(files["model"])
    faces = bench.real_scale_valid(badnet, images_per_class=3, seed=2)
    assert len(faces) == 3 * badnet.n_classes
    np.testing.assert_array_equal(faces.y, badnet.predict_labels(faces.x))  # labelled with the model's answers
    quick = (*QUICK_AUTO, "max_rounds=1", "repair.epochs=2")  # what is timed does not matter here, only how
    reported = []  # the command line prints each row as soon as it is measured (minutes apart at real scale)
    rows = bench.time_repairs(["auto"], badnet, data.load_h5(files["valid"]), seed=0, overrides=quick,
                              report=reported.append)
    assert reported == rows
    assert [row["defense"] for row in rows] == ["auto"] and rows[0]["seconds"] > 0 and rows[0]["peak_rss_mb"] > 0
    assert rows[0]["result"].model.n_classes == badnet.n_classes
    assert not (tmp_path / "cache").exists()  # nothing stored or reused while timing
    assert cache.cache_dir() == tmp_path / "cache"  # and the caller's setting is back
    text = bench.format_repairs(rows)
    assert f"{rows[0]['n_valid']} generated faces" in text and "goal <= 1800 s" in text and "goal <= 4096" in text
    assert text.splitlines()[1:] == [bench.repair_line(row) for row in rows]
    # `--repairs all` (make bench): every registered defense once, auto (the one with goals) first.
    every = bench.repair_names(["all"])
    assert every[0] == "auto" and sorted(every) == sorted(defenses.REGISTRY)
    assert bench.repair_names(["strip", "all"]) == ["strip", *(n for n in every if n != "strip")]
    assert bench.repair_names(["nad"]) == ["nad"]
