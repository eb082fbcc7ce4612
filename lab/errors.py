"""One-line errors for bad input.

Every problem with a user's file is raised as :class:`LabInputError` whose
message names the file, what was expected and what was found, so the CLI can
print it on one line and notebooks show it without a TensorFlow trace.
"""

from __future__ import annotations

import os


class LabError(Exception):
    """Base class of errors the lab reports to users in one line."""


class LabInputError(LabError, ValueError):
    """A file or argument is not what the lab expects."""

    def __init__(self, path: str | os.PathLike | None, expected: str, found: str):
        self.path = None if path is None else os.fspath(path)
        self.expected = expected
        self.found = found
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}expected {expected}, found {found}")


class RefuseOverwrite(LabError, FileExistsError):
    """A file the user made would be overwritten without ``--force``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: already exists; pass --force (force=True) to overwrite it")


def check_writable(path: str | os.PathLike, force: bool) -> None:
    """Raise :class:`RefuseOverwrite` if ``path`` exists and ``force`` is false."""
    if os.path.exists(path) and not force:
        raise RefuseOverwrite(path)


def check_output_location(path: str | os.PathLike, argument: str, kind: str = "directory") -> None:
    """Raise :class:`LabInputError` unless ``path`` can be written as a ``kind`` ("directory" or "file").

    Checked before any long work starts, so a run never ends in a traceback
    after minutes of training or pruning: ``path`` must not be a file (for a
    directory) or a directory (for a file), nor lie under a file, and the
    nearest existing folder above it must accept new files. Writability is
    probed by creating and removing a temporary file, because ``os.access``
    says yes to root on any folder and knows nothing of read-only mounts.
    """
    import tempfile
    from pathlib import Path

    path = Path(path)
    if kind not in ("directory", "file"):
        raise ValueError(f"kind must be 'directory' or 'file', got {kind!r}")
    expected = f"{argument} a {kind} that can be written"
    if kind == "directory" and path.exists() and not path.is_dir():
        raise LabInputError(path, f"{argument} a directory", "a file")
    if kind == "file" and path.is_dir():
        raise LabInputError(path, f"{argument} a file", "a directory")
    folder = path if kind == "directory" else path.parent
    while not folder.exists():
        if os.path.islink(folder):  # a dangling link: mkdir would fail on it
            raise LabInputError(path, expected, f"a broken symbolic link at {folder}")
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise LabInputError(path, expected, f"{folder} is a file, not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lab-write-test-"):
            pass
    except OSError as error:
        raise LabInputError(path, expected, f"{folder} is not writable ({error.strerror or error})") from None
