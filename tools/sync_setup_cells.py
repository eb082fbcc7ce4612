"""Put the setup cell (tools/setup_cell.py) into every notebook and the "Open in Colab" badges into the README.

``python tools/sync_setup_cells.py [--check]``

Each notebook under ``notebooks/`` gets the cell as its first code cell,
right after the title (inserted once, refreshed in place afterwards: the cell
is found by its id ``lab-setup``). The README's block between
``<!-- colab-badges:start -->`` and ``<!-- colab-badges:end -->`` gets one
badge per notebook, pointing at the repository in ``[project.urls]``.
Idempotent: a second run changes nothing. ``--check`` changes nothing and
exits 1 naming what is out of date (the tests run it). Run it after editing
or adding a notebook; then ``make student`` refreshes the student copies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import setup_cell  # noqa: E402  (the template, beside this script)

ROOT = setup_cell.ROOT
BADGES_START, BADGES_END = "<!-- colab-badges:start -->", "<!-- colab-badges:end -->"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def notebooks(directory: Path = ROOT / "notebooks") -> list[Path]:
    """Every notebook under ``directory``, sorted (numbered ones and A1...)."""
    return sorted(directory.glob("*.ipynb"))


def synced(node: nbformat.NotebookNode, source: str) -> bool:
    """Put the setup cell into ``node`` (in place); returns whether anything changed."""
    for cell in node.cells:
        if cell.get("id") == setup_cell.CELL_ID:
            if cell.cell_type == "code" and cell.source == source:
                return False
            node.cells.remove(cell)
            break
    cell = nbformat.v4.new_code_cell(source)
    cell.id = setup_cell.CELL_ID
    # After the title (a first markdown cell), before everything else; at the top if there is no title.
    at = 1 if node.cells and node.cells[0].cell_type == "markdown" else 0
    node.cells.insert(at, cell)
    return True


def badges_block(paths: list[Path]) -> str:
    """The README block: one "Open in Colab" badge per notebook."""
    lines = [BADGES_START, "| notebook | open it on Colab |", "|---|---|"]
    lines += [f"| `{p.stem}` | [![Open {p.stem} in Colab]({BADGE})]({setup_cell.colab_url(p.name)}) |" for p in paths]
    return "\n".join(lines + [BADGES_END])


def readme_with_badges(text: str, block: str) -> str:
    if BADGES_START not in text or BADGES_END not in text:
        raise SystemExit(f"error: README.md: expected the markers {BADGES_START} ... {BADGES_END}, found none")
    head, rest = text.split(BADGES_START, 1)
    return head + block + rest.split(BADGES_END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/sync_setup_cells.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when something is out of date")
    args = parser.parse_args(argv)
    source = setup_cell.cell_source()
    stale = []
    paths = notebooks()
    for path in paths:
        node = nbformat.read(path, as_version=4)
        if synced(node, source):
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                nbformat.write(node, path)
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    updated = readme_with_badges(text, badges_block(paths))
    if updated != text:
        stale.append("README.md")
        if not args.check:
            readme.write_text(updated, encoding="utf-8")
    if args.check and stale:
        print(f"out of date (run python tools/sync_setup_cells.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"{'updated' if stale else 'up to date'}: {', '.join(stale) or f'{len(paths)} notebooks and README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
