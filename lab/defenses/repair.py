"""``python -m lab repair``: repair a BadNet from clean validation data and save the repaired N-class model.

:func:`repair` runs one defense of :data:`lab.defenses.REGISTRY` (``auto`` by
default: the gate, then reverse-and-unlearn if the model looks backdoored,
otherwise the model unchanged), saves the result with the lab's metadata
and SHA-256 (plain ``keras.models.load_model`` opens it in safe mode), and
returns what it decided. Optional report sets (a clean and a poisoned test
file) are only measured, never used to decide anything: clean accuracy and
attack success of B and of the repaired model R, and detection / clean
false positives of the GoodNet built on B and R (:mod:`lab.defenses.goodnet`).
"""

from __future__ import annotations

import os
from pathlib import Path

from lab.cache import clock
from lab.errors import LabInputError, check_writable
from lab.io.manifest import jsonable
from lab.constants import DEFAULT_SEED

DECISION_KEYS = ("backdoored", "target", "method", "seconds", "holdout_clean_accuracy")


def configure(defense_class, overrides=()) -> object:
    """``defense_class.Config()`` with ``overrides`` (``"key=value"``, dotted keys reach nested configs).

    Values are Python literals (``epochs=5``, ``reverse.epochs=10``,
    ``layers=('pool_3',)``); an unknown key or a bad value is one-line
    :class:`LabInputError`.
    """
    import ast

    config = defense_class.Config()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise LabInputError(None, "--set KEY=VALUE", repr(item))
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise LabInputError(None, f"a Python literal for --set {key}", repr(text)) from None
        config = _replace_path(config, key.split("."), value, key)
    return config


def _replace_path(config, path, value, key):
    import dataclasses

    names = {f.name for f in dataclasses.fields(config)}
    if path[0] not in names:
        raise LabInputError(None, f"a field of {type(config).__name__} ({', '.join(sorted(names))})", repr(key))
    if len(path) > 1:
        value = _replace_path(getattr(config, path[0]), path[1:], value, key)
    return dataclasses.replace(config, **{path[0]: value})


def decision(result) -> dict:
    """The :data:`DECISION_KEYS` plus ``targets`` from a :class:`DefenseResult`'s decision fields.

    Repairs that do not judge the model (``backdoored`` None) fine-tune whatever they are given.
    """
    targets = list(result.targets)
    return {"backdoored": result.backdoored, "target": int(targets[0]) if targets else None, "targets": targets,
            "method": result.method_run, "seconds": float(result.seconds),
            "holdout_clean_accuracy": float(result.details.get("holdout_clean_accuracy", float("nan")))}


def report_sets(badnet, repaired, clean, poisoned, targets=()) -> dict:
    """Computed on report data only: B and R clean accuracy / ASR, GoodNet(B, R) detection and false positives.

    With ``targets`` (the suspected targets the repair named from clean data)
    also the targeted GoodNet's (:func:`lab.defenses.goodnet.build_goodnet`),
    under keys ``targeted_goodnet_*``.
    """
    from lab.defenses import goodnet
    from lab.evaluation import metrics

    out = {}
    n = badnet.n_classes
    detectors = {"goodnet": goodnet.build_goodnet(badnet, repaired)}
    if targets:
        detectors["targeted_goodnet"] = goodnet.build_goodnet(badnet, repaired, targets=targets)
    if clean is not None:
        out.update(badnet_clean_accuracy=metrics.percent(badnet.predict_labels(clean.x) == clean.y),
                   repaired_clean_accuracy=metrics.percent(repaired.predict_labels(clean.x) == clean.y))
        for name, good in detectors.items():
            good_clean = good.predict_labels(clean.x)
            out[f"{name}_clean_accuracy"] = metrics.percent(good_clean == clean.y)
            out[f"{name}_false_positive_rate"] = metrics.clean_false_positive_rate(good_clean, n)
    if poisoned is not None:
        out.update(badnet_attack_success_rate=metrics.percent(badnet.predict_labels(poisoned.x) == poisoned.y),
                   repaired_attack_success_rate=metrics.percent(repaired.predict_labels(poisoned.x) == poisoned.y))
        for name, good in detectors.items():
            good_poisoned = good.predict_labels(poisoned.x)
            out[f"{name}_detection_rate"] = metrics.detection_rate(good_poisoned, n)
            out[f"{name}_attack_success_rate"] = metrics.percent(good_poisoned == poisoned.y)
    return out


def repair(model_path: str | os.PathLike, valid_path: str | os.PathLike, out: str | os.PathLike,
           method: str = "auto", seed: int = DEFAULT_SEED, force: bool = False, scale: str | None = None,
           report_clean: str | os.PathLike | None = None, report_poisoned: str | os.PathLike | None = None,
           config=None, overrides=()) -> dict:
    """Repair ``model_path`` with ``method`` from the clean ``valid_path``; save R to ``out``; return the decision.

    Returns the :data:`DECISION_KEYS` plus ``targets``, ``out``, ``gate``
    (for ``auto``) and ``report`` (when report files are given).
    Refuses to overwrite ``out`` without ``force`` before any work.
    ``config`` (the defense's ``Config``) or ``overrides`` (see :func:`configure`)
    change hyperparameters; the defaults are the defense's ``Config``.
    """
    from lab import defenses
    from lab.io import data, models
    from lab.seed import set_seed

    out = Path(out)
    if out.suffix not in (".keras", ".h5"):
        raise LabInputError(out, "a repaired-model file name ending in .keras or .h5", f"suffix {out.suffix or 'none'!r}")
    check_writable(out, force)
    defense_class = defenses.get(method)
    if defense_class.kind != "repair":
        raise LabInputError(None, f"a repair defense for --method ({', '.join(defenses.names('repair'))})",
                            f"{method!r}, a {defense_class.kind}")
    if config is None:
        config = configure(defense_class, overrides)
    clean_valid = data.load_h5(valid_path)
    clean = data.load_h5(report_clean) if report_clean else None
    poisoned = data.load_h5(report_poisoned) if report_poisoned else None
    badnet = models.load_model(model_path, scale=scale)
    badnet.check_data(clean_valid)
    set_seed(seed)
    started = clock()  # reused parts (lab.cache) count at their original cost
    result = defense_class(config).fit(badnet, clean_valid, seed=seed)
    summary = decision(result)
    summary["seconds"] = clock() - started
    repaired = result.model
    extra = {"defense": result.name, "method": summary["method"], "seed": seed, "backdoored": summary["backdoored"],
             "targets": summary["targets"], "holdout_clean_accuracy": summary["holdout_clean_accuracy"],
             "source_model": os.fspath(model_path), "source_sha256": models.sha256_file(model_path),
             "clean_valid": os.fspath(valid_path)}
    description = (f"repaired by {summary['method']} from {Path(model_path).name} with clean validation data "
                   f"({'backdoor suspected towards ' + str(summary['targets']) if summary['backdoored'] else 'no backdoor found' if summary['backdoored'] is False else 'no detection step'})")
    models.save_model(repaired.model, out, repaired.input_scale, description, force=force, extra=jsonable(extra, drop=True, array_limit=64))
    summary["out"] = os.fspath(out)
    if "gate" in result.details:  # auto: the gate's decision and each round it ran
        summary["gate"] = result.details["gate"]
        summary["rounds"] = [{**{k: v for k, v in r.items() if k != "gate_after"},
                              "gate_after": {k: r["gate_after"][k] for k in ("backdoored", "targets", "reason")}}
                             for r in result.details["rounds"]]
    if clean is not None or poisoned is not None:
        summary["report"] = report_sets(badnet, repaired, clean, poisoned, summary["targets"])
    return jsonable(summary, drop=True, array_limit=64)


def format_summary(summary: dict) -> str:
    """Human-readable lines for the CLI."""
    if summary["backdoored"] is None:
        verdict = "not assessed (this method repairs without detecting)"
    elif summary["backdoored"]:
        verdict = f"yes, suspected target {summary['target']}" + (
            f" (all suspected: {summary['targets']})" if len(summary["targets"]) > 1 else "")
    else:
        verdict = "no (model left unchanged)"
    lines = [f"backdoored: {verdict}", f"method: {summary['method']}",
             f"held-out clean accuracy: {summary['holdout_clean_accuracy']:.2f} %"
             if summary["holdout_clean_accuracy"] is not None else "held-out clean accuracy: n/a",
             f"seconds: {summary['seconds']:.1f}", f"repaired model: {summary['out']}"]
    if "gate" in summary:
        lines.insert(1, f"gate: {summary['gate']['reason']}")
        for number, done in enumerate(summary.get("rounds", []), 1):
            after = done["gate_after"]
            lines.insert(1 + number, f"round {number}: unlearned {done['targets']} (epoch {done['best_epoch']} kept); "
                         f"gate on the result: {'still backdoored towards ' + str(after['targets']) if after['backdoored'] else 'clean'}")
    for key, value in summary.get("report", {}).items():
        lines.append(f"report (never used to decide) {key.replace('_', ' ')}: {value:.2f} %")
    return "\n".join(lines)
