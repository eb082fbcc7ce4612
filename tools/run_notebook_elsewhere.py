"""Execute one notebook with plain nbclient, as Colab or a student's own Jupyter would: no lab imported here.

``python tools/run_notebook_elsewhere.py NOTEBOOK OUT``

The kernel starts in the notebook's folder. Exits 1 naming the problem when
a cell fails or an output holds TensorFlow/absl log lines; prints the setup
cell's output (the first code cell) so the smoke run shows it. Used by
``tools/smoke.sh``; run with the Python of the environment under test.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOISE = re.compile(r"absl::InitializeLog|oneDNN custom operations|^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+|grappler",
                   re.MULTILINE)


def text_of(cell) -> str:
    return "".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))


def outcome(cell) -> str:
    """``ok``/``error`` with the cell's seconds (nbclient's execution timestamps) and its first line of source."""
    failed = any(output.get("output_type") == "error" for output in cell.get("outputs", []))
    timing = cell.get("metadata", {}).get("execution", {})
    seconds = ""
    if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
        from datetime import datetime

        start, end = (datetime.fromisoformat(timing[key].replace("Z", "+00:00"))
                      for key in ("iopub.execute_input", "shell.execute_reply"))
        seconds = f" {(end - start).total_seconds():.1f} s"
    first = next((line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")), "")
    return f"{'error' if failed else 'ok'}{seconds}: {first[:70]}"


def main(notebook: str, out: str) -> int:
    path = Path(notebook).resolve()
    node = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    # IPC sockets, as lab.course.notebooks does: no "Kernel is running over TCP" warning.
    config = {} if os.name == "nt" else {"KernelManager": {"transport": "ipc", "ip": str(path.parent / ".kernel-ipc")}}
    from traitlets.config import Config

    client = NotebookClient(node, timeout=1800, kernel_name="python3", config=Config(config),
                            resources={"metadata": {"path": str(path.parent)}})
    failure = None
    try:
        client.execute()
    except CellExecutionError as error:
        failure = str(error)[-1500:]
    finally:
        nbformat.write(node, out)
    code = [cell for cell in node.cells if cell.cell_type == "code"]
    print(f"{path.name}: executed in {time.perf_counter() - started:.0f} s; setup cell output:")
    print("    " + text_of(code[0]).strip().replace("\n", "\n    "))
    print(f"{path.name}: each code cell's outcome:")
    for number, cell in enumerate(code):
        print(f"    cell {number}: {outcome(cell) if cell.get('execution_count') else 'not run'}")
    if failure is not None:
        print(f"error: {path.name}: a cell failed: {failure}", file=sys.stderr)
        return 1
    for number, cell in enumerate(code):
        match = NOISE.search(text_of(cell))
        if match:
            print(f"error: {path.name}: code cell {number} shows log noise: {match.group(0)!r}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    sys.exit(main(*sys.argv[1:]))
