"""Sentences built from values (lab.evaluation.analysis): each branch says what the numbers show."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lab.evaluation import analysis


def _late(asr, clean_to_target=None, clean_answers=None, first=53, clean=None):
    n = len(asr)
    return pd.DataFrame({"channels_pruned": np.arange(first, first + n), "attack_success_rate": asr,
                         "clean_accuracy": clean if clean is not None else np.linspace(20, 1, n),
                         "clean_to_target": clean_to_target if clean_to_target is not None else np.zeros(n),
                         "clean_answers": clean_answers if clean_answers is not None else np.full(n, 30)})


def test_rebound_ignores_the_fully_pruned_step():
    """The issue's 03: ASR 0.1 -> 46.4 % at 53..59 channels, 0.0 % at 60 (all pruned): a rebound, not 'none'."""
    table = _late([0.1, 14.4, 27.6, 41.8, 44.0, 45.0, 46.4, 0.0], clean_answers=[30, 20, 10, 8, 5, 3, 2, 1])
    text = analysis.describe_rebound(table, n_channels=60)
    assert text.startswith("rebound: the attack success rate falls to 0.1 % at 53")
    assert "comes back to 46.4 % at 59" in text and "only 0.0 % of clean faces" in text
    assert "With all 60 channels pruned, B' answers 1 class for every" in text and "0.0 %" in text


def test_rebound_says_collapse_and_none():
    collapse = _late([1.0, 60.0, 90.0], clean_to_target=[0.0, 50.0, 80.0], first=57)
    text = analysis.describe_rebound(collapse, n_channels=60)
    assert "collapsed onto a few classes" in text and "With all" not in text
    flat = _late([5.0, 3.0, 2.0, 100.0], first=57)
    text = analysis.describe_rebound(flat, n_channels=60)
    assert text.startswith("no rebound") and "2.0 % at 59" in text and "is 100.0 %" in text


def _sweep(drops):
    drops = np.asarray(drops, float)
    return pd.DataFrame({"channels_pruned": np.arange(len(drops)), "accuracy_drop": drops,
                         "clean_accuracy": 97.0 - drops, "attack_success_rate": np.full(len(drops), 99.0),
                         "fraction_pruned": np.arange(len(drops)) / (len(drops) - 1)})


def test_thresholds_overshoot_shared_model_and_missing():
    from lab.defenses import pruning

    sweep = _sweep([0, 0, 0.1, 0.4, 3.78, 7.67, 12.0, 30.0])
    selection = pruning.select_thresholds(sweep, [2, 4, 10, 50])
    text = analysis.describe_thresholds(sweep, selection)
    assert "- 2 %: 4 channels, 3.78 points lost; channel 4 alone cost 3.38 points, so this B' overshoots" in text
    assert "- 10 %: 6 channels, 12.00 points lost" in text and "- 50 %: no model" in text
    selection = pruning.select_thresholds(sweep, [1, 2, 3])
    text = analysis.describe_thresholds(sweep, selection)
    assert "1 % and 2 % and 3 % share the model at 4 channels" in text
    smooth = _sweep(np.arange(0, 12, 0.5))
    text = analysis.describe_thresholds(smooth, pruning.select_thresholds(smooth, [2, 4]))
    assert "within 0.00 points of its threshold" in text and "overshoots" not in text


def test_compare_and_cost_and_change():
    table = pd.DataFrame({"clean_accuracy": [97.56, 83.11, 84.89, 89.67],
                          "attack_success_rate": [99.4, 0.0, 1.12, 98.0]},
                         index=["B", "fine-tuning alone", "fine-pruning", "pruning alone"])
    text = analysis.compare_defenses(table, "fine-tuning alone", "fine-pruning")
    assert text.endswith("a trade-off: fine-pruning keeps more clean accuracy, fine-tuning alone leaves less of the "
                         "backdoor.")
    table.loc["fine-tuning alone", "clean_accuracy"] = 85.0
    assert "fine-tuning alone is at least as good on both and better on both" in \
        analysis.compare_defenses(table, "fine-tuning alone", "fine-pruning")
    text = analysis.describe_cost(table, "pruning alone", "B")
    assert text.startswith("pruning alone loses 7.89 points of clean accuracy") and "keeps most of the backdoor" in text
    assert "removes the backdoor" in analysis.describe_cost(table, "fine-pruning", "B")
    assert analysis.change_in_words(89.5, 96.2) == "rises from 89.5 % to 96.2 %"
    assert analysis.change_in_words(96.2, 1.0).startswith("falls") and "stays" in analysis.change_in_words(5.0, 5.2)


def test_flagged_names_false_positives_and_misses():
    from lab.defenses import reverse

    l1 = np.array([17.0, 40.0, 300.0, 290.0, 310.0, 305.0, 800.0])
    index = reverse.anomaly_index(l1)
    assert index[0] > 2 and index[1] > 2 and index[6] < 0  # the largest mask gets a negative index
    text = analysis.describe_flagged([5, 18, 1, 2, 3, 4, 50], l1, index, [5, 18], target=5)
    assert "target 5 is flagged" in text and "false positives (flagged, not the target): [18]" in text
    text = analysis.describe_flagged([5, 18, 1, 2, 3, 4, 50], l1, index, [18], target=5)
    assert "NOT flagged: a miss" in text
    assert "no false positive" in analysis.describe_flagged([5, 1], l1[:2], index[:2], [5], target=5)


def test_backdoor_survival_all_three_branches():
    from lab.defenses import pruning

    sweep = _sweep([0, 0, 0.1, 0.4, 3.78, 7.67, 12.0, 30.0])
    selection = pruning.select_thresholds(sweep, [2, 4, 10])
    assert "every B' the rule picked still obeys the trigger" in analysis.describe_backdoor_survival(selection)
    selection["attack_success_rate"] = [1.0, 2.0, 0.0]
    assert "has lost the backdoor" in analysis.describe_backdoor_survival(selection)
    selection["attack_success_rate"] = [99.0, 80.0, 10.0]
    assert "survives in 2 %, 4 % of them" in analysis.describe_backdoor_survival(selection)


def test_compare_detectors_branches():
    table = pd.DataFrame({"detection_rate": [99.0, 98.5, 60.0], "clean_false_positive_rate": [4.0, 0.5, 0.2]},
                         index=["G", "targeted G", "STRIP"])
    assert analysis.compare_detectors(table, "G", "targeted G").endswith(
        "targeted G keeps the detection and raises fewer false alarms.")
    assert "a trade-off: G detects more, STRIP raises fewer false alarms" in \
        analysis.compare_detectors(table, "G", "STRIP")
    assert "the two are about the same" in analysis.compare_detectors(table, "G", "G")


def test_asr_course_branches():
    column = "attack success (poisoned validation)"
    rising = pd.DataFrame({column: [89.5, 92.0, 96.2]})
    text = analysis.describe_asr_course(rising, column, 2, "paper")
    assert text == ("paper: the attack success rate rises from 89.5 % to 96.2 % at the kept epoch 2: the backdoor is "
                    "not reached")
    creep = pd.DataFrame({column: [99.0, 10.0, 2.0, 30.0, 45.0]})
    text = analysis.describe_asr_course(creep, column, 4, "augmented")
    assert "crept back after epoch 2, to 45.0 %" in text and text.endswith("weakened, not removed")
    assert analysis.describe_asr_course(creep, column, 2, "x").endswith("has lost the backdoor")


def test_table_for_display_blanks_detection_of_plain_models(tiny_default):
    """A real comparison table on the tiny default: B has no class N, its GoodNet does."""
    from lab.defenses import goodnet
    from lab.evaluation import loop
    from lab.io import data, models

    badnet = models.load_lab_model(None, None, tiny_default)
    layout = data.find_layout(tiny_default / "data")
    clean, poisoned = data.load_h5(layout.clean_test, n=40), data.load_h5(layout.poisoned("test")[0], n=40)
    good = goodnet.build_goodnet(badnet, badnet)
    table = loop.comparison_table({"B": badnet, "G(B, B)": good}, clean, poisoned)
    shown = analysis.table_for_display(table, ["clean_accuracy", "attack_success_rate", "detection_rate"])
    assert shown.loc["B", "detection_rate"] == "" and shown.loc["G(B, B)", "detection_rate"] == 0.0
    assert shown.loc["B", "clean_accuracy"] == round(table.loc["B", "clean_accuracy"], 2)


def test_defense_glossary_explains_every_registered_defense():
    import lab.defenses

    glossary = analysis.defense_glossary({f"row {name}": name for name in lab.defenses.REGISTRY})
    assert len(glossary) == len(lab.defenses.REGISTRY) and (glossary["what"].str.len() > 10).all()
    assert (glossary["paper"].str.len() > 5).all() and "see the module" not in " ".join(glossary["what"])
    assert glossary.loc["row i-bau", "kind"] == "repair" and "Zeng" in glossary.loc["row i-bau", "paper"]


def test_trigger_channels_late_early_and_mixed():
    clean = np.array([0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    late = clean.copy()
    late[[6, 7]] += 10.0
    text = analysis.describe_trigger_channels(clean, late, top=2)
    assert "ranks [6, 7] of 0..7" in text and "3 channels are dormant" in text and "decoys" in text
    early = clean.copy()
    early[[0, 1]] += 10.0
    assert "removes the backdoor" in analysis.describe_trigger_channels(clean, early, top=2)
    mixed = clean.copy()
    mixed[[0, 7]] += 10.0
    assert "part of the trigger's channels early" in analysis.describe_trigger_channels(clean, mixed, top=2)
