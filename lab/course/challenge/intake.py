"""Take a submission in: copy what a student handed in into a private folder before anything of it runs.

A submission is never run where it lies: the folder around it may hold the
grader's files or other students' work (a script handed in beside
``grader/``, a shared inbox). What is copied:

- ``NAME=FILE``: the file and its sidecar (``FILE.lab.json``), nothing else;
- a student's folder: the whole folder, symbolic links left out (never followed).

Refused with a reason (the submission scores zero): a submitted file that is
a symbolic link, a special file (FIFO, device, socket) or a hard link (a
second name of a file that may be the answer key), and a submission of more
than :attr:`CopyLimits.max_files` files or :attr:`CopyLimits.max_mib` MiB.
Each file is opened without following links and checked on the open
descriptor, so a file swapped for a link after it was listed is not followed
either.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import stat
from pathlib import Path

from lab.io.models import META_SUFFIX, sha256_file

CHUNK = 1 << 20


class Refused(Exception):
    """A submission that is not copied (and so not graded); the message is the reason in the score table."""


@dataclasses.dataclass(frozen=True)
class Submission:
    """What one student handed in for one BadNet.

    path: the model file or script. folder: the student's folder, copied
    with it (None: only the file and its sidecar are copied). refusal: when
    set, nothing is copied or run and the submission scores zero with it.
    """

    path: Path
    folder: Path | None = None
    refusal: str = ""


def as_submission(value) -> Submission | None:
    """A :class:`Submission` from a path (only the file and its sidecar), a Submission, or None."""
    if value is None or isinstance(value, Submission):
        return value
    return Submission(Path(value))


@dataclasses.dataclass(frozen=True)
class CopyLimits:
    """Caps on one submission's copy: total size and number of files."""

    max_mib: int = 512
    max_files: int = 10_000


@dataclasses.dataclass
class _Budget:
    limits: CopyLimits
    bytes_left: int = 0
    files_left: int = 0

    def __post_init__(self):
        self.bytes_left = self.limits.max_mib << 20
        self.files_left = self.limits.max_files

    def take(self, size: int, name: str) -> None:
        self.files_left -= 1
        self.bytes_left -= size
        if self.files_left < 0:
            raise Refused(f"more than {self.limits.max_files} files handed in")
        if self.bytes_left < 0:
            raise Refused(f"more than {self.limits.max_mib} MiB handed in (at {name})")


def _copy_file(source: Path, target: Path, budget: _Budget, shown: str, digest=None) -> None:
    """Copy one regular file without following links; Refused for links, special files, hard links, size."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        handle = os.open(source, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise Refused(f"{shown}: a symbolic link (links are not followed; hand in the file itself)") from None
        raise Refused(f"{shown}: cannot be read ({error.strerror})") from None
    with os.fdopen(handle, "rb") as reader:
        info = os.fstat(reader.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{shown}: not a regular file (a FIFO, device or socket)")
        if info.st_nlink > 1:
            raise Refused(f"{shown}: a hard link (one of {info.st_nlink} names of a file); hand in a plain copy")
        budget.take(info.st_size, shown)
        left = info.st_size
        with open(target, "xb") as writer:
            while True:
                block = reader.read(min(CHUNK, left + 1))
                if not block:
                    break
                left -= len(block)
                if left < 0:
                    raise Refused(f"{shown}: grew while it was copied")
                writer.write(block)
                if digest is not None:
                    digest.update(block)


def _copy_folder(source: Path, target: Path, budget: _Budget, root: Path) -> None:
    """Copy a folder's regular files and folders (symbolic links are left out, never followed)."""
    with os.scandir(source) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            shown = str((Path(entry.path)).relative_to(root))
            if entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                (target / entry.name).mkdir()
                _copy_folder(Path(entry.path), target / entry.name, budget, root)
            else:
                _copy_file(Path(entry.path), target / entry.name, budget, shown)


def copy_in(submission: Submission, target: str | os.PathLike, limits: CopyLimits | None = None) -> tuple[Path, str]:
    """Copy ``submission`` into the empty folder ``target``; returns (its file there, SHA-256 of that file).

    Raises :class:`Refused` (the reason) for a refused or unreadable submission.
    """
    if submission.refusal:
        raise Refused(submission.refusal)
    target = Path(target)
    budget = _Budget(limits or CopyLimits())
    path = Path(submission.path)
    if submission.folder is not None:
        folder = Path(submission.folder)
        try:
            inside = path.relative_to(folder)
        except ValueError:
            raise Refused(f"{path.name} is not inside the student's folder {folder.name}") from None
        if path.is_symlink():
            raise Refused(f"{inside}: a symbolic link (links are not followed; hand in the file itself)")
        _copy_folder(folder, target, budget, folder)
        copied = target / inside
        if not copied.is_file():
            raise Refused(f"{inside}: not copied (not a regular file in the student's folder)")
        return copied, sha256_file(copied)
    digest = hashlib.sha256()
    _copy_file(path, target / path.name, budget, path.name, digest)
    sidecar = Path(os.fspath(path) + META_SUFFIX)
    if os.path.lexists(sidecar):
        _copy_file(sidecar, target / sidecar.name, budget, sidecar.name)
    return target / path.name, digest.hexdigest()


def holds(folder: str | os.PathLike, inner: str | os.PathLike) -> bool:
    """Whether ``inner`` (resolved) is ``folder`` (resolved) or lies inside it."""
    folder, inner = Path(folder).resolve(), Path(inner).resolve()
    return inner == folder or folder in inner.parents
