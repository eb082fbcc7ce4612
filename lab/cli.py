"""``python -m lab COMMAND``: the lab's command line.

Every command prints one line ``error: <file>: expected ..., found ...`` and
exits with status 2 on bad input, instead of a TensorFlow trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _cmd_make_default(args: argparse.Namespace) -> int:
    from lab import default

    report = default.make_default(args.out, n_identities=args.identities, seed=args.seed, force=args.force,
                                  progress=not args.quiet)
    print(f"built the embedded default in {report['seconds']:.1f} s: "
          f"clean test accuracy {report['clean_accuracy']:.2f} %, attack success rate {report['attack_success_rate']:.2f} %")
    print(f"manifest: {report['manifest']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from lab import data, evaluation, models

    model = models.load_model(args.model, scale=args.scale)
    clean = data.load_h5(args.clean)
    poisoned = data.load_h5(args.poisoned) if args.poisoned else None
    result = evaluation.evaluate(model, clean, poisoned)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model: {args.model} ({model.n_classes} classes, input scale {model.input_scale}: {model.scale_source})")
    for key, value in result.items():
        if key.startswith("n_") or value is None:
            continue
        print(f"{key.replace('_', ' ')}: {value:.2f} %")
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
    make.set_defaults(handler=_cmd_make_default)

    evaluate = commands.add_parser("evaluate", help="clean accuracy and attack success rate of a model",
                                   description="Evaluate a model on a clean (and optionally a poisoned) course h5 "
                                               "file, like the course's eval.py.")
    evaluate.add_argument("--model", required=True, help="model file (.h5, .keras or DeepID weights .h5)")
    evaluate.add_argument("--clean", required=True, help="clean data file (h5: data (n,3,H,W) 0..255, label (n,))")
    evaluate.add_argument("--poisoned", help="poisoned data file; its labels are the attacker's target")
    evaluate.add_argument("--scale", choices=["raw", "unit"], help="model input scale: raw 0..255 or unit x/255 "
                          "(default: recorded with the model)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=_cmd_evaluate)
    return parser


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
