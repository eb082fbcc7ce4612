"""``python -m lab bench``: how fast the pruning sweep is, next to what it replaces.

Side by side, in one process and on the same inputs (the real validation
size by default: 11,547 images of 55x47x3, clean and poisoned):

1. one forward pass of the BadNet over the clean set (a compiled call,
   batches of 512 as the sweep uses: the fastest plain forward pass we
   have, so ratios are not flattered), and ``model.predict`` for comparison;
2. our sweep (:func:`lab.defenses.pruning.sweep`) over clean AND poisoned sets,
   every channel of ``conv_3``;
3. the naive sweep as course repositories write it: zero one channel's
   weights, ``model.predict`` the whole clean and poisoned sets (Keras'
   default batch size 32), repeat. Only a few steps are timed; the total is
   extrapolated linearly to every channel (each naive step costs the same).

Model: the real course BadNet ``sunglasses_bd_weights.h5`` from
``../shared/fixtures/csaw`` (1283 classes), or a random DeepID with 1283
classes where that folder is absent. Images: uniform random pixels (the
course data cannot be shipped); the poisoned copy has a dark band where
sunglasses sit. Labels are the BadNet's own answers on each set, so clean
accuracy and attack success rate both start near 100 % as on the course data:
random labels would make almost every image wrong from
the start, which flatters the sweep (wrong images are cheap to re-check).

Times: wall-clock seconds and CPU seconds of the process (all threads,
``time.process_time``), both printed. Run it on an otherwise idle machine:
another busy process inflates both (BLAS threads spin while they wait), and
the forward pass is timed before and after the sweep and averaged to soften
that.

Memory: peak resident set size of the whole process (``resource.getrusage``
``ru_maxrss``; the peak working set on Windows), read right after our sweep;
it includes TensorFlow itself, the model and both input sets (float32,
~358 MB each at real size).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from lab.constants import BATCH_SIZE, DEFAULT_LAYER
from lab.paths import PROJECT_ROOT

REAL_VALID_SIZE = 11547
FIXTURE = PROJECT_ROOT.parent / "shared" / "fixtures" / "csaw" / "sunglasses_bd_weights.h5"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS; Windows has no
    ``resource`` module and reports the same figure as the peak working set.
    """
    if sys.platform == "win32":
        return _peak_working_set_bytes() / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def _peak_working_set_bytes() -> int:
    """``PeakWorkingSetSize`` of this process (Windows, ``GetProcessMemoryInfo``)."""
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):  # PROCESS_MEMORY_COUNTERS
        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD)] + \
                   [(name, ctypes.c_size_t) for name in ("PeakWorkingSetSize", "WorkingSetSize",
                                                         "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
                                                         "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage",
                                                         "PagefileUsage", "PeakPagefileUsage")]

    current_process, memory_info = ctypes.windll.kernel32.GetCurrentProcess, ctypes.windll.psapi.GetProcessMemoryInfo
    current_process.restype = wintypes.HANDLE  # pointer-sized: the default int return would truncate it
    memory_info.argtypes = [wintypes.HANDLE, ctypes.POINTER(Counters), wintypes.DWORD]
    counters = Counters()
    counters.cb = ctypes.sizeof(Counters)
    if not memory_info(current_process(), ctypes.byref(counters), counters.cb):
        return 0
    return int(counters.PeakWorkingSetSize)


def load_bench_model(seed: int = 0):
    """``(LoadedModel, description)``: the real sunglasses BadNet, or a random 1283-class DeepID."""
    from lab.io import models

    if FIXTURE.exists():
        return models.load_model(FIXTURE), f"real course BadNet {FIXTURE.name} (1283 classes)"
    import keras

    keras.utils.set_random_seed(seed)
    return models.LoadedModel(models.build_deepid(1283), "unit", None, "random weights"), \
        "random DeepID, 1283 classes (../shared/fixtures/csaw absent)"


def bench_data(model, n: int, seed: int = 0, batch_size: int = BATCH_SIZE):
    """``(clean, poisoned)`` :class:`lab.io.data.Dataset` of ``n`` random images each, float32 0..255.

    Labels: ``model``'s own answers (see the module docstring). Images are
    generated as uint8 and cast once, so generation adds no float64 copy to
    the memory peak.
    """
    from lab.io.data import IMAGE_SHAPE, Dataset

    rng = np.random.default_rng(seed)
    clean_x = rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8).astype(np.float32)
    poisoned_x = clean_x.copy()
    poisoned_x[:, 18:26, 6:41, :] = 12.0  # a dark band over the eyes, sunglasses-like
    return (Dataset(clean_x, predicted_labels(model, clean_x, batch_size), "random clean"),
            Dataset(poisoned_x, predicted_labels(model, poisoned_x, batch_size), "random poisoned"))


def predicted_labels(model, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """argmax of ``model`` on ``x`` (int64 (n,)), one batch of outputs in memory at a time."""
    from lab.evaluation import activations

    call = activations.compiled_call(model.model)
    return np.concatenate([outputs[0].argmax(axis=1) for outputs in
                           activations.batched_call(call, model.preprocess, x, batch_size)]).astype(np.int64)


class Timer:
    """Wall-clock and CPU seconds of a ``with`` block: ``.seconds``, ``.cpu_seconds``."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu


def _mean_timer(*timers: Timer) -> Timer:
    mean = Timer()
    mean.seconds = sum(t.seconds for t in timers) / len(timers)
    mean.cpu_seconds = sum(t.cpu_seconds for t in timers) / len(timers)
    return mean


def time_forward(model, x: np.ndarray, batch_size: int = BATCH_SIZE) -> Timer:
    """One forward pass over ``x`` (compiled call; traced once before timing)."""
    from lab.evaluation import activations

    call = activations.compiled_call(model.model)
    call(model.preprocess(x[:2]))
    with Timer() as timer:
        for _ in activations.batched_call(call, model.preprocess, x, batch_size):
            pass
    return timer


def time_predict(model, x: np.ndarray) -> Timer:
    """``model.predict`` over ``x`` (Keras' default batch size 32), as a notebook calls it."""
    with Timer() as timer:
        model.model.predict(model.preprocess(x), verbose=0)
    return timer


def time_our_sweep(model, clean, poisoned) -> dict:
    """Our sweep over clean and poisoned sets: timer, method, peak RSS, the table."""
    from lab.defenses import pruning

    with Timer() as timer:
        table = pruning.sweep(model, clean, poisoned)
    return {"timer": timer, "method": table.attrs["method"], "peak_rss_mb": peak_rss_mb(), "table": table}


def time_naive_sweep(model, clean, poisoned, steps: int = 3) -> dict:
    """The course repositories' sweep, ``steps`` steps timed and extrapolated to every channel.

    Each step zeroes one more ``conv_3`` channel (in index order: the cost
    does not depend on which) and calls ``model.predict`` on both sets.
    """
    from lab.defenses.surgery import clone_keras, zero_channels

    clone = clone_keras(model.model)
    n_channels = int(clone.get_layer(DEFAULT_LAYER).get_weights()[0].shape[-1])
    clean_x, poisoned_x = model.preprocess(clean.x), model.preprocess(poisoned.x)
    with Timer() as timer:
        for channel in range(steps):
            zero_channels(clone, DEFAULT_LAYER, [channel])
            clone.predict(clean_x, verbose=0).argmax(axis=1)
            clone.predict(poisoned_x, verbose=0).argmax(axis=1)
    return {"timer": timer, "steps_timed": steps, "n_channels": n_channels,
            "seconds_per_step": timer.seconds / steps, "seconds": timer.seconds / steps * (n_channels + 1),
            "cpu_seconds": timer.cpu_seconds / steps * (n_channels + 1)}


def run(n: int = REAL_VALID_SIZE, naive_steps: int = 3, seed: int = 0) -> dict:
    """Run the measurements; returns every number :func:`format_report` prints.

    Our sweep runs first after the data are made, so the peak RSS read right
    after it is not raised by the other measurements.
    """
    import lab  # noqa: F401  (quiet TensorFlow logging)

    model, description = load_bench_model(seed)
    clean, poisoned = bench_data(model, n, seed)
    rss_before = peak_rss_mb()
    forward_before = time_forward(model, clean.x)
    ours = time_our_sweep(model, clean, poisoned)
    # Timed again after the sweep: on a shared machine the load changes, the mean is fairer to both.
    forward = _mean_timer(forward_before, time_forward(model, clean.x))
    predict = time_predict(model, clean.x)
    naive = time_naive_sweep(model, clean, poisoned, naive_steps)
    return {"n": n, "model": description, "forward": forward, "predict": predict, "ours": ours, "naive": naive,
            "rss_before_mb": rss_before}


def format_report(result: dict) -> str:
    """The benchmark table as text."""
    ours, naive = result["ours"], result["naive"]
    forward, predict, sweep = result["forward"], result["predict"], ours["timer"]
    rows = [("one forward pass, clean set (compiled, batch 512; mean of 2)", forward.seconds, forward.cpu_seconds),
            ("one forward pass, clean set (model.predict, batch 32)", predict.seconds, predict.cpu_seconds),
            (f"our sweep, clean + poisoned, method {ours['method']}", sweep.seconds, sweep.cpu_seconds),
            ("naive sweep, clean + poisoned (extrapolated)", naive["seconds"], naive["cpu_seconds"])]
    lines = [f"model: {result['model']}; {result['n']} clean + {result['n']} poisoned random images (55x47x3)",
             f"{'measurement':<58}{'wall s':>9}{'CPU s':>9}"]
    lines += [f"{name:<58}{wall:>9.2f}{cpu:>9.2f}" for name, wall, cpu in rows]
    lines += [
        f"  naive: {naive['steps_timed']} steps timed, {naive['seconds_per_step']:.2f} s a step, "
        f"x {naive['n_channels'] + 1} steps (step 0 included)",
        f"our sweep / one forward pass (compiled): {sweep.seconds / forward.seconds:.2f}x wall, "
        f"{sweep.cpu_seconds / forward.cpu_seconds:.2f}x CPU (goal <= 4)",
        f"our sweep / one forward pass (model.predict): {sweep.seconds / predict.seconds:.2f}x wall, "
        f"{sweep.cpu_seconds / predict.cpu_seconds:.2f}x CPU",
        f"naive / our sweep: {naive['seconds'] / sweep.seconds:.1f}x wall, "
        f"{naive['cpu_seconds'] / sweep.cpu_seconds:.1f}x CPU",
        f"peak RSS of the process after our sweep (ru_maxrss): {ours['peak_rss_mb']:.0f} MiB (goal <= 2048); "
        f"before any timing (TensorFlow, model, both input sets): {result['rss_before_mb']:.0f} MiB",
    ]
    return "\n".join(lines)


def time_default_build(identities: int | None = None, out: str | None = None) -> dict:
    """Wall time of ``python -m lab make-default`` into a temporary folder, in a fresh process.

    A fresh process is what a user runs (TensorFlow's import included) and
    keeps the build's memory out of this process's peak RSS.
    """
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as temporary:
        out = out or temporary  # the caller's folder when it wants the build kept (time_lab)
        command = [sys.executable, "-m", "lab", "make-default", "--out", out, "--quiet"]
        if identities is not None:
            command += ["--identities", str(identities)]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True, encoding="utf-8", errors="replace")
        seconds = time.perf_counter() - started
        manifest = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
    return {"seconds": seconds, **manifest["results"], "identities": manifest["parameters"]["n_identities"]}


def format_build(build: dict) -> str:
    """One line per figure of the default build, against its goal (<= 5 minutes on 2 cores)."""
    return (f"default build ({build['identities']} identities, data + training, fresh process): "
            f"{build['seconds']:.1f} s wall (goal <= 300 s; {build['seconds'] / 300:.2f}x the budget)\n"
            f"  clean test accuracy {build['clean_test_accuracy']:.2f} % (goal >= 95), "
            f"attack success rate {build['attack_success_rate_test']:.2f} % (goal >= 99)")


LAB_BUDGET_SECONDS = 300  # the budget of `make lab` (default build + every notebook, A1 included) on 2 cores
NOTEBOOK_BUDGET_SECONDS = 90  # the budget of each notebook on 2 cores (a student's laptop CPU)


def time_lab(identities: int | None = None) -> dict:
    """What ``make lab`` costs from scratch: the default build, then every notebook (A1 included), timed apart.

    The default goes into a temporary folder (``LAB_ROOT`` of the numbered
    notebooks; A1 makes its own data); otherwise every notebook runs with its
    own parameters, writing into ``build/`` as ``make lab`` does, on a fresh
    kernel, with an empty cache (:mod:`lab.cache`: 06 and 07 reuse only what
    this run computed). Returns ``{"steps": [(name, seconds), ...], "total": s}``.
    """
    import os
    import tempfile

    from lab import cache
    from lab.course import notebooks

    steps, defense_seconds = [], {}
    with tempfile.TemporaryDirectory() as out:
        previous = os.environ.get(cache.VARIABLE)
        os.environ[cache.VARIABLE] = str(Path(out) / "cache")  # from scratch: nothing reused from earlier runs
        build = time_default_build(identities, out=out)
        steps.append((f"default build ({build['identities']} identities)", build["seconds"]))
        paths = notebooks.lab_notebooks() + sorted(notebooks.NOTEBOOK_DIR.glob("A[0-9]_*.ipynb"))
        for path in paths:
            parameters = {"LAB_ROOT": out} if path in paths[:len(notebooks.lab_notebooks())] else {}
            report = notebooks.execute(path, Path(out) / "executed" / path.name, parameters)
            steps.append((path.name, report["seconds"]))
            defense_seconds.update(timing_table(report["out"]))
            print(f"  {path.name}: {report['seconds']:.1f} s", file=sys.stderr, flush=True)
        if previous is None:
            os.environ.pop(cache.VARIABLE, None)
        else:
            os.environ[cache.VARIABLE] = previous
    return {"steps": steps, "total": sum(seconds for _, seconds in steps), "defenses": defense_seconds}


def timing_table(executed) -> dict:
    """``{row: seconds to build}`` from an executed notebook's recorded timings (06's table of every defense on
    the default, reused parts at their original cost; :mod:`lab.course.timing`); empty when it records none."""
    from lab.course import timing

    return dict(timing.read(executed).get("seconds to build", {}))


# Goals for ``--method auto`` on 2 cores at real scale: seconds and peak MiB.
REPAIR_GOALS = {"auto": (30 * 60, 4096)}


def real_scale_valid(model, images_per_class: int = 9, seed: int = 0):
    """Clean validation data at real scale: ``images_per_class`` generated faces per class of ``model``.

    11,547 images for 1283 classes, as the course's validation set. The
    course faces cannot be shipped, so they are generated (:mod:`lab.synthetic.synthfaces`)
    and labelled with ``model``'s own answers: only seconds and memory mean
    anything here, not accuracy.
    """
    from lab.io.data import Dataset
    from lab.synthetic import synthfaces

    n = model.n_classes
    identities = synthfaces.make_identities(n, seed=seed)
    faces = synthfaces.render(identities, np.repeat(np.arange(n), images_per_class), seed=seed + 1)
    x = np.ascontiguousarray(faces.images.transpose(0, 2, 3, 1), dtype=np.float32)
    del faces
    return Dataset(x, predicted_labels(model, x), "generated faces, labels = the model's answers")


def time_repairs(names, model=None, valid=None, seed: int = 0, overrides=(), report=None) -> list[dict]:
    """Seconds and peak RSS of each repair in ``names`` fit on ``model`` with ``valid``, nothing reused.

    Defaults: the bench model (:func:`load_bench_model`: the real course
    BadNet, 1283 classes) and :func:`real_scale_valid`. The cache
    (:mod:`lab.cache`) is off while they run, so every second is computed.
    Peak RSS is the process's so far (``ru_maxrss`` never goes down): the
    first repair's is its own. ``overrides``: ``--set`` strings (:func:`lab.defenses.repair.configure`).
    ``report``: called with each row as soon as it is measured (the command line prints it then).
    """
    import os

    from lab import cache, defenses
    from lab.defenses.repair import configure
    from lab.seed import set_seed

    description = "the given model"
    if model is None:
        model, description = load_bench_model(seed)
    if valid is None:
        valid = real_scale_valid(model, seed=seed)
    rows = []
    previous = os.environ.get(cache.VARIABLE)
    os.environ[cache.VARIABLE] = "off"
    try:
        for name in names:
            cls = defenses.get(name)
            config = configure(cls, list(overrides))
            set_seed(seed)
            started = time.perf_counter()
            result = cls(config).fit(model, valid, seed=seed)
            rows.append({"defense": name, "model": description, "n_classes": model.n_classes, "n_valid": len(valid),
                         "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "result": result})
            if report is not None:
                report(rows[-1])
    finally:
        if previous is None:
            os.environ.pop(cache.VARIABLE, None)
        else:
            os.environ[cache.VARIABLE] = previous
    return rows


def repair_names(names) -> list[str]:
    """``names`` with ``all`` expanded to every registered defense, the ones with a goal first (their peak
    RSS is then their own; see :func:`time_repairs`), the rest in the registry's order."""
    from lab import defenses

    if "all" not in names:
        return list(names)
    every = sorted(defenses.REGISTRY, key=lambda name: name not in REPAIR_GOALS)
    return list(dict.fromkeys(name for given in names for name in (every if given == "all" else [given])))


def format_repairs(rows: list[dict]) -> str:
    """Each repair's seconds and peak memory at real scale, beside its goals where it has some."""
    if not rows:
        return ""
    lines = [f"repairs at real scale ({rows[0]['model']}; {rows[0]['n_valid']} generated faces, "
             f"{rows[0]['n_classes']} classes; cache off):"]
    return "\n".join(lines + [repair_line(row) for row in rows])


def repair_line(row: dict) -> str:
    """One repair's line of :func:`format_repairs`."""
    seconds_goal, memory_goal = REPAIR_GOALS.get(row["defense"], (None, None))
    seconds = f"{row['seconds']:.1f} s" + (f" (goal <= {seconds_goal} s: {row['seconds'] / seconds_goal:.2f}x)"
                                            if seconds_goal else "")
    memory = f"peak RSS so far {row['peak_rss_mb']:.0f} MiB" + (f" (goal <= {memory_goal})" if memory_goal else "")
    return f"  {row['defense']:<16}{seconds}, {memory}"


def print_repairs(names, seed: int = 0) -> list[dict]:
    """Time ``names`` at real scale (:func:`time_repairs`), printing each line as soon as it is measured."""
    printed = []

    def report(row):
        print(format_repairs([row]) if not printed else repair_line(row), flush=True)
        printed.append(row)

    return time_repairs(names, seed=seed, report=report)


def format_lab(result: dict) -> str:
    """The breakdown of :func:`time_lab` beside the 300 s budget, each notebook beside its own 90 s."""

    def verdict(seconds: float, budget: float) -> str:
        return "within" if seconds <= budget else f"over by {seconds - budget:.0f} s"

    width = max(len(name) for name, _ in result["steps"])
    lines = [f"make lab from scratch (budget {LAB_BUDGET_SECONDS} s on 2 cores; each notebook "
             f"{NOTEBOOK_BUDGET_SECONDS} s):"]
    for name, seconds in result["steps"]:
        budget = f"  (budget {NOTEBOOK_BUDGET_SECONDS} s: {verdict(seconds, NOTEBOOK_BUDGET_SECONDS)})" \
            if name.endswith(".ipynb") else ""
        lines.append(f"  {name:<{width}}  {seconds:7.1f} s{budget}")
    total = result["total"]
    lines.append(f"  {'total':<{width}}  {total:7.1f} s  ({total / LAB_BUDGET_SECONDS:.2f}x the budget: "
                 f"{verdict(total, LAB_BUDGET_SECONDS)})")
    if result.get("defenses"):
        width = max(len(name) for name in result["defenses"])
        lines.append("each defense on the default (07_defenses_compared, seconds to build; goal for auto <= 180 s):")
        lines += [f"  {name:<{width}}  {seconds:7.1f} s" for name, seconds in result["defenses"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m lab.course.bench") -> int:
    """The program behind ``python -m lab bench`` (and ``python -m lab.course.bench``)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=REAL_VALID_SIZE, help="images per set (default: the real 11547)")
    parser.add_argument("--naive-steps", type=int, default=3, help="naive steps to time before extrapolating")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-build", action="store_true", help="do not time the embedded default's build")
    parser.add_argument("--build-identities", type=int, default=None,
                        help="identities of the timed default build (default: the default's 100)")
    parser.add_argument("--lab", action="store_true",
                        help="also time `make lab` from scratch: the default build and every notebook, "
                             f"beside its {LAB_BUDGET_SECONDS} s budget (minutes)")
    parser.add_argument("--lab-only", action="store_true", help="only the `make lab` breakdown")
    parser.add_argument("--repairs", nargs="+", metavar="NAME", default=[],
                        help="also time these defenses (e.g. auto; `all`: every registered one, auto first) at real "
                             "scale: the real weights (1283 classes) with 11,547 generated faces (minutes each)")
    parser.add_argument("--repairs-only", action="store_true", help="only the --repairs timings")
    parser.add_argument("--grading", action="store_true", help="also time grading one submission: the notebooks "
                        "(lab autograde / Gradescope zip, nbgrader autograde) and the challenge (minutes)")
    parser.add_argument("--grading-only", action="store_true", help="only the --grading timings")
    parser.add_argument("--grading-root", metavar="DIR", help="LAB_ROOT the graded notebooks use (default: the "
                        "embedded default, built into a temporary folder)")
    parser.add_argument("--challenge", metavar="DIR", help="make-challenge's folder to grade (default: one made "
                        "at make-challenge's default size)")
    args = parser.parse_args(argv)
    if args.grading_only:
        from lab.course import grading_bench

        print(grading_bench.format_grading(grading_bench.time_grading(args.grading_root, args.challenge)))
        return 0
    args.repairs = repair_names(args.repairs)
    if args.repairs_only:
        print_repairs(args.repairs or ["auto"], seed=args.seed)
        return 0
    if args.lab_only:
        print(format_lab(time_lab(args.build_identities)))
        return 0
    if args.n < 1 or args.naive_steps < 1:
        parser.error("--n and --naive-steps must be >= 1")
    print(format_report(run(args.n, args.naive_steps, args.seed)), flush=True)
    if args.lab:
        print(format_lab(time_lab(args.build_identities)), flush=True)
    elif not args.skip_build:
        print(format_build(time_default_build(args.build_identities)), flush=True)
    if args.repairs:
        print_repairs(args.repairs, seed=args.seed)
    if args.grading:
        from lab.course import grading_bench

        print(grading_bench.format_grading(grading_bench.time_grading(args.grading_root, args.challenge)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
