"""The challenge's folders and answer key: names, constants, reading the key.

The answer key (``grader/answer_key.json``) holds every BadNet's attack,
triggers, targets and test files; the grader folder's ``manifest.json`` the
SHA-256 of each of its files (checked before grading: :func:`check_grader`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lab.errors import LabInputError

STUDENT = "student"
GRADER = "grader"
ANSWER_KEY = "answer_key.json"
CHALLENGE_KIND = "BadNet Pruning Lab hidden-trigger challenge"
SCORE_RULE = "clean accuracy x (100 - attack success rate) / 100"
INPUT_SCALE = "unit"  # the 2020 models take x/255
MODEL_SUFFIXES = (".keras", ".h5")
SCRIPT_SUFFIXES = (".py",)


def read_answer_key(grader_dir: str | os.PathLike) -> dict:
    """The grader folder's answer key (one-line error when missing or not one)."""
    path = Path(grader_dir) / ANSWER_KEY
    if not path.exists():
        raise LabInputError(path, "the answer key of a grader folder written by make-challenge", "no such file")
    try:
        key = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LabInputError(path, "a JSON answer key", f"invalid JSON ({error.msg})") from None
    if key.get("kind") != CHALLENGE_KIND or "badnets" not in key:
        raise LabInputError(path, "an answer key written by make-challenge", f"kind {key.get('kind')!r}")
    return key


def check_grader(grader_dir: str | os.PathLike) -> dict:
    """The answer key, after every file of the grader folder matched the SHA-256 in its manifest.

    Raises :class:`LabInputError` (one line) for a missing or foreign key, a
    missing manifest, or a file that is missing or changed: a grader folder
    that was tampered with is never graded from.
    """
    from lab.io import manifest

    grader = Path(grader_dir)
    key = read_answer_key(grader)
    record = manifest.read_manifest(grader)
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or ANSWER_KEY not in files:
        raise LabInputError(grader / manifest.MANIFEST_NAME, "the grader manifest written by make-challenge "
                            f"(SHA-256 of {ANSWER_KEY} and the test data)", "no such entries")
    manifest.check_manifest(grader)
    return key
