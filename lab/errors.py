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
