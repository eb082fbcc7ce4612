"""Wall-clock seconds of a notebook's slow steps, kept out of what students read and graders compare.

A cell calls :func:`record`; the seconds travel as the metadata of an empty
display output (key :data:`KEY`), which Jupyter and the HTML export show as
nothing and a comparison of outputs' text does not see. Printed to stderr
they were red boxes in Jupyter and in the HTML export, which read as
errors. ``make bench`` reads them back with :func:`read`. Outside a kernel
(a plain Python session) they go to the ``lab.timing`` logger, silent
unless someone configures it.
"""

from __future__ import annotations

import logging
from pathlib import Path

KEY = "badnet_lab_timing"
LOGGER = logging.getLogger("lab.timing")


def record(name: str, seconds) -> None:
    """Record ``seconds`` (a number, or ``{row: number}`` for a table of steps) under ``name``."""
    value = {str(row): float(s) for row, s in seconds.items()} if isinstance(seconds, dict) else float(seconds)
    LOGGER.info("%s: %s", name, value)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # no IPython: the logger alone
        return
    if get_ipython() is not None:
        display({"text/plain": ""}, raw=True, metadata={KEY: {name: value}})


def read(executed: str | Path) -> dict:
    """Every value :func:`record` left in an executed notebook, ``{name: seconds or {row: seconds}}``, in order."""
    import nbformat

    found = {}
    for cell in nbformat.read(executed, as_version=4).cells:
        for output in cell.get("outputs", []):
            found.update(output.get("metadata", {}).get(KEY, {}))
    return found
