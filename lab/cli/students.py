"""Students' commands of ``python -m lab``: evaluate, prune, goodnet, fine-prune, detect, classify.

:func:`register` adds them to the lab's command line (:mod:`lab.cli`).
Every command prints one line ``error: <file>: expected ..., found ...`` and
exits with status 2 on bad input, instead of a TensorFlow trace.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lab.cli import arguments
from lab.io.manifest import dumps, jsonable  # strict JSON: a rate that does not exist is null, never NaN


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from lab.io import data, models
    from lab import evaluation

    # Data first: file problems are reported before TensorFlow starts.
    clean = data.load_h5(args.clean)
    poisoned = data.load_h5(args.poisoned) if args.poisoned else None
    model = models.load_model(args.model, scale=args.scale)
    backdoor = "auto" if args.backdoor_class is None else args.backdoor_class
    result = evaluation.evaluate(model, clean, poisoned, backdoor_class=backdoor)
    if args.json:
        print(dumps(result))
        return 0
    print(f"model: {args.model} ({model.n_classes} classes, input scale {model.input_scale}: {model.scale_source})")
    if "backdoor_class" in result:
        print(f"backdoor class (GoodNet's 'backdoor detected' answer): {result['backdoor_class']}")
    for key, value in result.items():
        if key.startswith("n_") or key == "backdoor_class" or value is None:
            continue
        print(f"{key.replace('_', ' ')}: {value:.2f} %")
    return 0


def _records(table, columns) -> list[dict]:
    return [{column: jsonable(row[column]) for column in columns} for _, row in table.iterrows()]


def _prune_outputs(out: Path, thresholds: list[float], force: bool) -> dict:
    from lab.defenses import pruning
    from lab.errors import check_output_location, check_writable
    from lab.io.models import META_SUFFIX

    check_output_location(out, "--out", "directory")
    paths = {"sweep": out / "sweep.csv", "thresholds": out / "thresholds.csv", "plot": out / "sweep.png",
             "report": out / "report.json"}
    model_files = [out / pruning.threshold_filename(t) for t in thresholds]
    for path in [*paths.values(), *model_files, *(Path(f"{m}{META_SUFFIX}") for m in model_files)]:
        check_writable(path, force)
    return paths


def _cmd_prune(args: argparse.Namespace) -> int:
    from lab.defenses import pruning
    from lab.evaluation import metrics, plots
    from lab.io import data, models

    out = Path(args.out)
    # Everything that can be checked is checked before the sweep (minutes on the course files), not after it.
    pruning.check_thresholds(args.rule, args.thresholds)
    paths = _prune_outputs(out, args.thresholds, args.force)
    clean = data.load_h5(args.valid)
    poisoned = data.load_h5(args.poisoned_valid) if args.poisoned_valid else None
    model = models.load_model(args.model, scale=args.scale)
    pruning.plan_sweep(model, args.layer, args.measure, args.method)
    model.check_data(clean)
    if poisoned is not None:
        model.check_data(poisoned)
    if args.rule == "first-reach":  # one forward pass: a drop above the starting accuracy is never reached
        pruning.check_thresholds(args.rule, args.thresholds,
                                 metrics.clean_accuracy(model.predict_labels(clean.x), clean.y))
    start = time.perf_counter()
    table = pruning.sweep(model, clean, poisoned, args.layer, args.measure, args.order, args.method,
                          progress=not args.json and sys.stderr.isatty())
    selection = pruning.select_thresholds(table, args.thresholds, args.rule)
    out.mkdir(parents=True, exist_ok=True)  # also when no threshold was reached and no model is saved
    saved = pruning.save_pruned_models(model, table, selection, out, force=args.force)
    seconds = time.perf_counter() - start
    table.to_csv(paths["sweep"], index=False)
    saved.to_csv(paths["thresholds"], index=False)
    plots.plot_sweep(table, saved).savefig(paths["plot"], dpi=120)
    report = {
        "sweep": _records(table, ["channels_pruned", "fraction_pruned", "channel", "clean_accuracy",
                                  "accuracy_drop", "attack_success_rate"]),
        "thresholds": _records(saved, ["threshold", "found", "channels_pruned", "clean_accuracy", "accuracy_drop",
                                       "attack_success_rate", "model_path", "note"]),
        "rule": args.rule, "rule_text": pruning.RULES[args.rule], "seconds": seconds,
        "layer": args.layer, "measure": args.measure, "order": args.order, "method": table.attrs["method"],
        "method_reason": table.attrs["method_reason"], "model": args.model, "input_scale": model.input_scale,
        "valid": args.valid, "poisoned_valid": args.poisoned_valid,
        "files": {key: str(path) for key, path in paths.items()},
    }
    paths["report"].write_text(dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(dumps(report))
    else:
        _print_prune_report(report)
    missing = pruning.unreached(saved)
    if missing:
        # The sweep and the reached thresholds' models are kept (minutes of work); the exit status says it fell short.
        arguments.print_error(f"--thresholds: expected accuracy drops the sweep reaches, found {'; '.join(missing)} "
                              f"(the sweep and the other thresholds' results are in {out})")
        return 2
    return 0


def _print_prune_report(report: dict) -> None:
    start = report["sweep"][0]
    asr = "" if start["attack_success_rate"] is None else f", attack success rate {start['attack_success_rate']:.2f} %"
    print(f"pruned {report['layer']} ({len(report['sweep']) - 1} channels, {report['order']} mean {report['measure']} "
          f"activation) in {report['seconds']:.1f} s, method {report['method']}")
    print(f"before pruning: clean accuracy {start['clean_accuracy']:.2f} %{asr}")
    print(f"rule: {report['rule']} = {report['rule_text']}")
    for row in report["thresholds"]:
        if not row["found"]:
            print(f"  {row['threshold']:g} pp: {row['note']}")
            continue
        asr = "" if row["attack_success_rate"] is None else f", attack success rate {row['attack_success_rate']:.2f} %"
        print(f"  {row['threshold']:g} pp: {row['channels_pruned']} channels, clean accuracy "
              f"{row['clean_accuracy']:.2f} % (drop {row['accuracy_drop']:.2f}){asr} -> {row['model_path']}")
    print(f"sweep table: {report['files']['sweep']}; plot: {report['files']['plot']}; "
          f"report: {report['files']['report']}")


def _cmd_goodnet(args: argparse.Namespace) -> int:
    from lab.defenses import goodnet
    from lab.errors import check_output_location, check_writable
    from lab.io import models
    from lab.io.models import META_SUFFIX

    goodnet.check_goodnet_path(args.out)
    check_output_location(args.out, "--out", "file")
    check_writable(args.out, args.force)
    check_writable(args.out + META_SUFFIX, args.force)
    badnet = models.load_model(args.badnet, scale=args.scale)
    pruned = models.load_model(args.pruned, scale=args.scale)
    if args.targets:
        args.targets = goodnet.check_targets(args.targets, badnet.n_classes, "--targets")  # sorted, distinct
    repaired = goodnet.build_goodnet(badnet, pruned, targets=args.targets)
    path = goodnet.save_goodnet(repaired, args.out, force=args.force)
    n_classes = badnet.n_classes
    where = (f"disagrees while {args.badnet} answers one of {args.targets}" if args.targets
             else "disagrees")
    print(f"GoodNet: {path} ({n_classes + 1} outputs: classes 0..{n_classes - 1} from {args.badnet} where "
          f"{args.pruned} agrees, class {n_classes} = backdoor where it {where}; input scale {repaired.input_scale})")
    return 0


def _cmd_fine_prune(args: argparse.Namespace) -> int:
    from lab.defenses import finepruning
    from lab.errors import LabInputError, check_writable
    from lab.io import data, models

    if args.recipe not in finepruning.RECIPES:
        raise LabInputError(None, f"--recipe one of {', '.join(finepruning.RECIPES)}", repr(args.recipe))
    check_writable(args.out, args.force)
    clean = data.load_h5(args.valid)  # data first: file problems are reported before TensorFlow starts
    poisoned = data.load_h5(args.poisoned_valid) if args.poisoned_valid else None
    badnet = models.load_model(args.model, scale=args.scale)
    recipe = finepruning.RECIPES[args.recipe]
    if args.epochs is not None:
        recipe = recipe.replace(epochs=args.epochs)
    report = {"poisoned_valid_attack_success_rate": poisoned} if poisoned is not None else None
    result = finepruning.fine_prune(badnet, clean, args.threshold, args.channels, config=recipe,
                                    holdout_fraction=args.holdout_fraction, seed=args.seed, report=report,
                                    progress=not args.json and sys.stderr.isatty())
    path = finepruning.save_fine_pruned(result, args.out, force=args.force)
    best = result.history.iloc[result.best_epoch]
    summary = {"model": str(path), "pruned_layer": result.layer, "channels_pruned": len(result.pruned_channels),
               "pruned_channels": result.pruned_channels, "recipe": args.recipe, "epochs": recipe.epochs,
               "best_epoch": result.best_epoch, "holdout_accuracy": float(best["holdout_accuracy"]),
               "n_train": len(result.train), "n_holdout": len(result.holdout), "seconds": result.seconds,
               "poisoned_valid_attack_success_rate": (None if poisoned is None else
                                                       float(best["poisoned_valid_attack_success_rate"]))}
    if args.json:
        print(dumps(summary))
        return 0
    print(f"fine-pruned {result.layer}: {summary['channels_pruned']} channels pruned, fine-tuned {recipe.epochs} "
          f"epochs ({args.recipe} recipe) on {summary['n_train']} clean images in {result.seconds:.1f} s")
    print(f"epoch {result.best_epoch} kept: held-out clean accuracy {summary['holdout_accuracy']:.2f} % "
          f"({summary['n_holdout']} images)")
    if poisoned is not None:
        print(f"attack success rate on {args.poisoned_valid} (reported, never used to choose): "
              f"{summary['poisoned_valid_attack_success_rate']:.2f} %")
    print(f"B'': {path}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from lab import defenses
    from lab.errors import LabInputError
    from lab.evaluation import comparison_table
    from lab.io import data, models

    detector_class = defenses.get(args.method)
    if args.budget is None:
        args.budget = detector_class.default_budget
    if args.targets and not detector_class.takes_targets:
        takes = " or ".join(f"--method {name}" for name in defenses.names("detector")
                            if defenses.REGISTRY[name].takes_targets)
        raise LabInputError(None, f"--targets only with {takes}", f"--method {args.method}")
    if detector_class.wraps_repair and not args.repaired:
        raise LabInputError(None, f"--repaired FILE for the {args.method} detector (e.g. B'' from fine-prune or R "
                            "from repair)", "none")
    clean = data.load_h5(args.valid)  # data first: file problems are reported before TensorFlow starts
    clean_test = data.load_h5(args.clean_test) if args.clean_test else None
    poisoned_test = data.load_h5(args.poisoned_test) if args.poisoned_test else None
    if poisoned_test is not None and clean_test is None:
        raise LabInputError(None, "--clean-test FILE with --poisoned-test (a detector is judged on both)", "none")
    badnet = models.load_model(args.badnet, scale=args.scale)
    badnet.check_data(clean)
    if args.targets:
        from lab.defenses.goodnet import check_targets

        args.targets = check_targets(args.targets, badnet.n_classes, "--targets")  # sorted, distinct
    repair = None
    if detector_class.wraps_repair:
        repaired = models.load_model(args.repaired, scale=args.scale)
        given = {"path": args.repaired, **({"targets": args.targets} if args.targets else {})}
        # --targets: the suspected targets a repair named from clean data, as if this repair had named them.
        repair = defenses.DefenseResult("given", "repair", repaired, 0.0, given, model=repaired,
                                        backdoored=True if args.targets else None, targets=list(args.targets or []))
    config = detector_class.detect_config({"repair": repair, "budget": args.budget,
                                           "holdout_fraction": args.holdout_fraction, "n_overlays": args.overlays,
                                           "alpha": args.alpha, "targets": args.targets})
    result = detector_class(config).fit(badnet, clean, seed=args.seed)
    detector = result.classifier
    calibration = {key: value for key, value in getattr(detector, "calibration", {}).items() if key != "clean_entropy"}
    summary = {"method": args.method, "threshold": getattr(detector, "threshold", None), "calibration": calibration,
               "seconds": result.seconds, "backdoor_class": detector.backdoor_class, "test": None}
    if clean_test is not None:
        table = comparison_table({"badnet": badnet, "detector": detector}, clean_test, poisoned_test)
        summary["test"] = {name: {key: jsonable(value) for key, value in row.items()}
                           for name, row in table.to_dict(orient="index").items()}
    if args.json:
        print(dumps(summary))
        return 0
    unit = detector_class.threshold_unit
    if summary["threshold"] is None:  # G(B, R): nothing calibrated
        where = f" and B answers one of {args.targets}" if args.targets else ""
        print(f"GoodNet on {args.badnet} and {args.repaired}: class {detector.backdoor_class} (backdoor) where they "
              f"disagree{where}; no threshold to calibrate")
    else:
        print(f"{args.method} detector: threshold {detector.threshold:.4f} {unit}, calibrated on "
              f"{calibration['n']} clean held-out images in {result.seconds:.1f} s")
        rate = calibration.get("false_positive_rate", calibration.get("false_rejection_rate"))
        print(f"clean held-out images flagged: {rate:.2f} % (budget {args.budget:g} %); flagged inputs get class "
              f"{detector.backdoor_class} (backdoor)")
    for name, row in (summary["test"] or {}).items():
        asr = "" if row["attack_success_rate"] is None else (
            f", attack success rate {row['attack_success_rate']:.2f} %, detection rate {row['detection_rate']:.2f} %")
        print(f"  {name} on the test sets: clean accuracy {row['clean_accuracy']:.2f} %, clean flagged "
              f"{row['clean_false_positive_rate']:.2f} %{asr}")
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from lab.io import images as classify, models

    model = models.load_model(args.model, scale=args.scale)
    for path, label in zip(args.images, classify.classify_files(model, args.images)):
        print(f"{path}\t{label}")
    return 0


def _cmd_repair(args: argparse.Namespace) -> int:
    from lab.defenses import repair

    summary = repair.repair(args.model, args.valid, args.out, method=args.method, seed=args.seed, force=args.force,
                            scale=args.scale, report_clean=args.report_clean, report_poisoned=args.report_poisoned,
                            overrides=args.set)
    if args.json:
        print(dumps(summary))
        return 0
    print(repair.format_summary(summary))
    return 0


def register(commands) -> None:
    """Add the students' commands to ``commands`` (argparse subparsers of ``python -m lab``)."""
    evaluate = commands.add_parser("evaluate", help="clean accuracy and attack success rate of a model "
                                   "(and detection rates of a GoodNet)",
                                   description="Evaluate a model on a clean (and optionally a poisoned) course h5 "
                                               "file, like the course's eval.py.")
    evaluate.add_argument("--model", required=True, help="model file (.h5, .keras or DeepID weights .h5)")
    evaluate.add_argument("--clean", required=True, help="clean data file (h5: data (n,3,H,W) 0..255, label (n,))")
    evaluate.add_argument("--poisoned", help="poisoned data file; its labels are the attacker's target")
    evaluate.add_argument("--scale", choices=["raw", "unit"], help="model input scale: raw 0..255 or unit x/255 "
                          "(default: recorded with the model)")
    evaluate.add_argument("--backdoor-class", type=arguments.positive_int, metavar="N",
                          help="treat class N as a GoodNet's 'backdoor' answer and report detection and clean "
                               "false-positive rates (default: recorded by the lab with its GoodNets)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=_cmd_evaluate)
    _add_prune(commands)
    _add_goodnet(commands)
    _add_fine_prune(commands)
    _add_repair(commands)
    _add_detect(commands)
    _add_classify(commands)


def _add_scale(command) -> None:
    command.add_argument("--scale", choices=["raw", "unit"], help="model input scale: raw 0..255 or unit x/255 "
                         "(default: recorded with the model)")


def _add_prune(commands) -> None:
    from lab.defenses import pruning

    prune = commands.add_parser("prune", help="prune a layer channel by channel; save models at accuracy-drop thresholds",
                                description="Rank the channels of --layer by mean --measure activation on clean "
                                            "validation data, prune them one at a time, record clean accuracy (and "
                                            "attack success rate, for reporting only) after every step, and save the "
                                            "really pruned model for every threshold. Writes DIR/sweep.csv, "
                                            "DIR/thresholds.csv, DIR/sweep.png, DIR/report.json and DIR/pruned_<X>.h5.")
    prune.add_argument("--model", required=True, help="the BadNet (.h5, .keras or DeepID weights .h5)")
    prune.add_argument("--valid", required=True, help="clean validation data (h5); ranks channels and picks thresholds")
    prune.add_argument("--poisoned-valid", help="poisoned validation data (h5), for the attack success rate only")
    prune.add_argument("--layer", default=pruning.DEFAULT_LAYER, help="layer whose channels are pruned (default conv_3)")
    prune.add_argument("--measure", default=pruning.DEFAULT_MEASURE,
                       help="layer whose mean activation ranks the channels (default pool_3)")
    prune.add_argument("--order", choices=pruning.ORDERS, default="increasing",
                       help="prune least active first (increasing, default) or most active first (decreasing)")
    prune.add_argument("--thresholds", type=arguments.percentage_points, nargs="+", default=list(pruning.DEFAULT_THRESHOLDS), metavar="X",
                       help="clean accuracy drops in percentage points (default 2 4 10)")
    prune.add_argument("--rule", choices=list(pruning.RULES), default="first-reach",
                       help="first-reach: first step whose drop reaches X (the assignment's rule, default); "
                            "last-within: the step before; relative: first step whose drop reaches X %% of the "
                            "starting accuracy")
    prune.add_argument("--method", choices=pruning.METHODS, default="auto",
                       help="how the sweep computes each step (all exact; default auto: the fastest that applies)")
    _add_scale(prune)
    prune.add_argument("--out", required=True, metavar="DIR", help="directory for the outputs")
    prune.add_argument("--force", action="store_true", help="overwrite existing output files")
    prune.add_argument("--json", action="store_true", help="print one JSON object")
    prune.set_defaults(handler=_cmd_prune)


def _add_goodnet(commands) -> None:
    goodnet = commands.add_parser("goodnet", help="build the repaired network G (N+1 classes) from B and B'",
                                  description="G answers the BadNet's class where the BadNet and the pruned model "
                                              "agree and class N (backdoor) where they disagree; saved as one .keras "
                                              "file that plain keras.models.load_model opens in safe mode.")
    goodnet.add_argument("--badnet", required=True, help="the BadNet B")
    goodnet.add_argument("--pruned", required=True, help="the pruned model B' (e.g. DIR/pruned_4.h5 from prune)")
    _add_scale(goodnet)
    goodnet.add_argument("--out", required=True, metavar="FILE", help="the GoodNet file (.keras)")
    goodnet.add_argument("--targets", type=int, nargs="+", metavar="CLASS",
                         help="targeted GoodNet: flag only disagreements where B answers one of these suspected "
                              "targets (e.g. the targets `repair` printed)")
    goodnet.add_argument("--force", action="store_true", help="overwrite an existing file")
    goodnet.set_defaults(handler=_cmd_goodnet)


def _add_fine_prune(commands) -> None:
    from lab.constants import DEFAULT_SEED
    from lab.defenses import finepruning

    fine = commands.add_parser(
        "fine-prune", help="fine-pruning: prune, then fine-tune on clean data (B''), as in 05",
        description="Split the clean validation data per class into a fine-tuning part and a held-out part, prune "
                    "conv_3 at the threshold (ranked and chosen on the fine-tuning part), fine-tune with the pruned "
                    "channels kept at zero, keep the epoch with the best held-out clean accuracy, save B''. "
                    "Poisoned data, if given, is reported per epoch and never chooses anything.")
    fine.add_argument("--model", required=True, help="the BadNet B")
    fine.add_argument("--valid", required=True, help="clean validation data (h5): the only data that chooses")
    fine.add_argument("--poisoned-valid", help="poisoned validation data (h5), for the attack success rate only")
    how = fine.add_mutually_exclusive_group()
    how.add_argument("--threshold", type=arguments.percentage_points, default=4.0, metavar="X",
                     help="prune at the first step whose clean accuracy drop reaches X pp (default 4)")
    how.add_argument("--channels", type=arguments.int_at_least(0), default=None, metavar="K",
                     help="prune exactly K channels instead (0: fine-tuning alone)")
    fine.add_argument("--recipe", default="unlearning", help=f"fine-tuning recipe: {', '.join(finepruning.RECIPES)} "
                      "(default unlearning, as in 05 and 07)")
    fine.add_argument("--epochs", type=arguments.int_at_least(0), default=None, help="epochs of fine-tuning (default: the recipe's)")
    fine.add_argument("--holdout-fraction", type=arguments.fraction, default=1 / 3, metavar="F",
                      help="share of each class held out to choose the epoch (default 1/3)")
    fine.add_argument("--seed", type=arguments.seed, default=DEFAULT_SEED, help=f"split and training seed (default {DEFAULT_SEED})")
    _add_scale(fine)
    fine.add_argument("--out", required=True, metavar="FILE", help="B'' (.h5 or .keras)")
    fine.add_argument("--force", action="store_true", help="overwrite an existing file")
    fine.add_argument("--json", action="store_true", help="print one JSON object")
    fine.set_defaults(handler=_cmd_fine_prune)


def _listing(kind: str) -> str:
    """``name: summary; ...`` of the registered defenses of ``kind``, for ``--help`` (argparse-escaped)."""
    from lab import defenses

    return "; ".join(f"{name}: {defenses.REGISTRY[name].summary().replace('``', '')}"
                     for name in defenses.names(kind)).replace("%", "%%")


def _add_detect(commands) -> None:
    from lab import defenses
    from lab.constants import DEFAULT_SEED

    detectors = defenses.names("detector")
    calibrated = [name for name in detectors if defenses.REGISTRY[name].threshold_unit]
    wrapping = [name for name in detectors if defenses.REGISTRY[name].wraps_repair]

    detect = commands.add_parser(
        "detect", help="calibrate a run-time detector (confidence or STRIP) on clean data; judge it on test sets",
        description="Calibrate the confidence detector (B and a repaired model R) or STRIP (around B) on the clean "
                    "held-out part of the validation data for a false-positive budget, as in 07; with --clean-test "
                    "(and --poisoned-test) report B and the detector (class N = flagged) on the test sets.")
    detect.add_argument("--method", choices=detectors, required=True,
                        help=f"which detector (the registered ones): {_listing('detector')}")
    detect.add_argument("--badnet", required=True, help="the BadNet B")
    detect.add_argument("--repaired", help=f"the repaired model R that {' and '.join(wrapping)} compare B with "
                        "(e.g. B'')")
    detect.add_argument("--targets", type=int, nargs="+", metavar="CLASS",
                        help="goodnet: the targeted GoodNet, flagging only where B answers one of these classes")
    detect.add_argument("--valid", required=True, help="clean validation data (h5): the only data that calibrates")
    detect.add_argument("--budget", type=arguments.float_between(0, 100, "a percentage", low_open=False), default=None, metavar="PERCENT",
                        help="%% of clean held-out inputs the detector may flag (default " + ", ".join(
                            f"{defenses.REGISTRY[name].default_budget:g} for {name}" for name in calibrated) + ")")
    detect.add_argument("--overlays", type=arguments.positive_int, default=20, help="STRIP: clean images each input is blended with")
    detect.add_argument("--alpha", type=arguments.fraction, default=0.5, help="STRIP: the input's weight in each blend")
    detect.add_argument("--holdout-fraction", type=arguments.fraction, default=1 / 3, metavar="F",
                        help="share of each class held out to calibrate on (default 1/3)")
    detect.add_argument("--seed", type=arguments.seed, default=DEFAULT_SEED, help=f"split seed (default {DEFAULT_SEED})")
    detect.add_argument("--clean-test", help="clean test data (h5) to judge B and the detector on")
    detect.add_argument("--poisoned-test", help="poisoned test data (h5) to judge B and the detector on")
    _add_scale(detect)
    detect.add_argument("--json", action="store_true", help="print one JSON object")
    detect.set_defaults(handler=_cmd_detect)


def _add_classify(commands) -> None:
    classify = commands.add_parser("classify", help="class of each face image (PNG/JPEG 55x47 RGB)",
                                   description="Print 'path<TAB>class' for every image: a class in [0, N], where N "
                                               "means 'backdoor' for a GoodNet. Images must be 47 pixels wide and 55 "
                                               "high; the model's input scale is applied.")
    classify.add_argument("--model", required=True, help="model file (.h5, .keras or DeepID weights .h5)")
    _add_scale(classify)
    classify.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    classify.set_defaults(handler=_cmd_classify)


def _add_repair(commands) -> None:
    from lab.seed import DEFAULT_SEED

    repair = commands.add_parser(
        "repair", help="repair a BadNet from clean validation data (N classes out; auto: detect, then unlearn)",
        description="Decide from clean validation data whether the model looks backdoored (and towards which "
                    "class), repair it (auto: iterative reverse-and-unlearn with distillation; a model that looks "
                    "clean is left unchanged) and save the repaired N-class model (.keras or .h5, loadable with "
                    "plain keras.models.load_model in safe mode). --report-clean/--report-poisoned files are only "
                    "measured (and a GoodNet on B and the repaired model reports detection and false positives); "
                    "they never choose anything.")
    repair.add_argument("--model", required=True, help="the BadNet (.h5, .keras or DeepID weights .h5)")
    repair.add_argument("--valid", required=True, help="clean validation data (h5): the only data that decides")
    repair.add_argument("--out", required=True, metavar="FILE", help="the repaired model (.keras or .h5)")
    repair.add_argument("--method", default="auto", metavar="NAME",
                        help=f"the repair (default auto), one of the registered ones: {_listing('repair')}")
    repair.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed (default {DEFAULT_SEED})")
    repair.add_argument("--report-clean", metavar="FILE", help="clean test data (h5), measured only")
    repair.add_argument("--report-poisoned", metavar="FILE", help="poisoned test data (h5), measured only: attack "
                        "success of B and the repaired model, detection of the GoodNet on both")
    repair.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="change a hyperparameter of the method's Config (dotted keys for nested ones, e.g. "
                             "repair.epochs=10 gate.reverse.epochs=20); unset keys keep the Config's defaults")
    _add_scale(repair)
    repair.add_argument("--force", action="store_true", help="overwrite an existing output file")
    repair.add_argument("--json", action="store_true", help="print one JSON object (keys backdoored, target, "
                        "method, seconds, holdout_clean_accuracy, ...)")
    repair.set_defaults(handler=_cmd_repair)
