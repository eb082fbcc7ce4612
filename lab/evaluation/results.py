"""The published goal table: every defense's row on the lab's BadNets, as the measurement harness wrote it.

``python tools/measure_repairs.py --publish`` writes ``lab/results/repairs.csv``
(one row per BadNet x defense x seed: clean accuracy and attack success rate
before and after, detection and clean false positives for detectors, seconds
to fit, whether the goal is met) and ``lab/results/repairs.json`` (the
command, the commit and the date that produced it, and the SHA-256 of each
BadNet measured). Both ship inside the package, so a notebook can show rows
it does not recompute, labelled with where they came from, also where the lab
is pip-installed. The numbers are the harness's, at the full schedules of each
defense; nothing here recomputes or edits them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from lab.errors import LabInputError

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
TABLE, PROVENANCE = "repairs.csv", "repairs.json"
PROVENANCE_KEYS = ("command", "commit", "date", "badnets")


@dataclasses.dataclass
class Published:
    """The table and where it came from.

    table: ``pandas.DataFrame``, the harness's columns (``badnet``, ``defense``,
    ``kind``, ``seed``, ``clean_after``, ``asr_after``, ``detection``,
    ``false_positives``, ``seconds``, ``goal``, ...); command: the harness's
    command line; commit: the checkout's git commit when the table was
    published (``-dirty`` when ``lab/`` had uncommitted changes; the harness
    caches rows across runs, so an earlier commit may have computed some);
    date: ISO date of publishing; badnets: ``{name: SHA-256 of its bd_net.h5}``.
    """

    table: object
    command: str
    commit: str
    date: str
    badnets: dict
    path: Path

    def badnet_named_by(self, sha256: str) -> str | None:
        """The name under which the BadNet with this SHA-256 was measured, or None when it was not."""
        return next((name for name, digest in self.badnets.items() if digest == sha256), None)

    def rows(self, badnet: str):
        """The rows of one BadNet, indexed by defense (first seed measured per defense)."""
        rows = self.table[self.table["badnet"] == badnet]
        return rows.drop_duplicates("defense").set_index("defense")

    def provenance(self) -> str:
        """One line: the file, the command and the commit that wrote it."""
        return f"{self.path.name}: written by `{self.command}` at commit {self.commit} on {self.date}"


def load(directory: str | os.PathLike = RESULTS_DIR) -> Published:
    """Read the published table from ``directory``; a missing or malformed file is refused in one line."""
    import pandas as pd

    directory = Path(directory)
    table_path, provenance_path = directory / TABLE, directory / PROVENANCE
    for path in (table_path, provenance_path):
        if not path.is_file():
            raise LabInputError(path, "the published results (python tools/measure_repairs.py --publish)",
                                "no such file")
    try:
        provenance = json.loads(provenance_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabInputError(provenance_path, "JSON", f"unreadable text ({error})") from None
    if not isinstance(provenance, dict):
        raise LabInputError(provenance_path, "a JSON object", type(provenance).__name__)
    missing = [key for key in PROVENANCE_KEYS if key not in provenance]
    if missing:
        raise LabInputError(provenance_path, f"the keys {', '.join(PROVENANCE_KEYS)}", f"no {', '.join(missing)}")
    table = pd.read_csv(table_path)
    absent = {"badnet", "defense", "clean_after", "asr_after"} - set(table.columns)
    if absent:
        raise LabInputError(table_path, "the harness's columns", f"no {', '.join(sorted(absent))}")
    return Published(table, str(provenance["command"]), str(provenance["commit"]), str(provenance["date"]),
                     dict(provenance["badnets"]), table_path)
