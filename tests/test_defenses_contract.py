"""Every registered defense meets the contract of lab.defenses.base; none takes poisoned data."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

import small_models as helpers
from lab import defenses, evaluation
from lab.defenses import base, finepruning, oracle
from lab.errors import LabInputError
from lab.io.models import LoadedModel, save_model

REGISTERED = sorted(defenses.REGISTRY)


def test_the_lab_registers_its_defenses_in_the_order_of_06():
    assert list(defenses.REGISTRY) == ["pruning", "fine-tuning", "fine-pruning", "goodnet", "confidence", "strip",
                                       "neural-cleanse", "i-bau", "nad", "ft-sam", "reverse-unlearn", "auto"]
    assert defenses.get("strip") is defenses.REGISTRY["strip"]
    with pytest.raises(LabInputError, match="a defense in pruning"):
        defenses.get("no-such-defense")


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
