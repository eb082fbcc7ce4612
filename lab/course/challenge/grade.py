"""Grade submissions of a hidden-trigger challenge: one student, or a class of them in parallel.

``grade(grader_dir, {name: submission})`` scores one submission per BadNet:
a GoodNet model file (``.keras`` / ``.h5``) or an ``eval.py``-style script.
``grade_class(grader_dir, {student: {name: submission}}, jobs=N)`` does it
for many students at once, with the same results as one after the other.

Order of work, so that nothing a submission does can change a score:

1. every file of the grader folder is checked against the SHA-256 in its
   manifest (a mismatch refuses to grade, one line), then the answer key and
   the test data are read into memory, once, before any submission runs;
2. each submission is copied into a private folder of its own
   (:mod:`lab.course.challenge.intake`: links not followed, hard links and
   special files refused, sizes capped), and each call gets a fresh private
   folder holding only its own images (:mod:`lab.course.challenge.batch`:
   random names, random order, nothing about an image's origin in its file);
   both are bound read-only into a bubblewrap sandbox
   (:mod:`lab.course.sandbox`); the grader folder is never mounted;
3. scripts run as ``python SCRIPT IMG [IMG ...]`` (47x55 RGB PNGs) and print
   one class in [0, N] per image as their last output lines (ASCII digits,
   nothing else); models are loaded (Keras safe mode, Lambda layers refused)
   and run by :mod:`lab.course.challenge.model_worker` in the same kind of
   sandbox;
4. answers are mapped back to image order and scored with
   :func:`lab.evaluation.metrics.breakdown`.

A submission that is missing, crashes, hangs, prints nonsense, runs out of
memory, does not load, or trips the grader itself in any way scores zero
with the reason; it never stops the grader or costs another student's row.
Text from submissions is escaped before it reaches the score table. Where
bwrap is missing or cannot make its namespaces, scripts are refused (zero,
with the reason) unless the instructor trusts them
(``trust_scripts``); models then run in a plain child process. Score per
BadNet: clean accuracy x (100 - attack success rate) / 100, so a net must
both keep the clean task and stop the attack (answering the true class or N
both count as stopping it).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from lab.io import data as course_data
from lab.course import sandbox
from lab.course.challenge import batch as batches
from lab.course.challenge import intake
from lab.course.challenge.intake import Submission
from lab.course.challenge.key import (ANSWER_KEY, MODEL_SUFFIXES, SCORE_RULE, SCRIPT_SUFFIXES, check_grader)
from lab.course.challenge.model_worker import RESULT_PREFIX
from lab.errors import LabInputError

SUBMISSION_MOUNT = "/submission"  # the submission's folder inside the sandbox (read-only)
BATCH_MOUNT = "/batch"  # the private folder of images (read-only)


class SubmissionFailed(Exception):
    """A submission could not be scored; the message is the reason shown in the score table."""


@dataclasses.dataclass(frozen=True)
class Options:
    """How submissions run. timeout: seconds per script call; batch: images per call; time_limit: seconds
    for all calls of one submission (and for a model's load + prediction); python: the interpreter of
    scripts; trust_scripts: run scripts without a sandbox where bwrap cannot run; memory_mib, processes:
    the sandbox's limits (:class:`lab.course.sandbox.Limits`); submission_mib: the most a submission's
    copy may hold (:class:`lab.course.challenge.intake.CopyLimits`)."""

    n: int | None = None
    timeout: float = 60.0
    batch: int = 500
    time_limit: float = 300.0
    python: str | None = None
    trust_scripts: bool = False
    memory_mib: int = sandbox.Limits.memory_mib
    processes: int = sandbox.Limits.processes
    submission_mib: int = intake.CopyLimits.max_mib

    def check(self) -> None:
        """One-line :class:`LabInputError` naming the first argument out of range."""
        for flag, value, low in (("--timeout S", self.timeout, 0), ("--time-limit S", self.time_limit, 0)):
            if not (isinstance(value, (int, float)) and value > low and value < float("inf")):
                raise LabInputError(None, f"{flag} with S > 0 seconds", repr(value))
        for flag, value in (("--n N", self.n), ("--batch B", self.batch), ("--memory MIB", self.memory_mib),
                            ("--processes P", self.processes), ("--submission-mib MIB", self.submission_mib)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise LabInputError(None, f"{flag} with {flag.split()[1]} >= 1", repr(value))

    def limits(self, timeout: float) -> sandbox.Limits:
        return sandbox.Limits(memory_mib=self.memory_mib, processes=self.processes, timeout=timeout)


@dataclasses.dataclass
class TestSet:
    """One BadNet's hidden test data, in memory: clean images first, then each trigger's poisoned images.

    images: float32 (n_clean + n_poisoned, 55, 47, 3), pixels 0..255.
    clean_labels: true classes of the clean part; targets: {trigger: attacker's labels of its part}.
    """

    images: np.ndarray
    clean_labels: np.ndarray
    targets: dict[str, np.ndarray]
    input_scale: str
    n_classes: int

    @property
    def n_clean(self) -> int:
        return len(self.clean_labels)

    @property
    def n_poisoned(self) -> int:
        return int(sum(len(t) for t in self.targets.values()))


def load_tests(grader_dir: str | os.PathLike, key: Mapping, n: int | None = None) -> dict[str, TestSet]:
    """Every BadNet's :class:`TestSet`, read once (the clean test file is shared)."""
    grader = Path(grader_dir)
    clean = course_data.load_h5(grader / key["clean_test"], n=n)
    tests = {}
    for name, entry in key["badnets"].items():
        poisoned = {t["trigger"]: course_data.load_h5(grader / t["poisoned_test"], n=n) for t in entry["triggers"]}
        tests[name] = TestSet(np.concatenate([clean.x, *(d.x for d in poisoned.values())]).astype(np.float32),
                              np.asarray(clean.y), {t: np.asarray(d.y) for t, d in poisoned.items()},
                              entry["input_scale"], int(key["n_classes"]))
    return tests


def resolve_submissions(specs: Sequence[str], names: Sequence[str]) -> dict[str, Submission | None]:
    """Map ``--submission`` arguments to one :class:`Submission` (or None: nothing handed in) per BadNet name.

    Each spec is ``NAME=PATH`` (a model file or a script for BadNet NAME:
    only that file and its sidecar are copied for grading), a directory
    (searched for ``NAME.keras``, ``NAME.h5``, ``NAME.py`` for every name;
    the whole directory is copied, so a script may read files beside it), or,
    when the challenge has one BadNet, a bare PATH (as ``NAME=PATH``).
    """
    found: dict[str, Submission | None] = {name: None for name in names}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if sep:
            if name not in found:
                raise LabInputError(None, f"--submission NAME=PATH with NAME one of {', '.join(names)}", repr(spec))
            found[name] = Submission(Path(path))
            continue
        path = Path(spec)
        if path.is_dir():
            for candidate in names:
                for suffix in MODEL_SUFFIXES + SCRIPT_SUFFIXES:
                    if found[candidate] is None and (path / f"{candidate}{suffix}").is_file():
                        found[candidate] = Submission(path / f"{candidate}{suffix}", path)
        elif len(names) == 1:
            found[names[0]] = Submission(path)
        else:
            raise LabInputError(None, "--submission NAME=PATH or a directory with one file per BadNet "
                                f"({', '.join(names)})", repr(spec))
    return found


def resolve_class(folder: str | os.PathLike, names: Sequence[str]) -> dict[str, dict[str, Submission | None]]:
    """``{student: {name: Submission or None}}`` for a folder holding one folder per student (sorted by name).

    A student folder that is a symbolic link (to another student's, say) is
    not followed: each of its BadNets scores zero, saying so.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LabInputError(folder, "a folder with one folder per student", "no such folder"
                            if not folder.exists() else "a file")
    students = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise LabInputError(folder, "a folder with one folder per student", "no student folders")
    resolved = {}
    for student in students:
        if student.is_symlink():
            reason = f"the student folder is a symbolic link (to {os.readlink(student)}), not followed"
            resolved[student.name] = {name: Submission(student, student, refusal=reason) for name in names}
        else:
            resolved[student.name] = resolve_submissions([str(student)], names)
    return resolved


# ----------------------------------------------------------------------------- running one submission


def printable(text: str) -> str:
    """``text`` with every non-printable character (terminal escapes, carriage returns...) written as an escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def _one_line(text: str, limit: int = 200) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = printable(lines[-1] if lines else "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _execute(argv_inside: list[str], submission_dir: Path, batch_dir: Path, cwd_inside: str, limits: sandbox.Limits,
             sandboxed: bool) -> sandbox.Result:
    """Run a command that names the submission's private copy and the batch by their sandbox paths.

    Sandboxed: those paths are read-only binds. Unsandboxed: they are
    replaced by the host folders (a trusted instructor's choice).
    """
    if sandboxed:
        return sandbox.run(argv_inside, {str(submission_dir): SUBMISSION_MOUNT, str(batch_dir): BATCH_MOUNT},
                           cwd=cwd_inside, limits=limits)
    host = {SUBMISSION_MOUNT: str(submission_dir), BATCH_MOUNT: str(batch_dir)}

    def outside(arg: str) -> str:
        for inside, real in host.items():
            if arg == inside or arg.startswith(inside + "/"):
                return real + arg[len(inside):]
        return arg

    return sandbox.run_unsandboxed([outside(a) for a in argv_inside], outside(cwd_inside), limits)


def _failure(result: sandbox.Result, limits: sandbox.Limits, what: str) -> SubmissionFailed | None:
    """The reason a run failed, or None when it exited with status 0."""
    if result.timed_out:
        return SubmissionFailed(f"timed out: no answer within {limits.timeout:g} s for {what}")
    if result.out_of_memory:
        return SubmissionFailed(f"ran out of memory (limit {limits.memory_mib} MiB) on {what}")
    if result.status != 0:
        reason = _one_line(result.stderr) or _one_line(result.stdout) or "no output"
        return SubmissionFailed(f"crashed (exit status {result.status}): {reason}")
    return None


def parse_label(text: str, n_classes: int) -> int | None:
    """A class in [0, N] written as ASCII digits (no sign, no spaces, nothing else), or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(n_classes)) + 2:
        return None
    value = int(text)
    return value if value <= n_classes else None


def _parse_answers(lines: list[str], count: int, n_classes: int) -> list[int]:
    """The last ``count`` output lines as classes; SubmissionFailed naming the first that is not one."""
    if len(lines) < count:
        raise SubmissionFailed(f"printed {len(lines)} line(s) for {count} image(s)")
    answers = []
    for line in lines[-count:]:
        label = parse_label(line, n_classes)
        if label is None:
            raise SubmissionFailed(f"printed {printable(line[:60])!r} where a class number in [0, {n_classes}] "
                                   "was expected")
        answers.append(label)
    return answers


def _script_answers(script: Path, folder: Path, tests: TestSet, options: Options,
                    sandboxed: bool) -> tuple[np.ndarray, str]:
    """Answers (image order) of a script submission (``script`` inside its private copy ``folder``).

    The images are dealt in a secret random order into calls of at most
    ``options.batch``; each call's folder holds only its own images.
    """
    python = options.python or sys.executable
    started = time.perf_counter()
    inside = f"{SUBMISSION_MOUNT}/{script.relative_to(folder).as_posix()}"
    where = script.parent.relative_to(folder)
    cwd = SUBMISSION_MOUNT if where == Path(".") else f"{SUBMISSION_MOUNT}/{where.as_posix()}"  # its own folder
    secret_order = batches.shuffled_order(len(tests.images))
    answers = np.full(len(secret_order), -1, dtype=np.int64)
    note, start, size = "", 0, max(1, options.batch)
    while start < len(secret_order):
        left = options.time_limit - (time.perf_counter() - started)
        if left <= 0:
            raise SubmissionFailed(f"ran past the time limit of {options.time_limit:g} s "
                                   f"after {start} of {len(secret_order)} images")
        chunk = secret_order[start:start + size]
        limits = options.limits(min(options.timeout, left))
        with tempfile.TemporaryDirectory(prefix="grade-batch-") as batch_dir:
            names, order = batches.write_batch(tests.images[chunk], batch_dir)
            result = _execute([python, inside, *(f"{BATCH_MOUNT}/{n}" for n in names)], folder, Path(batch_dir),
                              cwd, limits, sandboxed)
        failure = _failure(result, limits, f"{len(chunk)} image(s)")
        if failure:
            raise failure
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if len(chunk) > 1 and len(lines) < len(chunk):
            # Likely an eval.py that reads only sys.argv[1]: go on one image per call
            # (bounded by time_limit if it is something else).
            size, note = 1, "script answers one image per call"
            continue
        answers[chunk[order]] = _parse_answers(lines, len(chunk), tests.n_classes)
        start += len(chunk)
    return answers, note


def _model_answers(model: Path, folder: Path, tests: TestSet, options: Options,
                   sandboxed: bool) -> tuple[np.ndarray, str]:
    """Answers (image order) of a model submission, loaded and run by the worker in a child process."""
    import json

    inside = f"{SUBMISSION_MOUNT}/{model.relative_to(folder).as_posix()}"
    with tempfile.TemporaryDirectory(prefix="grade-batch-") as batch_dir:
        name, order = batches.write_array(tests.images, batch_dir)
        limits = options.limits(options.time_limit)
        result = _execute([sys.executable, "-m", "lab.course.challenge.model_worker", inside,
                           f"{BATCH_MOUNT}/{name}", tests.input_scale, str(tests.n_classes)],
                          folder, Path(batch_dir), "/tmp" if sandboxed else batch_dir, limits, sandboxed)
    failure = _failure(result, limits, "loading and running the model")
    if failure:
        raise failure
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    try:
        record = json.loads(lines[-1][len(RESULT_PREFIX):])
    except (IndexError, ValueError):
        raise SubmissionFailed(f"the model worker gave no result ({_one_line(result.stderr) or 'no output'})") from None
    if not isinstance(record, dict):
        raise SubmissionFailed("the model worker gave no result (not a JSON object)")
    if "failed" in record:
        raise SubmissionFailed(printable(record["failed"]))
    given = record.get("answers")
    if not isinstance(given, list) or len(given) != len(order) or not all(
            type(a) is int and 0 <= a <= tests.n_classes for a in given):
        raise SubmissionFailed(f"the model worker gave no {len(order)} classes in [0, {tests.n_classes}]")
    answers = np.full(len(order), -1, dtype=np.int64)
    answers[order] = np.asarray(given, dtype=np.int64)
    return answers, printable(record.get("note", ""))


def score(clean_accuracy: float, attack_success_rate: float) -> float:
    """The challenge's score (0..100): clean accuracy x (100 - attack success rate) / 100."""
    return float(clean_accuracy) * (100.0 - float(attack_success_rate)) / 100.0


def _scored(answers: np.ndarray, tests: TestSet) -> dict:
    """Rates (percent), per-trigger rates and the score of answers in image order (lab.evaluation.metrics)."""
    from lab.evaluation import metrics

    n = tests.n_classes
    clean, rest = answers[:tests.n_clean], answers[tests.n_clean:]
    per_trigger = {}
    for trigger, targets in tests.targets.items():
        part, rest = rest[:len(targets)], rest[len(targets):]
        per_trigger[trigger] = {"attack_success_rate": metrics.attack_success_rate(part, targets),
                                "detection_rate": metrics.detection_rate(part, n)}
    parts = metrics.breakdown(clean, tests.clean_labels, answers[tests.n_clean:],
                              np.concatenate(list(tests.targets.values())), n)
    return {"per_trigger": per_trigger, "clean_accuracy": parts["clean_accuracy"],
            "clean_false_positive_rate": parts["clean_false_positive_rate"],
            "attack_success_rate": parts["attack_success_rate"], "detection_rate": parts["detection_rate"],
            "score": score(parts["clean_accuracy"], parts["attack_success_rate"])}


def _zero_row(name: str, submission: Submission | None, tests: TestSet, reason: str) -> dict:
    return {"badnet": name, "submission": None if submission is None else os.fspath(submission.path),
            "kind": "none", "status": "zero", "reason": reason, "note": "", "clean_accuracy": None,
            "clean_false_positive_rate": None, "attack_success_rate": None, "detection_rate": None,
            "per_trigger": {}, "score": 0.0, "n_clean": tests.n_clean, "n_poisoned": tests.n_poisoned,
            "seconds": 0.0, "sha256": None}


def _grade_loaded(name: str, submission: Submission | None, tests: TestSet, options: Options, sandboxed: bool,
                  refusal: str) -> dict:
    result = _zero_row(name, submission, tests, "")
    started = time.perf_counter()
    try:
        if submission is None:
            raise SubmissionFailed("nothing handed in")
        if submission.refusal:
            raise SubmissionFailed(submission.refusal)
        path = Path(submission.path)
        if path.suffix in MODEL_SUFFIXES:
            result["kind"] = "model"
        elif path.suffix in SCRIPT_SUFFIXES:
            result["kind"] = "script"
            if not sandboxed and not options.trust_scripts:
                raise SubmissionFailed(f"refused: scripts run only in the bwrap sandbox, which is unavailable "
                                       f"({refusal}); --trust-scripts runs them without it")
        else:
            raise SubmissionFailed(f"{path.name}: expected a model ({', '.join(MODEL_SUFFIXES)}) or a script (.py)")
        if not os.path.lexists(path):
            raise SubmissionFailed(f"no such file {path}")
        with tempfile.TemporaryDirectory(prefix="grade-submission-") as private:
            copied, result["sha256"] = intake.copy_in(submission, private,
                                                      intake.CopyLimits(max_mib=options.submission_mib))
            if result["kind"] == "model":
                answers, note = _model_answers(copied, Path(private), tests, options, sandboxed)
            else:
                answers, note = _script_answers(copied, Path(private), tests, options, sandboxed)
    except (SubmissionFailed, intake.Refused) as failure:
        result.update(reason=printable(failure), seconds=time.perf_counter() - started)
        return result
    result.update(status="scored", **_scored(answers, tests), note=note, seconds=time.perf_counter() - started)
    return result


def _prepare(grader_dir, options: Options, names: set[str]) -> tuple[dict, dict[str, TestSet], bool, str]:
    options.check()
    grader = Path(grader_dir)
    key = check_grader(grader)
    unknown = sorted(names - set(key["badnets"]))
    if unknown:
        raise LabInputError(grader / ANSWER_KEY, f"submissions for {', '.join(key['badnets'])}",
                            f"unknown name(s) {', '.join(unknown)}")
    tests = load_tests(grader, key, options.n)
    sandboxed, refusal = sandbox.probe()  # once per process
    return key, tests, sandboxed, refusal


def grade_one(grader_dir: str | os.PathLike, name: str, submission: str | os.PathLike | Submission | None,
              n: int | None = None, timeout: float = 60.0, batch: int = 500, time_limit: float = 300.0,
              python: str | None = None, trust_scripts: bool = False) -> dict:
    """Score one submission for BadNet ``name``; never raises for a bad submission (score 0 and ``reason``).

    submission: a path (that file and its sidecar are graded), a
    :class:`Submission` (a student's folder, say), or None. Returns
    ``badnet``, ``submission``, ``kind`` (model | script | none),
    ``status`` (scored | zero), ``reason``, ``note``, the rates (percent;
    None when not scored) ``clean_accuracy``, ``clean_false_positive_rate``,
    ``attack_success_rate``, ``detection_rate`` (all poisoned inputs pooled),
    ``per_trigger`` ({trigger: {attack_success_rate, detection_rate}}),
    ``score``, ``n_clean``, ``n_poisoned``, ``seconds`` (wall time),
    ``sha256`` (of the submitted file; None when nothing was copied).
    """
    return grade(grader_dir, {name: submission}, n, timeout, batch, time_limit, python, trust_scripts=trust_scripts,
                 only=[name])[0]


def grade(grader_dir: str | os.PathLike, submissions: Mapping[str, str | os.PathLike | Submission | None],
          n: int | None = None, timeout: float = 60.0, batch: int = 500, time_limit: float = 300.0,
          python: str | None = None, progress: bool = False, trust_scripts: bool = False, jobs: int = 1,
          only: Sequence[str] | None = None, memory_mib: int = sandbox.Limits.memory_mib) -> list[dict]:
    """Score a submission for every BadNet of the challenge (see :func:`grade_one`); BadNets missing from
    ``submissions`` score zero ("nothing handed in"). Returns one result per BadNet, in the key's order
    (only those in ``only`` when given)."""
    results = grade_class(grader_dir, {"": submissions}, Options(n, timeout, batch, time_limit, python, trust_scripts,
                                                                  memory_mib), jobs=jobs, progress=progress, only=only)
    for row in results:
        row.pop("student")
    return results


def _check_grader_outside(grader: Path, work: Sequence[tuple[str, str, Submission | None]]) -> None:
    """Refuse, in one line, to grade a submission folder that holds the grader folder (it would be copied)."""
    for _, _, submission in work:
        if submission is not None and submission.folder is not None and not submission.refusal \
                and intake.holds(submission.folder, grader):
            raise LabInputError(submission.folder, "a submission folder that does not hold the grader folder",
                                f"it holds {grader}; move the grader folder out of the students' reach")


def _note_duplicates(rows: Sequence[dict]) -> None:
    """Add "same file as ..." to the note of every row whose submitted file another student handed in too."""
    owners: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row["sha256"] and row["student"]:
            owners.setdefault((row["badnet"], row["sha256"]), []).append(row["student"])
    for row in rows:
        others = [s for s in owners.get((row["badnet"], row["sha256"]), []) if s != row["student"]]
        if others:
            same = "same file as " + ", ".join(f"{printable(s)}'s" for s in dict.fromkeys(others))
            row["note"] = "; ".join(filter(None, [row["note"], same]))


def grade_class(grader_dir: str | os.PathLike,
                students: Mapping[str, Mapping[str, str | os.PathLike | Submission | None]],
                options: Options | None = None, jobs: int | None = None, progress: bool = False,
                only: Sequence[str] | None = None) -> list[dict]:
    """Score every student's submissions: ``{student: {badnet: Submission, path or None}}`` -> one row per
    (student, BadNet).

    Rows come in students' order, then the key's BadNet order, whatever
    ``jobs`` is (default: the machine's cores): a parallel run gives the same
    table as a serial one. Each row is :func:`grade_one`'s dict plus
    ``student``; a file two students handed in for the same BadNet is named
    in both rows' notes. Whatever goes wrong while one submission is graded
    is that row's zero, with the reason. A tqdm progress bar goes to standard
    error with ``progress``.
    """
    options = options or Options()
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 1:
        raise LabInputError(None, "--jobs N with N >= 1", repr(jobs))
    names = set().union(*(set(s) for s in students.values())) if students else set()
    key, tests, sandboxed, refusal = _prepare(grader_dir, options, names)
    wanted = [name for name in key["badnets"] if only is None or name in only]
    work = [(student, name, intake.as_submission(submissions.get(name)))
            for student, submissions in students.items() for name in wanted]
    _check_grader_outside(Path(grader_dir), work)
    rows: list[dict | None] = [None] * len(work)

    def one(index: int) -> None:
        student, name, submission = work[index]
        try:
            row = _grade_loaded(name, submission, tests[name], options, sandboxed, refusal)
        except Exception as error:  # noqa: BLE001 - one submission's failure of any kind is its own zero
            row = _zero_row(name, submission, tests[name], f"grading failed: {error.__class__.__name__}: "
                                                           f"{_one_line(error)}")
        rows[index] = {"student": student, **row}

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(work), desc="grading", unit="submission", file=sys.stderr)
    try:
        if jobs == 1:
            for index in range(len(work)):
                one(index)
                if bar is not None:
                    bar.update()
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:  # the work itself runs in child processes
                for future in as_completed([pool.submit(one, index) for index in range(len(work))]):
                    future.result()
                    if bar is not None:
                        bar.update()
    finally:
        if bar is not None:
            bar.close()
    _note_duplicates(rows)
    return rows


# ----------------------------------------------------------------------------- tables


def _percent(value) -> str:
    return "     -" if value is None or value != value else f"{value:6.1f}"


def format_table(results: Sequence[Mapping], times: bool = True) -> str:
    """The score table as text: one row per BadNet (and per student when rows have one), all poisoned inputs
    pooled, one indented row per trigger of a multi-trigger BadNet, each submission's wall time (``times``),
    the reason for every zero, and the mean score (per student, then overall)."""
    students = [printable(row.get("student") or "") for row in results]  # folder names are the students' too
    by_student = any(students)
    width = max([7, *(len(s) for s in students)]) if by_student else 0
    lead = (lambda s: f"{s:<{width}} ") if by_student else (lambda s: "")
    time_head = f" {'time s':>7}" if times else ""
    header = (f"{lead('student')}{'BadNet':<22} {'kind':<6} {'clean %':>7} {'FPR %':>6} {'ASR %':>6} "
              f"{'detect %':>8} {'score':>6}{time_head}  note")
    lines = [header, "-" * len(header)]
    for student, row in zip(students, results):
        note = printable(row["reason"] if row["status"] == "zero" else row["note"])
        seconds = f" {row['seconds']:7.1f}" if times else ""
        lines.append(f"{lead(student)}{row['badnet']:<22} {row['kind']:<6} "
                     f"{_percent(row['clean_accuracy']):>7} {_percent(row['clean_false_positive_rate'])} "
                     f"{_percent(row['attack_success_rate'])} {_percent(row['detection_rate']):>8} "
                     f"{row['score']:6.1f}{seconds}  {note}".rstrip())
        if len(row["per_trigger"]) > 1:
            for trigger, rates in row["per_trigger"].items():
                lines.append(f"{lead('')}  {trigger:<20} {'':<6} {'':>7} {'':>6} "
                             f"{_percent(rates['attack_success_rate'])} {_percent(rates['detection_rate']):>8}")
    lines.append("-" * len(header))
    if by_student:
        for student in dict.fromkeys(students):
            mine = [row["score"] for name, row in zip(students, results) if name == student]
            lines.append(f"{lead(student)}{'mean score':<22} {'':<6} {'':>7} {'':>6} {'':>6} {'':>8} "
                         f"{sum(mine) / max(1, len(mine)):6.1f}")
    total = sum(row["score"] for row in results) / max(1, len(results))
    lines.append(f"{lead('')}{'mean score':<22} {'':<6} {'':>7} {'':>6} {'':>6} {'':>8} {total:6.1f}"
                 f"{' ' * len(time_head)}  ({SCORE_RULE})")
    return "\n".join(lines)

