"""Figures a student reads: legends that hide no data, points told apart."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lab.evaluation import plots


def _history(best, asr):
    table = pd.DataFrame({"epoch": np.arange(len(asr)), "holdout_accuracy": np.linspace(90, 95, len(asr)),
                          "loss": 0.0, "learning_rate": 0.0, "attack success (poisoned validation)": asr})
    table.attrs["best_epoch"] = best
    return table


def test_fine_tuning_has_one_legend_below_the_panels_and_the_kept_epoch_in_titles():
    figure = plots.plot_fine_tuning({"a": _history(2, [99.0, 5.0, 10.0]), "b": _history(1, [99.0, 1.0, 1.0])})
    axes = figure.get_axes()
    assert len(axes) == 2 and all(ax.get_legend() is None for ax in axes)
    assert len(figure.legends) == 1 and [ax.get_title() for ax in axes] == ["a (epoch 2 kept)", "b (epoch 1 kept)"]


def test_tradeoff_numbers_every_point_with_its_own_colour():
    names = [f"defense {k}" for k in range(17)]
    table = pd.DataFrame({"clean_accuracy": np.r_[np.full(6, 95.0), np.linspace(30, 90, 11)],
                          "attack_success_rate": np.r_[np.zeros(6), np.linspace(10, 99, 11)],
                          "detection_rate": np.nan, "clean_false_positive_rate": np.nan}, index=names)
    trade = plots.plot_defense_tradeoff(table).get_axes()[0]
    assert sorted(int(text.get_text()) for text in trade.texts) == list(range(1, 18))
    colours = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in trade.collections}
    assert len(colours) == 17
    stacked = [tuple(text.xy) for text in trade.texts[:6]]  # six points on one spot: labels side by side
    assert len({tuple(text.xyann) for text in trade.texts[:6]}) == 6 and len(set(stacked)) == 1
