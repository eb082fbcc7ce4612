"""Rates on hand-made predictions, the CSR/CFR and ATR/DTR breakdown, evaluate() on GoodNets, the table."""

from __future__ import annotations

import math

import numpy as np
import pytest

import small_models as helpers
from lab import evaluation
from lab.defenses import goodnet
from lab.evaluation import metrics
from lab.io.data import Dataset
from lab.errors import LabInputError

RED, GREEN, BLUE = 0, 1, 2
N = 5  # backdoor class of a 5-class GoodNet


def test_rates_on_hand_made_predictions():
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    predicted = np.array([0, 1, 2, 3, N, N, 0, 2, 3, 4])
    assert metrics.clean_accuracy(predicted, labels) == pytest.approx(70.0)
    assert metrics.clean_false_positive_rate(predicted, N) == pytest.approx(20.0)
    targets = np.zeros(8, np.int64)
    poisoned_predicted = np.array([0, 0, 0, N, N, 3, 1, 0])
    assert metrics.attack_success_rate(poisoned_predicted, targets) == pytest.approx(50.0)
    assert metrics.detection_rate(poisoned_predicted, N) == pytest.approx(25.0)


def test_breakdown_parts_sum_to_100_within_each_set():
    rng = np.random.default_rng(0)
    labels, targets = rng.integers(0, N, 200), np.full(150, 2)
    parts = metrics.breakdown(rng.integers(0, N + 1, 200), labels, rng.integers(0, N + 1, 150), targets, N)
    assert parts["clean_accuracy"] + parts["clean_false_positive_rate"] + parts["clean_other"] == pytest.approx(100)
    assert parts["attack_success_rate"] + parts["detection_rate"] + parts["poisoned_other"] == pytest.approx(100)
    assert all(0 <= value <= 100 for value in parts.values())
    assert set(metrics.SHORT_NAMES.values()) <= set(parts)


def test_breakdown_without_poisoned_data_and_empty_sets():
    parts = metrics.breakdown(np.array([1, N]), np.array([1, 1]), None, None, N)
    assert parts["clean_accuracy"] == 50 and parts["clean_false_positive_rate"] == 50
    assert math.isnan(parts["detection_rate"]) and math.isnan(parts["poisoned_other"])
    assert math.isnan(metrics.clean_accuracy(np.array([], int), np.array([], int)))


@pytest.fixture(scope="module")
def colour_sets():
    """Clean red/green/blue faces labelled by colour; 'poisoned' green faces with target 0."""
    clean = Dataset(helpers.colour_images([RED, GREEN, BLUE] * 2), np.array([0, 1, 2] * 2), "clean")
    poisoned = Dataset(helpers.colour_images([GREEN] * 4), np.zeros(4, np.int64), "poisoned")
    return clean, poisoned


@pytest.fixture(scope="module")
def colour_models():
    badnet = helpers.colour_classifier((0, 1, 2), "badnet")
    return badnet, goodnet.build_goodnet(badnet, helpers.colour_classifier((0, 2, 1), "pruned"))


def test_evaluate_reports_detection_for_a_goodnet_only(colour_sets, colour_models):
    badnet, repaired = colour_models
    plain = evaluation.evaluate(badnet, *colour_sets)
    assert "detection_rate" not in plain and plain["clean_accuracy"] == 100 and plain["attack_success_rate"] == 0
    result = evaluation.evaluate(repaired, *colour_sets)
    assert result["backdoor_class"] == 3
    assert result["clean_accuracy"] == pytest.approx(100 / 3)  # red right; green and blue flagged
    assert result["clean_false_positive_rate"] == pytest.approx(200 / 3)
    assert result["detection_rate"] == 100 and result["attack_success_rate"] == 0
    without_poisoned = evaluation.evaluate(repaired, colour_sets[0])
    assert without_poisoned["detection_rate"] is None


def test_evaluate_with_an_explicit_backdoor_class(colour_sets, colour_models):
    _, repaired = colour_models
    foreign = type(repaired)(repaired.model, repaired.input_scale, "foreign.keras", "given", {})
    assert "detection_rate" not in evaluation.evaluate(foreign, *colour_sets)
    assert evaluation.evaluate(foreign, *colour_sets, backdoor_class=3)["detection_rate"] == 100
    with pytest.raises(LabInputError, match="backdoor class in 1..3"):
        evaluation.evaluate(foreign, *colour_sets, backdoor_class=4)


def test_a_goodnet_refuses_labels_of_its_backdoor_class(colour_models):
    _, repaired = colour_models
    wrong = Dataset(helpers.colour_images([RED]), np.array([3]), "wrong.h5")
    with pytest.raises(LabInputError, match=r"labels in 0..2"):
        evaluation.evaluate(repaired, wrong)


def test_comparison_table_and_its_plots(tmp_path, colour_sets, colour_models):
    from matplotlib.figure import Figure

    from lab.evaluation import plots

    badnet, repaired = colour_models
    table = evaluation.comparison_table({"BadNet": badnet, "GoodNet": repaired}, *colour_sets)
    assert list(table.index) == ["BadNet", "GoodNet"]
    assert list(table.columns[:6]) == list(metrics.BREAKDOWN_COLUMNS)
    assert table.loc["BadNet", "detection_rate"] == 0 and table.loc["BadNet", "backdoor_class"] == 3
    assert table.loc["GoodNet", "detection_rate"] == 100
    clean_sum = table[["clean_accuracy", "clean_false_positive_rate", "clean_other"]].sum(axis=1)
    np.testing.assert_allclose(clean_sum, 100)
    for name, figure in {"comparison": plots.plot_comparison(table), "breakdown": plots.plot_breakdown(table)}.items():
        assert isinstance(figure, Figure) and figure.axes[0].get_legend() is not None
        assert "(%)" in figure.axes[0].get_ylabel() + figure.axes[0].get_xlabel()
        figure.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000
