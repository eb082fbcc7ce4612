"""The notebooks: committed clean, the course skeleton, executed end to end (nbclient / nbconvert), reproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from conftest import REPO, assert_no_log_noise
from lab.course import autograde, notebooks, student

pytestmark = pytest.mark.slow  # executes notebooks end to end

NOTEBOOKS = notebooks.lab_notebooks(REPO / "notebooks")
SKELETON = ("In this notebook you will", "## Setup", "## Summary", "## Exercises")


def test_all_five_numbered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS][:5] == ["00_data", "01_badnet", "02_activations", "03_pruning", "04_goodnet"]
    assert not list((REPO / "notebooks").glob("Untitled*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_with_clean_metadata(path):
    node = nbformat.read(path, as_version=4)
    nbformat.validate(node)
    for cell in node.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs before committing"
        assert set(cell.metadata) <= {"tags", "nbgrader"}, f"{path.name}: cell metadata {dict(cell.metadata)}"
    assert set(node.metadata) <= {"kernelspec", "language_info"}, f"{path.name}: notebook metadata {set(node.metadata)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_course_skeleton(path):
    node = nbformat.read(path, as_version=4)
    text = "\n".join(cell.source for cell in node.cells)
    assert node.cells[0].cell_type == "markdown" and node.cells[0].source.startswith("# ")
    for heading in SKELETON:
        assert heading in text, f"{path.name} lacks {heading!r}"
    tagged = [cell for cell in node.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and "LAB_ROOT = None" in tagged[0].source and "SEED" in tagged[0].source


def _small_parameters(tiny_default, build):
    return {"LAB_ROOT": str(tiny_default), "OUT_DIR": str(build), "PRUNED_DIR": str(build),
            "EXPECTED_CLEAN_ACCURACY": [50.0, 100.0], "EXPECTED_ATTACK_SUCCESS": [70.0, 100.0], "N_IMAGES": 2,
            "FINE_TUNE_EPOCHS": 2, "PAPER_EPOCHS": 1, "EXPECTED_FINE_PRUNED_ASR": [0.0, 100.0],
            "FLOW_RESTARTS": 1, "REVERSE_EPOCHS": 3, "N_CANDIDATES": 3, "N_RANDOM": 2, "REPAIR_EPOCHS": 2, "REREVERSE_STEPS": 5,
            "EXPECTED_REPAIRED_ASR": [0.0, 100.0]}


def _parameters_for(path, everything):
    """Only the parameters a notebook declares (papermill would warn about the others)."""
    node = nbformat.read(path, as_version=4)
    source = next(c.source for c in node.cells if "parameters" in c.metadata.get("tags", []))
    return {name: value for name, value in everything.items() if f"\n{name} =" in "\n" + source}


def _outputs_text(path):
    node = nbformat.read(path, as_version=4)
    parts = []
    for cell in node.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") or json.dumps(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def executed(tiny_default, tmp_path_factory):
    """Every notebook run top to bottom, in order, on the tiny default, through the autograder; {stem: executed path}.

    The grader executes the solution notebooks as submitted work (nbgrader's
    Execute, hidden tests in), so the same run checks that they earn full marks.
    """
    out = tmp_path_factory.mktemp("executed")
    build = tmp_path_factory.mktemp("build") / "models"
    build.mkdir()
    everything = _small_parameters(tiny_default, build)
    result = {"grades": {}}
    for path in NOTEBOOKS:
        grade = autograde.grade_notebook(path, REPO / "notebooks", everything, build, timeout=600,
                                         keep=out / path.name)
        result[path.stem] = out / path.name
        result["grades"][path.stem] = grade
        notebooks.export_html(out / path.name)
    result["build"] = build
    return result


def test_every_notebook_runs_end_to_end(executed):
    for path in NOTEBOOKS:
        node = nbformat.read(executed[path.stem], as_version=4)
        errors = [o for c in node.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors[:1]}"
        assert executed[path.stem].with_suffix(".html").stat().st_size > 10_000
        assert_no_log_noise(_outputs_text(executed[path.stem]), f"{path.name} outputs")


def test_solution_notebooks_earn_full_marks(executed):
    for path in NOTEBOOKS:
        grade = executed["grades"][path.stem]
        expected = sum(e["points"] for e in student.exercises(nbformat.read(path, as_version=4)))
        assert grade["possible"] == expected
        assert grade["earned"] == grade["possible"], (path.name, grade["exercises"])


def test_timings_are_output_metadata_never_text(executed):
    """Wall-clock seconds never enter any shown or compared output (stdout, stderr, results): only output metadata.

    On stderr they were red boxes in Jupyter and the HTML export; no notebook writes to stderr at all now.
    """
    from lab.course import timing

    for path in NOTEBOOKS:
        node = nbformat.read(executed[path.stem], as_version=4)
        for cell in node.cells:
            for output in cell.get("outputs", []):
                assert output.get("name") != "stderr", (path.name, output.get("text", "")[:200])
                text = output.get("text", "") or json.dumps(output.get("data", {}).get("text/plain", ""))
                assert "[timing]" not in text and " s, " not in text, (path.name, text[:200])
    recorded = timing.read(executed["05_fine_pruning"])
    assert recorded["pruning"] >= 0 and set(recorded["seconds per defense"]) >= {"B (BadNet)"}


def test_html_exports_are_titled_by_their_notebook(executed):
    for path in NOTEBOOKS:
        html = executed[path.stem].with_suffix(".html").read_text(encoding="utf-8")
        title = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0].lstrip("# ").strip()
        assert f"<title>{title}</title>" in html, (path.name, title)


def test_bench_reads_every_defense_time_from_the_executed_07(executed):
    """make bench's per-defense seconds come from 07's recorded table: a row per registered defense 07 fits
    (those in its FROM_RESULTS come from the published results, with no seconds of this run)."""
    import lab.defenses
    from lab.course import bench

    seconds = bench.timing_table(executed["07_defenses_compared"])
    from_results = {"i-bau", "nad", "ft-sam", "fst"}
    assert set(lab.defenses.REGISTRY) - {"pruning", "fine-tuning", "fine-pruning", "goodnet", "confidence", "strip"} \
        - from_results <= set(seconds)
    assert not from_results & set(seconds)
    text = _outputs_text(executed["07_defenses_compared"])
    assert "repairs.csv: written by `python tools/measure_repairs.py" in text
    assert "not the BadNet loaded here" in text  # the tiny default is not the BadNet the results measured
    for name in from_results:
        assert f"- {name}: clean accuracy" in text or f"- {name}: not in the published table" in text
    assert all(value >= 0 for value in seconds.values()) and seconds["auto"] > 0
    printed = bench.format_lab({"steps": [("default build", 50.0), ("07_defenses_compared.ipynb", 120.0)],
                                "total": 170.0, "defenses": seconds})
    assert "seconds to build" in printed and "(budget 90 s: over by 30 s)" in printed
    assert "default build  " in printed and printed.count("budget 90 s:") == 1 and "within)" in printed


def test_notebooks_produce_figures_tables_and_files(executed):
    node = nbformat.read(executed["03_pruning"], as_version=4)
    images = [o for c in node.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "03_pruning shows no figure"
    assert "ok: difference (percentage points) = 0.00" in _outputs_text(executed["03_pruning"])
    assert (executed["build"] / "sweep.csv").exists() and list(executed["build"].glob("pruned_*.h5"))
    assert "ok: share of poisoned images labelled with the target" in _outputs_text(executed["00_data"])
    cells = nbformat.read(executed["02_activations"], as_version=4).cells
    map_figures = [o for c in cells if "plot_activation_maps" in c.source for o in c.get("outputs", [])
                   if "image/png" in o.get("data", {})]
    assert len(map_figures) >= 3, "no activation maps (one per layer of LAYERS)"
    assert "responds more to the poisoned face" in _outputs_text(executed["02_activations"])
    keract_figures = [o for c in cells if "keract.display_activations" in c.source for o in c.get("outputs", [])
                      if "image/png" in o.get("data", {})]
    assert keract_figures, "02 never shows Keract's own display_activations"
    assert "yet Keract draws both over the full colour map" in _outputs_text(executed["02_activations"])
    goodnet_text = _outputs_text(executed["04_goodnet"])
    assert "detection" in goodnet_text and list(executed["build"].glob("goodnet_*.keras"))
    assert "rebound" in _outputs_text(executed["03_pruning"])


def test_goodnet_stops_at_once_without_the_pruned_models(tiny_default, tmp_path):
    """04 after an unfinished 03: an error naming 03_pruning in the Setup cell, never a partial table."""
    from nbclient.exceptions import CellExecutionError

    path = REPO / "notebooks" / "04_goodnet.ipynb"
    parameters = {"LAB_ROOT": str(tiny_default), "PRUNED_DIR": str(tmp_path / "empty")}
    with pytest.raises(CellExecutionError) as error:
        notebooks.execute(path, tmp_path / path.name, parameters, timeout=300, cwd=tmp_path)
    assert "03_pruning" in str(error.value) and "pruned_2.h5" in str(error.value)
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    failed = [c for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert len(failed) == 1 and "require_outputs" in failed[0].source


def test_model_and_scale_from_the_environment(tiny_default, tmp_path):
    """BADNET_LAB_MODEL points every notebook at another model; a bad BADNET_LAB_SCALE names SCALE's variable."""
    from lab import paths
    from lab.io import models

    model = tiny_default / "models" / "bd_net.h5"
    environment = {"BADNET_LAB_MODEL": str(model), "BADNET_LAB_SCALE": "raw"}
    old = {key: os.environ.get(key) for key in environment}
    try:
        os.environ.update(environment)
        assert paths.model_file(None, tmp_path) == model and paths.input_scale(None) == "raw"
        assert paths.input_scale("unit") == "unit"  # the notebook's parameter wins
        os.environ["BADNET_LAB_SCALE"] = "pixels"
        with pytest.raises(ValueError, match="BADNET_LAB_SCALE"):
            paths.input_scale(None)
        with pytest.raises(ValueError, match="SCALE parameter"):
            paths.input_scale("pixels")
    finally:
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    unknown = tmp_path / "mystery.h5"
    unknown.write_bytes(model.read_bytes())
    with pytest.raises(ValueError, match="this notebook's SCALE parameter"):
        models.load_lab_model(str(unknown), None, tmp_path)


def test_rerun_gives_the_same_numbers(executed, tiny_default, tmp_path):
    """Graders re-execute and compare: the sweep table of a second run is identical."""
    build = tmp_path / "models"
    path = REPO / "notebooks" / "03_pruning.ipynb"
    notebooks.execute(path, tmp_path / path.name, _parameters_for(path, _small_parameters(tiny_default, build)),
                      timeout=600, cwd=tmp_path)
    assert (build / "sweep.csv").read_text() == (executed["build"] / "sweep.csv").read_text()


@pytest.mark.parametrize("where", ["root", "notebooks"])
def test_grader_command_from_root_and_from_notebooks(tiny_default, tmp_path, where):
    """``jupyter nbconvert --to notebook --execute`` with no parameters: LAB_ROOT=None -> $BADNET_LAB_ROOT."""
    cwd = REPO if where == "root" else REPO / "notebooks"
    target = "notebooks/00_data.ipynb" if where == "root" else "00_data.ipynb"
    env = {**os.environ, "BADNET_LAB_ROOT": str(tiny_default), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", target,
                             "--output-dir", str(tmp_path)], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok: share of poisoned images" in _outputs_text(tmp_path / "00_data.ipynb")


def test_instructor_notebook_a1_runs_end_to_end(tiny_default, tmp_path):
    path = REPO / "notebooks" / "A1_make_your_own_badnet.ipynb"
    node = nbformat.read(path, as_version=4)
    assert all(cell.outputs == [] for cell in node.cells if cell.cell_type == "code")
    parameters = {"LAB_ROOT": str(tiny_default), "OUT_DIR": str(tmp_path / "A1"), "EPOCHS": 4, "N_GRADE": 40,
                  "FORCE_WEAK": True}  # 4 tiny epochs: the floors are not the point here
    notebooks.execute(path, tmp_path / path.name, _parameters_for(path, parameters), timeout=600, cwd=tmp_path)
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[:1]
    assert list((tmp_path / "A1").rglob("*.h5"))


def test_runner_prints_no_kernel_transport_warning(tmp_path):
    """``python -m lab notebooks`` (what ``make lab`` runs): no "Kernel is running over TCP" per notebook."""
    node = nbformat.v4.new_notebook()
    node.cells = [nbformat.v4.new_code_cell("import lab, tensorflow\nprint('ran', tensorflow.__version__)")]
    nbformat.write(node, tmp_path / "99_tiny.ipynb")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPP_")}
    result = subprocess.run([sys.executable, "-m", "lab", "notebooks", str(tmp_path / "99_tiny.ipynb"), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_log_noise(result.stdout + result.stderr, "python -m lab notebooks")
    text = _outputs_text(tmp_path / "out" / "99_tiny.ipynb")
    assert "ran 2." in text
    assert_no_log_noise(text, "tiny notebook outputs")
