"""``python -m lab COMMAND``: the lab's command line.

Every command prints one line ``error: <file>: expected ..., found ...`` and
exits with status 2 on bad input, instead of a TensorFlow trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _cmd_make_default(args: argparse.Namespace) -> int:
    from lab import default

    report = default.make_default(args.out, n_identities=args.identities, seed=args.seed, force=args.force,
                                  progress=not args.quiet, write_train=args.with_train)
    print(f"built the embedded default in {report['seconds']:.1f} s: "
          f"clean test accuracy {report['clean_accuracy']:.2f} %, attack success rate {report['attack_success_rate']:.2f} %")
    print(f"manifest: {report['manifest']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from lab import data, evaluation, models

    # Data first: file problems are reported before TensorFlow starts.
    clean = data.load_h5(args.clean)
    poisoned = data.load_h5(args.poisoned) if args.poisoned else None
    model = models.load_model(args.model, scale=args.scale)
    backdoor = "auto" if args.backdoor_class is None else args.backdoor_class
    result = evaluation.evaluate(model, clean, poisoned, backdoor_class=backdoor)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model: {args.model} ({model.n_classes} classes, input scale {model.input_scale}: {model.scale_source})")
    if "backdoor_class" in result:
        print(f"backdoor class (GoodNet's 'backdoor detected' answer): {result['backdoor_class']}")
    for key, value in result.items():
        if key.startswith("n_") or key == "backdoor_class" or value is None:
            continue
        print(f"{key.replace('_', ' ')}: {value:.2f} %")
    return 0


def _json_value(value):
    """numpy/pandas scalars to JSON; NaN and <NA> to null."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value


def _records(table, columns) -> list[dict]:
    return [{column: _json_value(row[column]) for column in columns} for _, row in table.iterrows()]


def _prune_outputs(out: Path, thresholds: list[float], force: bool) -> dict:
    from lab import pruning
    from lab.errors import LabInputError, check_writable

    if out.exists() and not out.is_dir():
        raise LabInputError(out, "a directory for the sweep's outputs", "a file")
    paths = {"sweep": out / "sweep.csv", "thresholds": out / "thresholds.csv", "plot": out / "sweep.png",
             "report": out / "report.json"}
    model_files = [out / pruning.threshold_filename(t) for t in thresholds]
    for path in [*paths.values(), *model_files]:
        check_writable(path, force)
    return paths


def _cmd_prune(args: argparse.Namespace) -> int:
    from lab import data, models, plots, pruning

    out = Path(args.out)
    pruning.check_thresholds(args.rule, args.thresholds)  # fail before minutes of work, not after
    paths = _prune_outputs(out, args.thresholds, args.force)
    model = models.load_model(args.model, scale=args.scale)
    clean = data.load_h5(args.valid)
    poisoned = data.load_h5(args.poisoned_valid) if args.poisoned_valid else None
    start = time.perf_counter()
    table = pruning.sweep(model, clean, poisoned, args.layer, args.measure, args.order, args.method,
                          progress=not args.json and sys.stderr.isatty())
    selection = pruning.select_thresholds(table, args.thresholds, args.rule)
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
    paths["report"].write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report))
        return 0
    _print_prune_report(report)
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
    from lab import goodnet, models
    from lab.errors import check_writable

    check_writable(args.out, args.force)
    badnet = models.load_model(args.badnet, scale=args.scale)
    pruned = models.load_model(args.pruned, scale=args.scale)
    repaired = goodnet.build_goodnet(badnet, pruned)
    path = goodnet.save_goodnet(repaired, args.out, force=args.force)
    n_classes = badnet.n_classes
    print(f"GoodNet: {path} ({n_classes + 1} outputs: classes 0..{n_classes - 1} from {args.badnet} where "
          f"{args.pruned} agrees, class {n_classes} = backdoor; input scale {repaired.input_scale})")
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from lab import classify, models

    model = models.load_model(args.model, scale=args.scale)
    for path, label in zip(args.images, classify.classify_files(model, args.images)):
        print(f"{path}\t{label}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description="BadNet Pruning Lab command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    make = commands.add_parser("make-default", help="build the embedded default data and BadNet (Lab 3 layout)",
                               description="Generate SynthFaces data, train the pruning-aware default BadNet and "
                                           "write data/ and models/ under OUT with a SHA-256 manifest.")
    make.add_argument("--out", required=True, help="directory that receives data/ and models/")
    make.add_argument("--identities", type=int, default=None, help="number of face identities (classes); default 100")
    make.add_argument("--seed", type=int, default=None, help="generation and training seed; default 1234")
    make.add_argument("--force", action="store_true", help="overwrite existing files")
    make.add_argument("--quiet", action="store_true", help="no progress bars")
    make.add_argument("--with-train", action="store_true",
                      help="also write the clean training images as data/cl/train.h5 (for make-badnet)")
    make.set_defaults(handler=_cmd_make_default)

    evaluate = commands.add_parser("evaluate", help="clean accuracy and attack success rate of a model "
                                   "(and detection rates of a GoodNet)",
                                   description="Evaluate a model on a clean (and optionally a poisoned) course h5 "
                                               "file, like the course's eval.py.")
    evaluate.add_argument("--model", required=True, help="model file (.h5, .keras or DeepID weights .h5)")
    evaluate.add_argument("--clean", required=True, help="clean data file (h5: data (n,3,H,W) 0..255, label (n,))")
    evaluate.add_argument("--poisoned", help="poisoned data file; its labels are the attacker's target")
    evaluate.add_argument("--scale", choices=["raw", "unit"], help="model input scale: raw 0..255 or unit x/255 "
                          "(default: recorded with the model)")
    evaluate.add_argument("--backdoor-class", type=int, metavar="N",
                          help="treat class N as a GoodNet's 'backdoor' answer and report detection and clean "
                               "false-positive rates (default: recorded by the lab with its GoodNets)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=_cmd_evaluate)
    _add_prune(commands)
    _add_goodnet(commands)
    _add_classify(commands)
    from lab import instructor_cli

    instructor_cli.register(commands)
    _add_autograde(commands)
    return parser


def _add_autograde(commands) -> None:
    from lab import autograde

    grade = commands.add_parser("autograde", help="(instructors) grade submitted notebooks with nbgrader: points "
                                "per student and exercise",
                                description=autograde.__doc__.split("\n\n")[0] + " Hidden tests come from the "
                                "source notebooks; a notebook that crashes in one exercise keeps the points of "
                                "the others.")
    autograde.add_arguments(grade)
    grade.set_defaults(handler=autograde.run)


def _add_scale(command) -> None:
    command.add_argument("--scale", choices=["raw", "unit"], help="model input scale: raw 0..255 or unit x/255 "
                         "(default: recorded with the model)")


def _add_prune(commands) -> None:
    from lab import pruning

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
    prune.add_argument("--thresholds", type=float, nargs="+", default=list(pruning.DEFAULT_THRESHOLDS), metavar="X",
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
    goodnet.add_argument("--force", action="store_true", help="overwrite an existing file")
    goodnet.set_defaults(handler=_cmd_goodnet)


def _add_classify(commands) -> None:
    classify = commands.add_parser("classify", help="class of each face image (PNG/JPEG 55x47 RGB)",
                                   description="Print 'path<TAB>class' for every image: a class in [0, N], where N "
                                               "means 'backdoor' for a GoodNet. Images must be 47 pixels wide and 55 "
                                               "high; the model's input scale is applied.")
    classify.add_argument("--model", required=True, help="model file (.h5, .keras or DeepID weights .h5)")
    _add_scale(classify)
    classify.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    classify.set_defaults(handler=_cmd_classify)


def main(argv: list[str] | None = None) -> int:
    from lab.errors import LabError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
