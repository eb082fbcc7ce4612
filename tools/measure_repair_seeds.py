"""Measure repair defenses on a BadNet: clean accuracy and ASR on the TEST sets before/after, seconds.

    PYTHONPATH=. python tools/measure_repair_seeds.py --root . --defenses auto neural-cleanse --seeds 0 1 2 \
        --out /work/notes/repair_runs.jsonl

--root: a lab root (data/cl/valid.h5, data/cl/test.h5, data/bd/bd_test.h5, models/bd_net.h5) or use
--model/--valid/--test/--poisoned-test. Only the clean validation set reaches a defense; the test sets
(clean and poisoned) only measure. One JSON line per (defense, seed) is appended to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=".")
    parser.add_argument("--model")
    parser.add_argument("--valid")
    parser.add_argument("--test")
    parser.add_argument("--poisoned-test")
    parser.add_argument("--defenses", nargs="+", default=["auto"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides (lab.repair.configure: dotted keys, python literals), e.g. repair.epochs=10")
    parser.add_argument("--label", default="")
    parser.add_argument("--gate-only", action="store_true", help="only run the gate (lab.defenses.gate.decide)")
    parser.add_argument("--real-scale", metavar="WEIGHTS",
                        help="time the defenses on real course weights (1283 classes) with 11,547 generated faces "
                             "(9 per class, labelled with the model's own answers: seconds and memory only)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)


    import numpy as np

    from lab import defenses
    from lab.evaluation import metrics
    from lab.io import data, models
    from lab.seed import set_seed

    if args.real_scale:
        return real_scale(args)
    root = Path(args.root)
    model_path = args.model or root / "models" / "bd_net.h5"
    valid = data.load_h5(args.valid or root / "data" / "cl" / "valid.h5")
    test = data.load_h5(args.test or root / "data" / "cl" / "test.h5")
    poisoned_path = args.poisoned_test or root / "data" / "bd" / "bd_test.h5"
    poisoned = data.load_h5(poisoned_path) if Path(poisoned_path).exists() else None
    badnet = models.load_model(model_path)

    def measure(model):
        clean = metrics.percent(model.predict_labels(test.x) == test.y)
        asr = metrics.percent(model.predict_labels(poisoned.x) == poisoned.y) if poisoned is not None else None
        return clean, asr

    before = measure(badnet)
    print(f"before: clean {before[0]:.2f} %, ASR {before[1]}", flush=True)
    from lab.defenses.repair import configure

    overrides = list(args.set)
    if args.gate_only:
        from lab.defenses import gate
        from lab.defenses.holdout import split_validation

        config = configure(defenses.get("auto"), overrides)
        for seed in args.seeds:
            set_seed(seed)
            train, _ = split_validation(valid, config.repair.holdout_fraction, seed)
            decision = gate.decide(badnet, train, config.gate, np.random.default_rng(seed), config.repair.max_suspects,
                                   config.repair.flow_share)
            row = {"label": args.label, "model": str(model_path), "gate_only": True, "seed": seed,
                   "overrides": overrides, **decision.summary()}
            print(json.dumps(row, default=str), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row, default=str) + "\n")
        return 0
    for name in args.defenses:
        cls = defenses.get(name)
        config = configure(cls, overrides)
        for seed in args.seeds:
            set_seed(seed)
            started = time.perf_counter()
            result = cls(config).fit(badnet, valid, seed=seed)
            seconds = time.perf_counter() - started
            after = measure(result.model if result.model is not None else result.classifier)
            details = {k: v for k, v in result.details.items()
                       if isinstance(v, (int, float, str, bool, list, dict, type(None))) and k != "history"}
            history = result.details.get("history")
            row = {"label": args.label, "model": str(model_path), "defense": name, "seed": seed,
                   "overrides": overrides, "clean_before": before[0], "asr_before": before[1],
                   "clean_after": after[0], "asr_after": after[1], "seconds": seconds,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "details": details}
            if history:
                row["history"] = history
                for r in history:
                    print("  epoch", r["epoch"], "holdout", round(r["holdout_accuracy"], 2), "l1",
                          [round(v, 1) for v in r["trigger_l1"]], "success", r["trigger_success"], flush=True)
            print(json.dumps({k: v for k, v in row.items() if k != "history"}, default=str), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row, default=str) + "\n")
    return 0


def real_scale(args) -> int:
    """Seconds and peak memory of each defense on the real weights with generated clean validation data."""
    from lab.course import bench
    from lab.io import models

    badnet = models.load_model(args.real_scale)
    started = time.perf_counter()
    valid = bench.real_scale_valid(badnet)
    print(f"{len(valid)} generated images for {badnet.n_classes} classes in {time.perf_counter() - started:.1f} s",
          flush=True)
    for seed in args.seeds:
        for row in bench.time_repairs(args.defenses, badnet, valid, seed, args.set):
            result = row.pop("result")
            row.update(label=args.label, real_scale=args.real_scale, seed=seed,
                       details={k: v for k, v in result.details.items()
                                if isinstance(v, (int, float, str, bool, dict, type(None))) and k != "history"})
            print(json.dumps(row, default=str), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
