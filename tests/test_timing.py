"""lab.course.timing: seconds recorded in a real kernel come back from the executed notebook, never as text."""

from __future__ import annotations

import nbformat

from lab.course import notebooks, timing


def test_recorded_seconds_are_metadata_of_an_empty_output(tmp_path):
    node = nbformat.v4.new_notebook()
    node.cells = [nbformat.v4.new_markdown_cell("# 99 · A tiny notebook"),
                  nbformat.v4.new_code_cell("from lab.course import timing\ntiming.record('step', 0.5 * 3)\n"
                                            "timing.record('table', {'a': 2, 'b': 0.25})\nprint('done')")]
    nbformat.write(node, tmp_path / "99_tiny.ipynb")
    notebooks.execute(tmp_path / "99_tiny.ipynb", tmp_path / "out.ipynb", timeout=300)
    assert timing.read(tmp_path / "out.ipynb") == {"step": 1.5, "table": {"a": 2.0, "b": 0.25}}
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[1].outputs
    assert all(o.get("name") != "stderr" for o in outputs)
    assert [o.get("text") or o["data"]["text/plain"] for o in outputs] == ["", "", "done\n"]
    html = notebooks.export_html(tmp_path / "out.ipynb").read_text(encoding="utf-8")
    assert "<title>99 · A tiny notebook</title>" in html and "1.5" not in html.split("<body", 1)[1]


def test_outside_a_kernel_only_the_silent_logger(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="lab.timing"):
        timing.record("step", 2)
    assert "step: 2.0" in caplog.text
