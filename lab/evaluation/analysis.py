"""Looking at a BadNet from its outputs: the attacker's target, per-class accuracy, confidence, self-checks."""

from __future__ import annotations

import numpy as np

from lab.io.data import Dataset


def attack_target(poisoned: Dataset) -> tuple[int, float]:
    """The attacker's target read from a poisoned file: (most common label, % of labels equal to it).

    The course files label every poisoned image with the target, so an
    all-to-one attack gives 100 %; less means an all-to-all or mixed attack.
    """
    if not len(poisoned):
        raise ValueError(f"{poisoned.path}: no poisoned images to read a target from")
    values, counts = np.unique(poisoned.y, return_counts=True)
    best = int(np.argmax(counts))
    return int(values[best]), 100.0 * float(counts[best]) / len(poisoned)


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy (%) of each class 0..n_classes-1: float64 (n_classes,), NaN for classes absent from ``labels``."""
    hits = np.bincount(labels, weights=(predicted == labels).astype(np.float64), minlength=n_classes)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 100.0 * hits / counts, np.nan)


def confidence_table(probabilities: dict[str, np.ndarray]):
    """Long table of the top-class probability of each input, one row per input, for seaborn.

    probabilities: ``{set name: float32 (n, classes)}``. Returns a DataFrame
    with columns ``set`` and ``confidence`` (0..1).
    """
    import pandas as pd

    frames = [pd.DataFrame({"set": name, "confidence": np.max(values, axis=1)}) for name, values in probabilities.items()]
    return pd.concat(frames, ignore_index=True)


def check_range(name: str, value: float, expected: tuple[float, float], hint: str = "") -> str:
    """A self-check for students: raise ``ValueError`` with a helpful message when ``value`` is outside ``expected``.

    Returns a one-line "ok" message to print when it is inside.
    """
    low, high = expected
    if not low <= value <= high:
        raise ValueError(f"{name} is {value:.2f}, expected between {low:g} and {high:g}. {hint}".strip())
    return f"ok: {name} = {value:.2f} (expected {low:g}..{high:g})"


def expected_range(expected: tuple[float, float], root, key: str | None = None, model=None, n: int | None = None,
                   margin: float = 3.0) -> tuple[float, float]:
    """A notebook's self-check range (percent): ``expected``, or what it means for a smaller embedded default.

    The ranges a notebook states are the embedded default's at its full size
    (:class:`lab.synthetic.default.DefaultConfig`, 100 identities). A default
    built with fewer identities (``$BADNET_LAB_IDENTITIES``, for a quick try)
    learns from fewer faces and is evaluated on fewer, so for it:

    - ``key`` (``"clean_test_accuracy"``, ``"attack_success_rate_test"``):
      the lower end is ``margin`` points under what its own build measured
      (``results[key]`` of ``root/manifest.json``) whenever that is lower;
    - ``n``, the number of images the rate is computed over: each end moves out
      by the sampling error of a rate at that end over ``n`` images,
      1.96 sqrt(p (1 - p) / n) (95 %), so a rate its few images cannot tell
      from the range is not refused.

    Any other data (the course files, a full-size default) or a ``model``
    that is not the default's own (SHA-256 against the manifest) keeps
    ``expected``.
    """
    import math
    from pathlib import Path

    from lab.errors import LabInputError
    from lab.io import manifest
    from lab.synthetic.default import DefaultConfig

    low, high = expected
    try:
        record = manifest.read_manifest(Path(root))
    except (LabInputError, OSError):  # no manifest (the course files, say): nothing recorded to go by
        return low, high
    if not isinstance(record, dict):
        return low, high
    smaller = record.get("kind", "").startswith("BadNet Pruning Lab embedded default") and \
        record.get("parameters", {}).get("n_identities", DefaultConfig.n_identities) < DefaultConfig.n_identities
    own_model = model is None or model.metadata.get("sha256") == record.get("files", {}).get("models/bd_net.h5")
    if not (smaller and own_model):
        return low, high
    measured = record.get("results", {}).get(key) if key else None
    if isinstance(measured, (int, float)):
        low = min(low, math.floor((measured - margin) * 10) / 10)
    if n:
        def error(percent: float) -> float:
            rate = min(max(percent / 100.0, 0.0), 1.0)
            return 196.0 * math.sqrt(rate * (1.0 - rate) / n)

        low = max(0.0, math.floor((low - error(low)) * 10) / 10)
        high = min(100.0, math.ceil((high + error(high)) * 10) / 10)
    return low, high


# ---------------------------------------------------------------- outcomes in words, from the values
# Notebooks state what their output shows through these functions, so a sentence is built from the numbers of
# the run it sits in and says the other branch when the numbers come out the other way (the course's own files).


def change_in_words(before: float, after: float, unit: str = " %", tolerance: float = 0.5) -> str:
    """``"rises from <before> to <after>"``, ``"falls from ..."`` or ``"stays at about ..."`` (within ``tolerance``)."""
    if abs(after - before) <= tolerance:
        return f"stays at about {after:.1f}{unit} (from {before:.1f}{unit})"
    verb = "rises" if after > before else "falls"
    return f"{verb} from {before:.1f}{unit} to {after:.1f}{unit}"


def describe_rebound(table, n_channels: int, rise: float = 5.0) -> str:
    """In words, from :func:`lab.defenses.pruning.answers_per_step`'s table: does ASR come back, and why?

    table: one row per late sweep step (``channels_pruned``, ``clean_accuracy``,
    ``attack_success_rate``, ``clean_to_target``, ``clean_answers``);
    n_channels: the layer's channel count C. The fully pruned step (all C
    channels zero) is left out of the minimum and of the rebound: every
    pool_3 channel is then exactly 0, so B' gives every input the same
    answer and its "ASR" is 100 % or 0 % by that alone; the text says which.
    A rebound is a later ASR at least ``rise`` points above the minimum.
    """
    asr_all = table["attack_success_rate"].to_numpy(dtype=float)
    if not len(asr_all) or not np.isfinite(asr_all).any():
        return "no attack success rate recorded (no poisoned data)"
    full = table[table["channels_pruned"] >= n_channels]
    partial = table[table["channels_pruned"] < n_channels].reset_index(drop=True)
    ending = ""
    if not full.empty:
        last = full.iloc[-1]
        classes = int(last["clean_answers"])
        ending = (f" (With all {n_channels} channels pruned, B' answers {classes} "
                  f"{'class' if classes == 1 else 'classes'} for every clean face and its attack success rate is "
                  f"{last['attack_success_rate']:.1f} %; that step is not "
                  "counted above: the network then gives every input the same answer, trigger or not.)")
    asr = partial["attack_success_rate"].to_numpy(dtype=float)
    if not len(asr) or not np.isfinite(asr).any():
        return "the table holds only the fully pruned step: nothing to compare." + ending
    low = int(np.nanargmin(asr))
    low_at = int(partial["channels_pruned"].iloc[low])
    later = partial.iloc[low + 1:]
    later = later[later["attack_success_rate"] >= asr[low] + rise]
    if later.empty:
        return (f"no rebound: before the last channel, the attack success rate does not rise again by {rise:g} points "
                f"after its lowest value ({asr[low]:.1f} % at {low_at} channels pruned)." + ending)
    peak = later.loc[later["attack_success_rate"].idxmax()]
    text = (f"rebound: the attack success rate falls to {asr[low]:.1f} % at {low_at} channels pruned and comes back "
            f"to {peak['attack_success_rate']:.1f} % at {int(peak['channels_pruned'])}, where clean accuracy is "
            f"{peak['clean_accuracy']:.1f} % and B' answers only {int(peak['clean_answers'])} distinct classes on "
            f"clean faces; ")
    if peak["clean_to_target"] >= peak["attack_success_rate"] / 2:
        text += (f"it sends {peak['clean_to_target']:.1f} % of CLEAN faces to the target too: the network has "
                 "collapsed onto a few classes, and the 'attack success' is that collapse, not the trigger.")
    else:
        text += (f"it sends only {peak['clean_to_target']:.1f} % of clean faces to the target: not a collapse onto "
                 "the target. The last channels (the most active on clean faces) still respond to the trigger, and "
                 "with the identity channels gone nothing outvotes it; the network is useless by then anyway.")
    return text + ending


def describe_thresholds(sweep_table, selection) -> str:
    """What each accuracy-drop threshold picked, what one channel cost there, and by how much it overshot.

    sweep_table: :func:`lab.defenses.pruning.sweep`'s table (``accuracy_drop``
    per step, step k = k channels pruned); selection:
    :func:`lab.defenses.pruning.select_thresholds`'s table. The cost of
    channel k is drop(k) - drop(k - 1) in percentage points. A first-reach
    rule saves the first step whose drop reaches X, so when the channel
    that crosses X costs more than what was left below X, the model
    overshoots X; when one channel crosses several thresholds, they share
    one model. One line per threshold, then one on the rule.
    """
    drops = sweep_table["accuracy_drop"].to_numpy(dtype=float)
    lines, steps = [], {}
    relative = bool(len(selection)) and selection["rule"].iloc[0] == "relative"
    for _, row in selection.iterrows():
        threshold = float(row["threshold"])
        if not bool(row["found"]):
            lines.append(f"- {threshold:g} %: no model ({row['note']})")
            continue
        step = int(row["channels_pruned"])
        steps.setdefault(step, []).append(threshold)
        cost = drops[step] - drops[step - 1] if step > 0 else drops[step]
        over = float(row["accuracy_drop"]) - threshold
        text = (f"- {threshold:g} %: {step} channels, {row['accuracy_drop']:.2f} points lost; channel {step} alone "
                f"cost {cost:.2f} points")
        if relative:
            text += " (this rule counts the drop in percent of the starting accuracy)"
        elif over > 1.0:
            text += f", so this B' overshoots its threshold by {over:.2f} points"
        else:
            text += f", within {max(over, 0.0):.2f} points of its threshold"
        lines.append(text)
    shared = [f"{' and '.join(f'{t:g} %' for t in ts)} share the model at {step} channels"
              for step, ts in steps.items() if len(ts) > 1]
    if shared:
        lines.append("- one channel took the drop past several thresholds: " + "; ".join(shared))
    costs = np.diff(drops)
    found = [int(s) for s in steps]
    if found:
        first, last = max(1, min(found) - 2), min(len(drops) - 1, max(found))
        window = costs[first - 1:last]
        lines.append(f"- from {first} to {last} channels pruned the drop grows by {np.mean(window):.2f} points a "
                     f"channel on average, {np.max(window):.2f} at most. The rule saves the first step whose drop "
                     "reaches X: when one channel costs more than X, the step before is still under X and the step "
                     "saved is past it by up to that channel's cost; it never takes a step back.")
    return "\n".join(lines)


def compare_defenses(table, first: str, second: str) -> str:
    """Which of two rows of a comparison table is better, in words: higher clean accuracy, lower ASR, or a trade-off.

    table: :func:`lab.evaluation.loop.comparison_table`'s output (index =
    row names, ``clean_accuracy`` and ``attack_success_rate`` in %).
    """
    a, b = table.loc[first], table.loc[second]
    numbers = (f"{first}: {a['clean_accuracy']:.2f} % clean, ASR {a['attack_success_rate']:.2f} %; "
               f"{second}: {b['clean_accuracy']:.2f} % clean, ASR {b['attack_success_rate']:.2f} %")
    clean = np.sign(round(a["clean_accuracy"] - b["clean_accuracy"], 2))
    backdoor = np.sign(round(b["attack_success_rate"] - a["attack_success_rate"], 2))  # +: first leaves less
    if clean >= 0 and backdoor >= 0 and clean + backdoor > 0:
        verdict = f"{first} is at least as good on both and better on {'both' if clean and backdoor else 'one'}"
    elif clean <= 0 and backdoor <= 0 and clean + backdoor < 0:
        verdict = f"{second} is at least as good on both and better on {'both' if clean and backdoor else 'one'}"
    elif clean == 0 and backdoor == 0:
        verdict = "they are equal on both"
    else:
        keeps, removes = (first, second) if clean > 0 else (second, first)
        verdict = f"a trade-off: {keeps} keeps more clean accuracy, {removes} leaves less of the backdoor"
    return f"{numbers}: {verdict}."


def describe_cost(table, row: str, reference: str) -> str:
    """What a defense ``row`` costs and leaves against ``reference`` (B), from a comparison table, in words."""
    a, b = table.loc[row], table.loc[reference]
    lost = b["clean_accuracy"] - a["clean_accuracy"]
    clean = (f"keeps B's clean accuracy ({a['clean_accuracy']:.2f} % against {b['clean_accuracy']:.2f} %)"
             if abs(lost) <= 1.0 else
             f"{'loses' if lost > 0 else 'gains'} {abs(lost):.2f} points of clean accuracy "
             f"({b['clean_accuracy']:.2f} % -> {a['clean_accuracy']:.2f} %)")
    asr = a["attack_success_rate"]
    left = ("and removes the backdoor" if asr <= 5.0 else
            "and keeps most of the backdoor" if asr >= b["attack_success_rate"] / 2 else
            "and removes part of the backdoor")
    return f"{row} {clean} {left} (ASR {b['attack_success_rate']:.2f} % -> {asr:.2f} %)"


def describe_flagged(candidates, l1, index, flagged, target: int | None = None, threshold: float = 2.0) -> str:
    """Neural Cleanse's verdict in words: which classes were flagged, and (given the true ``target``) which are wrong.

    candidates: the classes reversed; l1: their mask norms (pixels); index:
    their anomaly indices (:func:`lab.defenses.reverse.anomaly_index`, how far
    below the median a norm is); flagged: the classes the rule flagged.
    ``target`` comes from the poisoned file and is for us only: a flagged
    class that is not the target is a false positive, an unflagged target
    is a miss.
    """
    l1, index = np.asarray(l1, np.float64), np.asarray(index, np.float64)
    first = int(np.argsort(l1, kind="stable")[0])
    lines = [f"flagged (anomaly index > {threshold:g}): {list(flagged) or 'none'}; the smallest mask is class "
             f"{int(candidates[first])} ({l1[first]:.1f} pixels, index {index[first]:.2f})"]
    if target is None:
        return lines[0]
    wrong = [int(c) for c in flagged if int(c) != int(target)]
    if int(target) in [int(c) for c in flagged]:
        lines.append(f"the attacker's target {target} is flagged")
    elif int(target) in [int(c) for c in candidates]:
        lines.append(f"the attacker's target {target} was reversed but NOT flagged: a miss")
    else:
        lines.append(f"the attacker's target {target} was not among the candidates: a miss")
    lines.append(f"false positives (flagged, not the target): {wrong}; unlearning their triggers costs clean accuracy "
                 "for nothing" if wrong else "no false positive")
    return "; ".join(lines)


def describe_backdoor_survival(selection, high: float = 50.0, low: float = 5.0) -> str:
    """Whether the B' models a threshold rule picked still obey the trigger, from their attack success rates.

    selection: :func:`lab.defenses.pruning.select_thresholds`'s table (ASR on
    the poisoned validation data, for reporting only). ``high``: an ASR at
    or above it means the backdoor survives; ``low``: at or below it, gone.
    """
    found = selection[selection["found"].astype(bool)]
    if found.empty:
        return "no threshold picked a model: there is no B' to judge"
    if not np.isfinite(found["attack_success_rate"].to_numpy(dtype=float)).all():
        return "no attack success rate recorded (no poisoned data): nothing to say about the backdoor"
    parts = ", ".join(f"{t:g} %: {a:.1f} %" for t, a in zip(found["threshold"], found["attack_success_rate"]))
    asr = found["attack_success_rate"].to_numpy(dtype=float)
    if (asr >= high).all():
        verdict = (f"every B' the rule picked still obeys the trigger (ASR >= {high:g} %): pruning alone does not "
                   "remove this backdoor; it lives in channels the clean task needs too")
    elif (asr <= low).all():
        verdict = f"every B' the rule picked has lost the backdoor (ASR <= {low:g} %): pruning alone removes it here"
    else:
        survives = [f"{t:g} %" for t, a in zip(found["threshold"], asr) if a >= high]
        verdict = ("the backdoor survives in " + (", ".join(survives) if survives else "none") + " of them and "
                   "fades in the others: the larger the drop one accepts, the more of the backdoor goes with it")
    return f"attack success rate of each B' ({parts}): {verdict}"


def compare_detectors(table, first: str, second: str, tolerance: float = 1.0) -> str:
    """Two detectors of a comparison table in words: detection rate and clean false positives, which is better.

    table: :func:`lab.evaluation.loop.comparison_table`'s output with
    ``detection_rate`` (poisoned inputs sent to class N, %) and
    ``clean_false_positive_rate`` (clean inputs sent to N, %); differences
    within ``tolerance`` points count as the same.
    """
    a, b = table.loc[first], table.loc[second]
    numbers = (f"{first} detects {a['detection_rate']:.2f} % of triggered inputs and flags "
               f"{a['clean_false_positive_rate']:.2f} % of clean ones; {second}: {b['detection_rate']:.2f} % and "
               f"{b['clean_false_positive_rate']:.2f} %")
    detection = b["detection_rate"] - a["detection_rate"]
    alarms = a["clean_false_positive_rate"] - b["clean_false_positive_rate"]  # +: second raises fewer
    if abs(detection) <= tolerance and abs(alarms) <= tolerance:
        verdict = "the two are about the same"
    elif detection >= -tolerance and alarms >= -tolerance:
        verdict = f"{second} keeps the detection and raises fewer false alarms" if alarms > tolerance else \
            f"{second} detects more at the same false alarms"
    elif detection <= tolerance and alarms <= tolerance:
        verdict = f"{first} is better: it detects at least as much with no more false alarms"
    else:
        verdict = (f"a trade-off: {second if detection > 0 else first} detects more, "
                   f"{second if alarms > 0 else first} raises fewer false alarms")
    return f"{numbers}: {verdict}."


def describe_asr_course(history, column: str, best_epoch: int, name: str, low: float = 5.0) -> str:
    """What a fine-tuning run did to the attack success rate, epoch by epoch, in words.

    history: one row per epoch, row 0 before fine-tuning, ``column`` the ASR
    (%) on poisoned validation data (measured, never used to choose);
    best_epoch: the epoch the held-out clean accuracy kept. Says where the
    ASR started, its lowest point, the kept and the last epoch, whether it
    crept back after its lowest point (by 5 points or more), and whether the
    kept model still obeys the trigger (above ``low``).
    """
    asr = history[column].to_numpy(dtype=float)
    start, kept, last = asr[0], asr[best_epoch], asr[-1]
    lowest = int(np.argmin(asr))
    text = f"{name}: the attack success rate {change_in_words(start, kept)} at the kept epoch {best_epoch}"
    if lowest not in (0, best_epoch) and asr[lowest] < kept:
        text += f" (lowest {asr[lowest]:.1f} % at epoch {lowest})"
    if len(asr) - 1 != best_epoch:
        text += f", {last:.1f} % at the last epoch {len(asr) - 1}"
    if 0 < lowest < len(asr) - 1 and asr[lowest + 1:].max() >= asr[lowest] + 5.0:
        text += f"; it crept back after epoch {lowest}, to {asr[lowest + 1:].max():.1f} %"
    if kept <= low:
        return text + ": the kept model has lost the backdoor"
    if kept >= start - 5.0:
        return text + ": the backdoor is not reached"
    return text + ": the backdoor is weakened, not removed"


DETECTOR_COLUMNS = ("detection_rate", "clean_false_positive_rate")


def table_for_display(table, columns, digits: int = 2):
    """``table[columns]`` rounded, with the detector columns blank in rows whose model never answers class N.

    table: :func:`lab.evaluation.loop.comparison_table`'s output (its
    ``n_classes`` and ``backdoor_class`` say whether a row can answer N: a
    plain model with N classes cannot, so its detection rate and false
    positives are not 0 but not applicable). Returns an object DataFrame:
    numbers, and "" where a metric does not apply or was not measured.
    """
    shown = table[list(columns)].round(digits).astype(object)
    cannot = table["backdoor_class"].astype(float) >= table["n_classes"].astype(float)
    for column in DETECTOR_COLUMNS:
        if column in shown:
            shown.loc[cannot, column] = ""
    return shown.where(shown.map(lambda value: not (isinstance(value, float) and np.isnan(value))), "")


def defense_glossary(rows):
    """One line per table row: the registered defense behind it, its kind, what it does and its paper.

    rows: ``{table row: registered defense name}`` (:data:`lab.defenses.REGISTRY`).
    The description is the first line of the defense class's docstring, so
    a row added to the registry is explained by the same call. Returns a
    DataFrame indexed by row with ``defense``, ``kind``, ``what``, ``paper``.
    """
    import re

    import pandas as pd

    import lab.defenses

    records = []
    for row, name in rows.items():
        cls = lab.defenses.REGISTRY[name]
        what = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())  # the first paragraph, one line
        what = re.sub(r"\s*\(see the module docstring\)|; see the module docstring", "", what).replace("``", "`")
        records.append({"row": row, "defense": name, "kind": cls.kind, "what": what, "paper": cls.paper})
    return pd.DataFrame(records).set_index("row")


def describe_trigger_channels(clean_means, poisoned_means, top: int = 5) -> str:
    """Where the channels that grow most on poisoned inputs sit in the pruning order, and what that predicts.

    clean_means, poisoned_means: float (C,), mean activation of each channel
    on clean and on poisoned data. The pruning order is increasing clean
    mean (ties by index, as :func:`lab.defenses.pruning.rank_channels`);
    rank 0 is pruned first. The ``top`` channels with the largest
    poisoned - clean difference are "trigger channels" here.
    """
    clean_means, poisoned_means = np.asarray(clean_means, np.float64), np.asarray(poisoned_means, np.float64)
    order = np.argsort(clean_means, kind="stable")
    rank = np.empty(len(order), int)
    rank[order] = np.arange(len(order))
    dormant = int(np.sum(clean_means == 0))
    trigger = np.argsort(-(poisoned_means - clean_means), kind="stable")[:top]
    ranks = sorted(int(rank[c]) for c in trigger)
    text = (f"the {len(trigger)} channels that grow most on poisoned data ({sorted(int(c) for c in trigger)}) sit at "
            f"ranks {ranks} of 0..{len(order) - 1} in the pruning order; {dormant} channels are dormant on clean data")
    if ranks[0] >= len(order) // 2:
        return text + (f": all in the more active half, so pruning reaches the first of them only after "
                       f"{ranks[0]} channels, the dormant ones included: the backdoor hides in channels the clean "
                       "task also needs, and the dormant channels are decoys")
    if ranks[-1] < max(dormant, 1):
        return text + ": all among the dormant channels, so pruning the silent channels first removes the backdoor"
    return text + (f": pruning reaches the first of them after {ranks[0]} channels and the last after {ranks[-1]}, "
                   "so it removes part of the trigger's channels early and the rest only late")
