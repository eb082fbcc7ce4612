"""Every registered defense meets the contract of lab.defenses.base; none takes poisoned data.

The registry is discovered: every test here runs over whatever modules
``lab/defenses/`` holds, and one test deletes a defense's file in a copy of
the package to show it is then gone from the registry and the command line.
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil
import subprocess
import sys

import numpy as np
import pytest

import small_models as helpers
from lab import defenses, evaluation
from lab.defenses import base, finepruning, oracle
from lab.errors import LabInputError
from lab.io.models import LoadedModel, save_model

REGISTERED = sorted(defenses.REGISTRY)


def test_the_registry_is_ordered_by_each_defenses_table_order_field():
    """07's table order is the ``table_order`` field's, whatever order the modules were imported in."""
    orders = [defense.table_order for defense in defenses.REGISTRY.values()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders), dict(zip(defenses.REGISTRY, orders))
    assert defenses.names() == list(defenses.REGISTRY)
    assert set(defenses.names("repair")) | set(defenses.names("detector")) == set(defenses.REGISTRY)
    first = next(iter(defenses.REGISTRY))
    assert defenses.get(first) is defenses.REGISTRY[first]
    with pytest.raises(LabInputError, match=f"a defense in {first}"):
        defenses.get("no-such-defense")


def test_register_keeps_the_field_order_and_refuses_a_defense_without_one():
    last = max(defense.table_order for defense in defenses.REGISTRY.values())

    @dataclasses.dataclass(frozen=True)
    class Settings:
        """Nothing to set."""

    def fit(self, badnet, clean_valid, seed=0):
        raise NotImplementedError

    early = type("Early", (base.Defense,), {"name": "test-early", "kind": "repair", "paper": "none",
                                            "Config": Settings, "table_order": -1, "fit": fit})
    late = type("Late", (base.Defense,), {"name": "test-late", "kind": "detector", "paper": "none",
                                          "Config": Settings, "table_order": last + 1, "fit": fit})
    try:
        base.register(late)
        base.register(early)  # registered last, listed first
        assert defenses.names()[0] == "test-early" and defenses.names()[-1] == "test-late"
        assert defenses.names("detector")[-1] == "test-late" and "test-late" not in defenses.names("repair")
    finally:
        del defenses.REGISTRY["test-early"], defenses.REGISTRY["test-late"]
    unordered = type("Unordered", (base.Defense,), {"name": "test-unordered", "kind": "repair", "paper": "none",
                                                    "Config": Settings, "fit": fit})
    with pytest.raises(ValueError, match="table_order"):
        base.register(unordered)
    assert "test-unordered" not in defenses.REGISTRY


def test_deleting_a_defense_file_removes_it_from_the_registry_and_the_command_line(tmp_path):
    """A copy of the package without one defense's module: gone from the registry, repair's and detect's help."""
    import lab

    for victim, command in ((defenses.get("nad"), "repair"), (defenses.get("strip"), "detect")):
        copy = tmp_path / victim.name / "lab"
        shutil.copytree(lab.__path__[0], copy, ignore=shutil.ignore_patterns("__pycache__"))
        (copy / "defenses" / (victim.__module__.rsplit(".", 1)[1] + ".py")).unlink()
        code = ("import sys, lab.defenses, lab.cli; print(' '.join(lab.defenses.REGISTRY)); "
                f"lab.cli.main(['{command}', '--help'])")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=copy.parent,
                              env={"PYTHONPATH": str(copy.parent), "PATH": "", "COLUMNS": "10000"}, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        listed, help_text = done.stdout.split("\n", 1)
        gone = [name for name, defense in defenses.REGISTRY.items() if defense.__module__ == victim.__module__]
        assert victim.name in gone and listed.split() == [name for name in defenses.REGISTRY if name not in gone]
        assert f"{victim.name}:" not in help_text and "--method" in help_text
        others = [name for name in defenses.names(victim.kind) if name not in gone]
        assert all(f"{name}:" in help_text for name in others), help_text


@pytest.mark.parametrize("name", REGISTERED)
def test_class_attributes_and_a_frozen_documented_config(name):
    defense = defenses.REGISTRY[name]
    assert issubclass(defense, base.Defense) and defense.name == name
    assert defense.kind in base.KINDS and defense.paper.strip() and not defense.oracle
    assert dataclasses.is_dataclass(defense.Config) and defense.Config.__dataclass_params__.frozen
    assert defense.Config.__doc__ and all(field.default is not dataclasses.MISSING for field in
                                          dataclasses.fields(defense.Config))
    assert defense().config == defense.Config() and defense(defense.Config()).config == defense.Config()
    with pytest.raises(LabInputError):
        defense(object())
    assert isinstance(defense.table_order, int) and defense.summary() and isinstance(defense.decides, bool)
    # Its quick schedule is a valid set of Config overrides, with or without scaled schedules.
    for quick in (defense.quick(), defense.quick(epochs=1, reverse_epochs=2, flow_restarts=1, holdout_fraction=0.25)):
        assert isinstance(defense(dataclasses.replace(defense.Config(), **quick)).config, defense.Config)


@pytest.mark.parametrize("name", REGISTERED)
def test_no_registered_defense_takes_poisoned_data(name):
    """The contract: B, clean validation data, a seed, a config. Nothing that could carry poisoned data."""
    defense = defenses.REGISTRY[name]
    fit = inspect.signature(defense.fit)
    assert list(fit.parameters) == ["self", "badnet", "clean_valid", "seed"], fit
    init = inspect.signature(defense.__init__)
    assert list(init.parameters) == ["self", "config"], init
    fields = [field.name for field in dataclasses.fields(defense.Config)]
    assert not [f for f in fields if "poison" in f or "trigger" in f or "target" in f], fields


def test_the_oracle_is_labelled_and_kept_out_of_the_registry():
    # The one exception, on purpose: oracle pruning ranks channels with poisoned data, so it is
    # not a defense a defender can run. It keeps the result shape for tables but is never registered.
    assert oracle.OraclePruning.oracle and "poisoned_valid" in inspect.signature(oracle.OraclePruning.fit).parameters
    assert oracle.OraclePruning not in defenses.REGISTRY.values()
    with pytest.raises(ValueError, match="poisoned data"):
        base.register(oracle.OraclePruning)


def _decision_fields(result):
    """The decision fields every defense fills the same way (lab.defenses.base.DefenseResult)."""
    assert result.backdoored in (None, True, False) and isinstance(result.targets, list)
    assert all(isinstance(t, int) and 0 <= t < helpers.N_CLASSES for t in result.targets), result.targets
    assert result.method is None or (isinstance(result.method, str) and result.method)
    if result.backdoored is None:  # it did not judge the model, so it named no targets
        assert result.targets == [] and not defenses.get(result.name).decides
    if result.targets:
        assert result.backdoored is True


@pytest.mark.parametrize("name", defenses.names("repair"))
def test_every_repair_fits_on_its_quick_schedule_and_fills_the_decision_fields(name):
    """Every registered repair through the contract on a small real BadNet, with ``quick`` (short) schedules."""
    from lab.defenses.repair import decision

    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    defense = defenses.get(name)
    result = defenses.build(name, badnet, clean, seed=3, **defense.quick(epochs=1, reverse_epochs=2, flow_restarts=1))
    assert result.name == name and result.kind == "repair" and result.model is result.classifier
    _meets_classifier(result.classifier, badnet.n_classes, None)
    _decision_fields(result)
    summary = decision(result)
    assert summary["backdoored"] is result.backdoored and summary["targets"] == result.targets
    assert summary["method"] == result.method_run and summary["seconds"] == result.seconds


def _meets_classifier(classifier, n_classes: int, backdoor_class):
    assert isinstance(classifier, base.Classifier)
    assert classifier.n_classes == n_classes and classifier.backdoor_class == backdoor_class
    assert isinstance(classifier.metadata, dict)
    clean, _ = helpers.datasets()
    labels = classifier.predict_labels(clean.x[:20], batch_size=8)
    assert labels.dtype == np.int64 and labels.shape == (20,) and labels.min() >= 0 and labels.max() < n_classes


def test_repairs_and_detectors_return_classifiers_of_n_and_n_plus_1_classes(tmp_path):
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    n = badnet.n_classes
    assert badnet.backdoor_class is None  # a plain LoadedModel meets the protocol too
    _meets_classifier(badnet, n, None)

    pruned = defenses.build("pruning", badnet, clean, seed=3, threshold=1.0)
    assert pruned.kind == "repair" and pruned.model is pruned.classifier and pruned.seconds > 0
    _decision_fields(pruned)
    _meets_classifier(pruned.classifier, n, None)
    assert pruned.details["pruned_channels"] and pruned.details["pruned_layer"] == "conv_3"
    save_model(pruned.model.model, tmp_path / "pruned.h5", pruned.model.input_scale)  # saveable as it is

    quick = finepruning.RECIPES["augmented"].replace(epochs=1, batch_size=16)
    tuned = defenses.get("fine-tuning")(defenses.get("fine-tuning").Config(recipe=quick)).fit(badnet, clean, 3)
    _meets_classifier(tuned.classifier, n, None)
    assert tuned.details["pruned_channels"] == []

    for name, config in (("goodnet", {"repair": pruned}), ("confidence", {"repair": pruned}),
                         ("strip", {"n_overlays": 4})):
        result = defenses.build(name, badnet, clean, seed=3, **config)
        assert result.kind == "detector" and result.model is None
        _meets_classifier(result.classifier, n + 1, n)
        _decision_fields(result)
        if "repair" in config:  # a detector built on an earlier repair counts that repair's time
            assert result.seconds >= pruned.seconds and result.details["repair"] == "pruning"
        table = evaluation.comparison_table({name: result.classifier}, clean, poisoned)
        assert table.loc[name, "backdoor_class"] == n and 0 <= table.loc[name, "detection_rate"] <= 100


def test_a_detector_refuses_to_wrap_a_detector():
    badnet = helpers.trained_deepid()
    clean, _ = helpers.datasets()
    strip = defenses.build("strip", badnet, clean, seed=3, n_overlays=2)
    with pytest.raises(LabInputError, match="repair defense"):
        defenses.build("goodnet", badnet, clean, seed=3, repair=strip)


def test_a_loaded_model_reports_the_backdoor_class_its_sidecar_records():
    keras_model = helpers.trained_deepid().model
    assert LoadedModel(keras_model, "unit", metadata={"backdoor_class": 5}).backdoor_class == 5
    assert LoadedModel(keras_model, "unit").backdoor_class is None
