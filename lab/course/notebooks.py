"""Executing the lab's notebooks: parameters injected papermill-style, executed with nbclient.

``python -m lab notebooks [--out build/notebooks] [--html] [-p NAME VALUE ...] [NOTEBOOK ...]``
runs every numbered notebook top to bottom on a fresh kernel and keeps the
executed copies (and HTML exports) outside ``notebooks/``, so the committed
notebooks stay without outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from lab.paths import PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"


def lab_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb") if not p.name.endswith(".nbconvert.ipynb"))


def _kernel_config():
    """Kernel-manager settings: local sockets (IPC) where the OS has them.

    Over the default TCP transport ipykernel warns, once per notebook, that the
    kernel runs "over TCP without encryption"; IPC sockets live in Jupyter's
    runtime folder, readable only by the user, so there is nothing to warn
    about. Windows has no IPC transport and keeps TCP (on localhost).
    """
    import uuid

    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets.config import Config

    if os.name == "nt":
        return Config()
    # An absolute socket path: the kernel starts in the notebook's folder, the client in ours.
    runtime = Path(jupyter_runtime_dir())
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Config({"KernelManager": {"transport": "ipc", "ip": str(runtime / f"lab-{uuid.uuid4().hex[:12]}-ipc")}})


def execute(notebook: str | Path, out: str | Path, parameters: dict | None = None, html: bool = False,
            timeout: int = 1800, cwd: str | Path | None = None) -> dict:
    """Execute ``notebook`` into ``out`` (a file path) with ``parameters`` injected; returns timing.

    Parameters go into a cell inserted after the one tagged ``parameters``
    (papermill's convention). Raises ``nbclient.exceptions.CellExecutionError``
    naming the failing cell when a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    notebook, out = Path(notebook), Path(out)
    node = load_notebook_node(str(notebook))  # adds the metadata papermill's parameterize expects
    if parameters:
        node = parameterize_notebook(node, parameters)
    started = time.perf_counter()
    client = NotebookClient(node, config=_kernel_config(), timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd or notebook.parent)}})
    try:
        client.execute()
    finally:
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(node, out)
    seconds = time.perf_counter() - started
    if html:
        export_html(out)
    return {"notebook": notebook.name, "seconds": seconds, "out": str(out)}


def notebook_title(node, path: str | Path) -> str:
    """The text of a notebook's first ``# `` heading (the HTML page's title), else its file name."""
    for cell in node.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return Path(path).stem


def export_html(executed: str | Path) -> Path:
    """An HTML export beside an executed notebook (``.ipynb`` -> ``.html``), titled by its first heading."""
    import nbformat
    from nbconvert import HTMLExporter

    executed = Path(executed)
    node = nbformat.read(executed, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(node, resources={"metadata": {"name": notebook_title(node, executed)}})
    out = executed.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def main(argv: list[str] | None = None, prog: str = "python -m lab.course.notebooks") -> int:
    """The program behind ``python -m lab notebooks`` (and ``python -m lab.course.notebooks``)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: every numbered notebook)")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "build" / "notebooks"),
                        help="directory for executed copies (default build/notebooks)")
    parser.add_argument("--html", action="store_true", help="also export each executed notebook to HTML")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a parameter in every notebook; VALUE is read as JSON when it parses, else text")
    args = parser.parse_args(argv)
    parameters = {}
    for name, value in args.parameter:
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name] = value
    paths = [Path(p) for p in args.notebooks] or lab_notebooks()
    total = 0.0
    for path in paths:
        report = execute(path, Path(args.out) / path.name, parameters, html=args.html)
        total += report["seconds"]
        print(f"{path.name}: {report['seconds']:.1f} s -> {report['out']}", flush=True)
    print(f"executed {len(paths)} notebooks in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
