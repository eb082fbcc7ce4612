"""Measure every defense on every kind of BadNet: the goal table of the repair issue.

For each BadNet (the embedded default, and those ``make-badnet`` makes on the
default's data with every trigger and attack kind it offers, plain and
pruning-aware) and each defense (every one in ``lab.defenses.REGISTRY``, plus
the GoodNet on fine-pruning and on auto, plain and targeted: :data:`VARIANTS`), it reports clean accuracy and attack success
rate before and after, detection and clean false positives for detectors,
and seconds. Defenses see the BadNet and the clean validation set only;
poisoned test data only reports.

Everything is cached under ``--out`` (default ``build/repairs``), so a run
that is stopped resumes where it was:

    build/repairs/badnets/<name>-<key>/   one make-badnet folder per BadNet; <key> hashes its parameters
    build/repairs/rows/<name>-<key>/<defense>-seed<S>.json   one result per BadNet x defense x seed
    build/repairs/repairs.csv, repairs.md   the table (rewritten after every row)

Usage (from the repository root; long: run it niced)::

    nice -n 10 python tools/measure_repairs.py                      # everything (hours on 2 cores)
    python tools/measure_repairs.py --list                           # the BadNets and defenses it knows
    python tools/measure_repairs.py --badnets default blended-pa --defenses fine-pruning
    python tools/measure_repairs.py --defenses none                  # build the BadNets, report their ASR only
    python tools/measure_repairs.py --table                          # rewrite the table from cached rows

The default's data (with its training file) is built first when ``--data``
has none: ``python -m lab make-default --out build/default --with-train``.
Timings are wall-clock seconds on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: import this checkout's lab
    sys.path.insert(0, str(ROOT))

HARNESS_VERSION = 1  # bump when a row's meaning changes: old cached rows are then ignored
GOAL_ASR = 1.0            # repaired model: attack success rate at most this (percent) ...
GOAL_CLEAN_LOSS = 2.0     # ... losing at most this many points of clean accuracy
GOAL_DETECTION = 95.0     # detector: at least this share of poisoned inputs flagged ...
GOAL_FALSE_POSITIVES = 3.0  # ... at most this share of clean inputs flagged
MULTI = ("sunglasses", "eyebrows", "lipstick")  # the 2020 course's multi-trigger multi-target BadNet


@dataclasses.dataclass(frozen=True)
class BadNetSpec:
    """A BadNet to build with make-badnet (``triggers`` empty: the data folder's own BadNet)."""

    triggers: tuple[str, ...] = ()
    all_to_all: bool = False
    pruning_aware: bool = False
    noise_fraction: float = 0.0
    poison_fraction: float | None = None

    @property
    def kind(self) -> str:
        if not self.triggers:
            return "default"
        return "all-to-all" if self.all_to_all else ("all-to-one" if len(self.triggers) == 1 else "multi-trigger")


def _catalogue() -> dict[str, BadNetSpec]:
    """Every BadNet the table covers, most informative first (a partial run still says the most)."""
    from lab.attacks.triggers import TRIGGERS

    specs = {"default": BadNetSpec()}
    whole_image = [t for t in TRIGGERS if t in ("blended", "warp")]
    for trigger in whole_image:
        specs[f"{trigger}-pa"] = BadNetSpec((trigger,), pruning_aware=True)
    for trigger in whole_image:
        specs[trigger] = BadNetSpec((trigger,))
    specs["all-to-all"] = BadNetSpec(("sunglasses",), all_to_all=True)
    specs["multi"] = BadNetSpec(MULTI)
    specs["all-to-all-pa"] = BadNetSpec(("sunglasses",), all_to_all=True, pruning_aware=True)
    specs["multi-pa"] = BadNetSpec(MULTI, pruning_aware=True)
    specs["warp-noise"] = BadNetSpec(("warp",), noise_fraction=1.0)
    for trigger in TRIGGERS:
        if trigger not in whole_image:
            specs[trigger] = BadNetSpec((trigger,))
            specs[f"{trigger}-pa"] = BadNetSpec((trigger,), pruning_aware=True)
    return specs


# ---------------------------------------------------------------------------- defenses


@dataclasses.dataclass
class Outcome:
    """What a defense gives back, in the contract's terms (lab.defenses.base.DefenseResult)."""

    name: str
    kind: str  # "repair" (N classes), "detector" (N + 1: answers N when it flags), or "none"
    classifier: object
    seconds: float
    details: dict = dataclasses.field(default_factory=dict)


# Table rows that are a registered defense with another configuration: name -> (defense, Config changes)
VARIANTS = {"goodnet-fine-pruning": ("goodnet", {"repair": "fine-pruning"}),
            "goodnet-auto": ("goodnet", {"repair": "auto"}),
            "goodnet-auto-targeted": ("goodnet", {"repair": "auto", "suspects_only": True})}


class Defenses:
    """Every registered defense (``lab.defenses.REGISTRY``) and :data:`VARIANTS`, fit through the contract.

    A detector that wraps a repair (``Config.repair``, e.g. the GoodNet and the
    confidence detector) gets the repair already fit on the same BadNet, clean
    data and seed in this run instead of fitting it again; the repair's
    seconds are still counted in the detector's, as the contract says.
    """

    def __init__(self):
        from lab.defenses import REGISTRY

        self.registry = dict(REGISTRY)
        self.names = [*self.registry, *(name for name, (base, _) in VARIANTS.items() if base in self.registry)]
        self._fitted: dict = {}

    def reset(self) -> None:
        """Forget fitted repairs (call when moving to another BadNet or seed)."""
        self._fitted.clear()

    def fit(self, name: str, badnet, clean_valid, seed: int) -> Outcome:
        base, changes = VARIANTS.get(name, (name, {}))
        cls = self.registry[base]
        config = dataclasses.replace(cls.Config(), **changes) if changes else cls.Config()
        repair = getattr(config, "repair", None)
        if isinstance(repair, str) and (repair, seed) in self._fitted:
            config = dataclasses.replace(config, repair=self._fitted[(repair, seed)])
        result = cls(config).fit(badnet, clean_valid, seed=seed)
        if result.kind == "repair" and not changes:
            self._fitted[(name, seed)] = result
        from lab.io.manifest import jsonable

        # the plain values of a defense's details (sweep tables, models and histories are left out)
        return Outcome(name, result.kind, result.classifier, float(result.seconds),
                       jsonable(result.details or {}, strict=False, flat=True))


# ---------------------------------------------------------------------------- BadNets


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _data_identity(data_root: Path) -> str:
    """Something that changes when the default's data do: its manifest's SHA-256 of every file."""
    manifest = data_root / "manifest.json"
    if manifest.exists():
        return _digest(json.loads(manifest.read_text(encoding="utf-8")).get("files", {}))
    return _digest(sorted((p.relative_to(data_root).as_posix(), p.stat().st_size) for p in data_root.rglob("*.h5")))


def badnet_key(name: str, spec: BadNetSpec, args) -> str:
    """``<name>-<hash>``: the hash covers the spec, epochs, seed and the data it is trained on."""
    if not spec.triggers:
        return f"{name}-{_data_identity(args.data)}"
    from lab.attacks.triggers import option_of

    options = [option_of(t) for t in spec.triggers]  # a changed default alpha or strength is a new BadNet
    return f"{name}-" + _digest({"spec": dataclasses.asdict(spec), "options": options, "epochs": args.epochs,
                                 "seed": args.badnet_seed,
                                 "data": _data_identity(args.data), "version": HARNESS_VERSION})


def ensure_badnet(name: str, spec: BadNetSpec, args) -> Path:
    """The folder holding this BadNet in the Lab 3 layout (built with make-badnet unless cached)."""
    if not spec.triggers:
        return args.data
    folder = args.out / "badnets" / badnet_key(name, spec, args)
    if (folder / "manifest.json").exists():
        return folder
    with _building(folder):
        if (folder / "manifest.json").exists():  # another run built it while this one waited
            return folder
        _train(name, spec, folder, args)
    return folder


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists. (``os.kill(pid, 0)`` asks that on POSIX; on Windows it would end the
    process, so there the process is opened and its exit code read.)"""
    if os.name == "nt":
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.windll.kernel32
        kernel32.OpenProcess.restype = wintypes.HANDLE  # pointer-sized: the default int return would truncate it
        kernel32.GetExitCodeProcess.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
        kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = wintypes.DWORD()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process
        return True
    return True


class _building:
    """A lock file beside a BadNet being built, so that two runs (one building, one measuring) never both train it."""

    def __init__(self, folder: Path):
        self.lock = folder.with_name(folder.name + ".building")

    def __enter__(self):
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                descriptor = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(descriptor, str(os.getpid()).encode())
                os.close(descriptor)
                return self
            except FileExistsError:
                try:
                    text = self.lock.read_text(encoding="utf-8")
                    stale = bool(text) and not _running(int(text))  # empty: its owner is writing its pid now
                except (ValueError, FileNotFoundError):
                    stale = True
                if stale:
                    self.lock.unlink(missing_ok=True)  # left by a run that died
                    continue
                time.sleep(20)

    def __exit__(self, *exc):
        self.lock.unlink(missing_ok=True)


def _train(name: str, spec: BadNetSpec, folder: Path, args) -> None:
    from lab import attacks
    from lab.attacks.training import TrainingConfig

    print(f"[{name}] training a BadNet: {spec}", flush=True)
    attack = attacks.Attack(spec.triggers, all_to_all=spec.all_to_all, pruning_aware=spec.pruning_aware)
    report = attacks.make_badnet(args.data, attack, folder, config=TrainingConfig(args.epochs, args.epochs),
                                 poison_fraction=spec.poison_fraction, seed=args.badnet_seed, force=True,
                                 progress=False, noise_fraction=spec.noise_fraction)
    rates = ", ".join(f"{k} {v:.2f} %" for k, v in report["attack_success_rate"].items())
    print(f"[{name}] {report['attack'].describe()}: clean {report['clean_accuracy']:.2f} %, ASR {rates}, "
          f"{report['seconds']:.0f} s", flush=True)


def ensure_default_data(data: Path) -> None:
    """Build the default with its training file when ``data`` lacks one."""
    from lab import attacks
    from lab.errors import LabInputError

    try:
        attacks.find_training_file(data / "data")
        return
    except LabInputError:
        pass
    if (data / "models" / "bd_net.h5").exists():
        raise SystemExit(f"{data} holds a lab but no training file (data/cl/train.h5); rebuild it with "
                         f"`python -m lab make-default --out {data} --with-train --force` or pass another --data")
    from lab.synthetic.default import make_default

    print(f"building the default with its training file under {data}", flush=True)
    make_default(data, progress=False, write_train=True)


# ---------------------------------------------------------------------------- rows


def _evaluate(classifier, clean, poisoned: dict, backdoor_class: int | None) -> dict:
    """Clean accuracy, ASR (pooled over triggers and per trigger), detection and false positives, percent."""
    from lab.evaluation import metrics

    backdoor = classifier.n_classes if backdoor_class is None else backdoor_class
    clean_predicted = classifier.predict_labels(clean.x)
    predicted = {name: classifier.predict_labels(d.x) for name, d in poisoned.items()}
    pooled = metrics.breakdown(clean_predicted, clean.y, np.concatenate(list(predicted.values())),
                               np.concatenate([d.y for d in poisoned.values()]), backdoor)
    return {"clean_accuracy": pooled["clean_accuracy"], "attack_success_rate": pooled["attack_success_rate"],
            "detection_rate": pooled["detection_rate"], "false_positive_rate": pooled["clean_false_positive_rate"],
            "per_trigger_asr": {name: metrics.attack_success_rate(p, poisoned[name].y) for name, p in predicted.items()}}


def measure_row(badnet_name: str, folder: Path, defense: str, fit, seed: int, badnet, clean_valid, clean_test,
                poisoned_test, before: dict) -> dict:
    """One BadNet x defense x seed: fit on clean validation data, evaluate on the test sets."""
    from lab.evaluation import backdoor_class_of

    row = {"badnet": badnet_name, "folder": str(folder), "defense": defense, "seed": seed,
           "clean_before": before["clean_accuracy"], "asr_before": before["attack_success_rate"],
           "version": HARNESS_VERSION}
    try:
        outcome = fit(defense, badnet, clean_valid, seed)
        backdoor = None  # a repaired N-class model never answers N
        if outcome.kind == "detector":  # N + 1 classes; the lab's GoodNets record N in their metadata
            backdoor = getattr(outcome.classifier, "backdoor_class", None)
            backdoor = backdoor_class_of(outcome.classifier) if backdoor is None else backdoor
            backdoor = outcome.classifier.n_classes - 1 if backdoor is None else backdoor
        after = _evaluate(outcome.classifier, clean_test, poisoned_test, backdoor)
        row.update(kind=outcome.kind, seconds=round(outcome.seconds, 1), details=outcome.details,
                   clean_after=after["clean_accuracy"], asr_after=after["attack_success_rate"],
                   per_trigger_asr_after=after["per_trigger_asr"], status="ok")
        if outcome.kind == "detector":
            row.update(detection=after["detection_rate"], false_positives=after["false_positive_rate"])
    except Exception as error:  # one failing defense must not stop a run of hours; the row says why
        row.update(status="error", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-2000:])
    return row


def meets_goal(row: dict) -> str:
    """"yes"/"no" against the issue's goal (repairs: ASR <= 1 % within 2 points; detectors: >= 95 % at <= 3 %)."""
    if row.get("status") != "ok":
        return "error"
    if row["kind"] == "detector":
        return "yes" if row["detection"] >= GOAL_DETECTION and row["false_positives"] <= GOAL_FALSE_POSITIVES else "no"
    return "yes" if row["asr_after"] <= GOAL_ASR and row["clean_before"] - row["clean_after"] <= GOAL_CLEAN_LOSS else "no"


COLUMNS = ("badnet", "attack", "triggers", "defense", "kind", "seed", "clean_before", "asr_before", "clean_after",
           "asr_after", "clean_lost", "detection", "false_positives", "seconds", "goal")


def summary_lines(table) -> list[str]:
    """Markdown: which BadNets meet the goal under each defense (every seed measured must), then one grid with
    a BadNet per row and a defense per column (repairs: clean / ASR after; detectors: detection / false positives;
    ``**`` where the goal is met, ``-`` where not measured)."""
    from lab.constants import DEFAULT_SEED

    measured = table[(table["defense"] != "none") & (table["status"] == "ok")]
    badnets = list(dict.fromkeys(table["badnet"]))
    defenses = list(dict.fromkeys(measured["defense"]))
    lines = ["## Which cases meet the goal", "", "| defense | seeds | meets the goal | on | misses |",
             "|---|---|---|---|---|"]
    for defense in defenses:
        rows = measured[measured["defense"] == defense]
        met = rows.groupby("badnet", sort=False)["goal"].agg(lambda goals: (goals == "yes").all())
        seeds = ", ".join(str(seed) for seed in sorted(set(rows["seed"])))
        lines.append(f"| {defense} | {seeds} | {int(met.sum())} of {len(met)} | {', '.join(met.index[met]) or '-'} "
                     f"| {', '.join(met.index[~met]) or '-'} |")

    def result(row, defense):
        pair = (row["detection"], row["false_positives"]) if row["kind"] == "detector" else (
            row["clean_before"] if defense == "none" else row["clean_after"],
            row["asr_before"] if defense == "none" else row["asr_after"])
        text = f"{pair[0]:.2f} / {pair[1]:.2f}"
        return f"**{text}**" if row["goal"] == "yes" else text

    lines += ["", f"## At a glance (seed {DEFAULT_SEED}, else the first seed measured)", "",
              *_grid(table, badnets, ["none", *defenses], result, "before")]
    lines += ["", "## Seconds to fit (the same rows; a detector's include the repair it wraps)", "",
              *_grid(table, badnets, defenses, lambda row, _: f"{row['seconds']:.0f}")]
    return lines


def _grid(table, badnets, defenses, cell, first=None) -> list[str]:
    """A markdown grid, a BadNet per row and a defense per column: ``cell(row, defense)`` where measured (seed
    1234 preferred), ``-`` where not, ``error`` where the row failed. ``first``: the heading of a ``none`` column."""
    from lab.constants import DEFAULT_SEED

    headings = [first if defense == "none" and first else defense for defense in defenses]
    lines = ["| badnet | " + " | ".join(headings) + " |", "|---|" + "---|" * len(defenses)]
    for badnet in badnets:
        rows = table[table["badnet"] == badnet]
        rows = rows.iloc[np.lexsort((rows["seed"].to_numpy(), rows["seed"].to_numpy() != DEFAULT_SEED))]
        cells = []
        for defense in defenses:
            row = rows[rows["defense"] == defense]
            cells.append("-" if row.empty else "error" if row.iloc[0]["status"] != "ok" else cell(row.iloc[0], defense))
        lines.append(f"| {badnet} | " + " | ".join(cells) + " |")
    return lines


def write_table(out: Path) -> tuple[Path, Path]:
    """Collect every cached row into ``repairs.csv`` and ``repairs.md`` under ``out``."""
    import pandas as pd

    records = []
    for path in sorted((out / "rows").glob("*/*.json")):
        row = json.loads(path.read_text(encoding="utf-8"))
        if row.get("version") != HARNESS_VERSION:
            continue
        info = json.loads((out / "rows" / path.parent.name / "_badnet.json").read_text(encoding="utf-8")) \
            if (out / "rows" / path.parent.name / "_badnet.json").exists() else {}
        record = {"attack": info.get("attack", ""), "triggers": info.get("triggers", ""), **row}
        if row.get("status") == "ok":
            record["clean_lost"] = row["clean_before"] - row["clean_after"]
        record["goal"] = meets_goal(row) if row["defense"] != "none" else ""
        records.append(record)
    table = pd.DataFrame(records, columns=[*COLUMNS, "status", "error"])
    order = list(_catalogue())
    table["_order"] = table["badnet"].map(lambda name: order.index(name) if name in order else len(order))
    defense_order = ["none", *Defenses().names]  # the BadNet itself heads its rows, then the registry's order
    table["_defense"] = table["defense"].map(
        lambda name: defense_order.index(name) if name in defense_order else len(defense_order))
    table = table.sort_values(["_order", "_defense", "defense", "seed"], kind="stable").drop(
        columns=["_order", "_defense"])
    csv_path, md_path = out / "repairs.csv", out / "repairs.md"
    temporary = csv_path.with_name(f".{csv_path.name}.{os.getpid()}")  # two runs may write the table at once
    table.to_csv(temporary, index=False, float_format="%.2f")
    os.replace(temporary, csv_path)

    def cell(value, digits=2):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["# Defenses x BadNets (tools/measure_repairs.py)", "",
             f"Goal: repaired ASR <= {GOAL_ASR:g} % losing <= {GOAL_CLEAN_LOSS:g} points of clean accuracy; "
             f"detectors >= {GOAL_DETECTION:g} % detection at <= {GOAL_FALSE_POSITIVES:g} % clean false positives. "
             "Percent on the test sets (ASR pooled over a BadNet's triggers); seconds of fitting, wall clock "
             "on a shared machine. Defense `none` is the BadNet itself.", "",
             *summary_lines(table), "", "## Every row", "",
             "| " + " | ".join(c for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for _, row in table.iterrows():
        if row.get("status") == "error":
            lines.append(f"| {row['badnet']} | {row['attack']} | {row['triggers']} | {row['defense']} | error: "
                         f"{str(row['error'])[:120]} |" + " |" * (len(COLUMNS) - 5))
            continue
        lines.append("| " + " | ".join(cell(row[c], 1 if c == "seconds" else 2) for c in COLUMNS) + " |")
    temporary = md_path.with_name(f".{md_path.name}.{os.getpid()}")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temporary, md_path)
    return csv_path, md_path


def _git(*arguments: str) -> str:
    import subprocess

    done = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True, encoding="utf-8")
    return done.stdout.strip() if done.returncode == 0 else ""


def publish(out: Path, argv: list[str], directory: Path | None = None) -> tuple[Path, Path]:
    """Copy the table of ``out`` (written by :func:`write_table`) to the package's results, with its provenance.

    The package's results are what :mod:`lab.evaluation.results` reads.

    The provenance names the command, the commit (``-dirty`` when ``lab/``
    has uncommitted changes), the date and the SHA-256 of each BadNet in the
    table, so a notebook can tell whether a row is about the model it loaded.
    """
    import datetime
    import shutil

    from lab.evaluation import results
    from lab.io.models import sha256_file

    directory = directory or results.RESULTS_DIR
    csv_path = out / "repairs.csv"
    if not csv_path.is_file():
        raise SystemExit(f"error: {csv_path}: expected the table to publish, found no such file (run --table first)")
    badnets = {}
    for info_path in sorted((out / "rows").glob("*/_badnet.json")):
        name = info_path.parent.name.rsplit("-", 1)[0]
        model = Path(json.loads(info_path.read_text(encoding="utf-8"))["folder"]) / "models" / "bd_net.h5"
        if model.is_file():
            badnets[name] = sha256_file(model)
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--", "lab", ":!lab/results"):
        commit += "-dirty"
    argv = [a for a in argv if a not in ("--table", "--publish")]  # the command that measures, not the one that copied
    if "--badnets" not in argv:
        argv = ["--badnets", *sorted(badnets), *argv]
    directory.mkdir(parents=True, exist_ok=True)
    table_path = directory / results.TABLE
    shutil.copyfile(csv_path, table_path)
    provenance = {"command": " ".join(["python tools/measure_repairs.py", *argv]), "commit": commit,
                  "date": datetime.date.today().isoformat(), "badnets": badnets}
    provenance_path = directory / results.PROVENANCE
    _atomic_write(provenance_path, provenance)
    return table_path, provenance_path


def _atomic_write(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(value, indent=1, default=float), encoding="utf-8")
    os.replace(temporary, path)


def run(args) -> None:
    from lab import attacks
    from lab.io import data, models
    from lab.seed import set_seed

    catalogue = _catalogue()
    defenses = Defenses()
    names = args.badnets or list(catalogue)
    wanted = args.defenses or defenses.names
    unknown = [n for n in names if n not in catalogue] + [d for d in wanted if d not in defenses.names and d != "none"]
    if unknown:
        raise SystemExit(f"unknown BadNet or defense: {', '.join(unknown)} (see --list)")
    ensure_default_data(args.data)
    for name in names:
        spec = catalogue[name]
        folder = ensure_badnet(name, spec, args)
        key = badnet_key(name, spec, args)
        rows_dir = args.out / "rows" / key
        layout = data.find_layout(folder / "data")
        clean_valid = data.load_h5(layout.clean_valid)
        clean_test = data.load_h5(layout.clean_test, n=args.n_test)
        poisoned_test = attacks.load_poisoned(folder, "test", n=args.n_test)
        badnet = models.load_model(folder / "models" / "bd_net.h5")
        record_path = folder / "manifest.json"
        record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
        attack = record.get("attack", {})
        triggers = ", ".join(f"{t['trigger']}->{'n+1' if t['target'] is None else t['target']}"
                             for t in attack.get("triggers", [])) or "sunglasses (default)"
        kind = (attack.get("attack") or spec.kind) + (", pruning-aware" if attack.get("pruning_aware") or not spec.triggers
                                                     else "")
        _atomic_write(rows_dir / "_badnet.json", {"attack": kind, "triggers": triggers, "folder": str(folder)})
        before = _evaluate(badnet, clean_test, poisoned_test, None)
        none_path = rows_dir / "none-seed0.json"
        if not none_path.exists():
            _atomic_write(none_path, {"badnet": name, "defense": "none", "kind": "none", "seed": 0, "status": "ok",
                                      "clean_before": before["clean_accuracy"], "asr_before": before["attack_success_rate"],
                                      "clean_after": before["clean_accuracy"], "asr_after": before["attack_success_rate"],
                                      "per_trigger_asr_after": before["per_trigger_asr"], "seconds": 0.0,
                                      "version": HARNESS_VERSION})
        defenses.reset()
        for seed in args.seeds:
            for defense in wanted:
                if defense == "none":
                    continue
                path = rows_dir / f"{defense}-seed{seed}.json"
                done = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
                if done.get("version") == HARNESS_VERSION and not (args.retry_errors and done.get("status") == "error"):
                    continue
                set_seed(seed)
                started = time.perf_counter()
                row = measure_row(name, folder, defense, defenses.fit, seed, badnet, clean_valid, clean_test,
                                  poisoned_test, before)
                _atomic_write(path, row)
                summary = (f"clean {row['clean_before']:.2f} -> {row['clean_after']:.2f} %, ASR {row['asr_before']:.2f}"
                           f" -> {row['asr_after']:.2f} %" if row["status"] == "ok" else row["error"])
                if row.get("kind") == "detector":
                    summary += f", detection {row['detection']:.2f} %, false positives {row['false_positives']:.2f} %"
                print(f"[{name}] {defense} seed {seed}: {summary} ({time.perf_counter() - started:.0f} s)", flush=True)
                write_table(args.out)
            defenses.reset()
        write_table(args.out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "default",
                        help="the default lab folder with data/cl/train.h5 (built when missing; default build/default)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "repairs", help="cache and table folder")
    parser.add_argument("--badnets", nargs="+", metavar="NAME", help="BadNets to measure (default: all, see --list)")
    parser.add_argument("--defenses", nargs="+", metavar="NAME",
                        help="defenses to run (default: all registered; 'none' alone builds and reports BadNets only)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1234], help="defense seeds (default 1234)")
    parser.add_argument("--epochs", type=int, default=10, help="make-badnet clean and poisoned epochs (default 10)")
    parser.add_argument("--badnet-seed", type=int, default=1234, help="make-badnet seed (default 1234)")
    parser.add_argument("--n-test", type=int, default=None, help="at most N test images per file (default all)")
    parser.add_argument("--retry-errors", action="store_true", help="rerun rows that failed")
    parser.add_argument("--list", action="store_true", help="print the BadNets and defenses and exit")
    parser.add_argument("--table", action="store_true", help="only rewrite the table from cached rows")
    parser.add_argument("--publish", action="store_true",
                        help="also copy the table into the package (lab/results/repairs.csv and .json: command, "
                             "commit, date, each BadNet's SHA-256), where notebook 07 reads the rows it does not run")
    args = parser.parse_args(argv)
    args.data, args.out = args.data.resolve(), args.out.resolve()
    if args.list:
        for name, spec in _catalogue().items():
            print(f"badnet  {name:<16} {spec}")
        for name in Defenses().names:
            print(f"defense {name}")
        return 0
    if not args.table:
        run(args)
    for path in write_table(args.out):
        print(path)
    if args.publish:
        for path in publish(args.out, sys.argv[1:] if argv is None else list(argv)):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
