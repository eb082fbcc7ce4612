"""Crafted bad inputs (issue 11): each is refused in one line naming the file or argument, exit 2, nothing written.

Every case runs the real command line (``lab.cli.main`` in this process, a
few also in a fresh ``python -m lab`` process) on real h5, model and image
files, and checks: status 2, nothing on stdout, exactly one ``error: ...``
line on stderr that names the file or argument and what was found, and no
file added or changed anywhere under the test's folders.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_cli

from lab import cli
from lab.io import data, models

N_CLASSES = 5


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """An untrained 5-class DeepID saved by the lab (scale unit) and a valid clean file of 20 images."""
    import keras

    root = tmp_path_factory.mktemp("bad_inputs")
    keras.utils.set_random_seed(5)
    models.save_model(models.build_deepid(N_CLASSES, input_scale="unit"), root / "net.h5", "unit", "untrained test net")
    rng = np.random.default_rng(0)
    data.save_h5(root / "valid.h5", rng.integers(0, 256, (20, 3, 55, 47), dtype=np.uint8),
                 rng.integers(0, N_CLASSES, 20))
    (root / "a_file").write_text("a file where a folder is expected\n")
    return {"root": root, "model": root / "net.h5", "valid": root / "valid.h5", "file": root / "a_file"}


def _tree(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folders``, files with size and mtime: equal before and after means nothing was written.

    Folders count by name only: the writability probe of ``--out`` creates and
    removes a temporary file, which changes its folder's mtime and nothing else.
    """
    found = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            stat = path.stat()
            found[str(path)] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else "folder"
    return found


def refused(capsys, files, tmp_path, args, *expected: str) -> str:
    """Run ``python -m lab ARGS`` in-process; assert the one-line refusal; return the line."""
    before = _tree(files["root"], tmp_path)
    status = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    assert status == 2, (args, captured.err)
    assert captured.out == "", (args, captured.out)
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    for text in expected:
        assert text in err, (args, text, err)
    assert _tree(files["root"], tmp_path) == before, f"{args} wrote files"
    return err.strip()


def _h5(path: Path, **items) -> Path:
    """Write an h5 file with ``items`` as datasets (a value of None makes a group)."""
    with h5py.File(path, "w") as handle:
        for key, value in items.items():
            if value is None:
                handle.create_group(key)
            else:
                handle.create_dataset(key, data=value)
    return path


def _images(n: int = 4, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 3, 55, 47)).astype(dtype)


def _model_copy(files, tmp_path, sidecar: bytes | str) -> Path:
    """A copy of the test model with ``sidecar`` as its ``.lab.json``."""
    path = tmp_path / "net.h5"
    shutil.copyfile(files["model"], path)
    meta = Path(f"{path}.lab.json")
    meta.write_bytes(sidecar if isinstance(sidecar, bytes) else sidecar.encode())
    return path


# ------------------------------------------------------------------ silent wrong answers before


@pytest.mark.parametrize("value, found", [(np.nan, "values NaN"), (np.inf, "values inf"), (-np.inf, "values inf")])
def test_nan_and_inf_pixels(capsys, files, tmp_path, value, found):
    pixels = _images(dtype=np.float32)
    pixels[1, 2, 3, 4] = value
    path = _h5(tmp_path / "poisoned.h5", data=pixels, label=np.zeros(4, np.int64))
    refused(capsys, files, tmp_path, ["evaluate", "--model", files["model"], "--clean", files["valid"],
                                      "--poisoned", path], f"{path}: expected finite pixel values in 0..255",
            f"found 1 of {pixels.size} {found}")


def test_an_all_nan_poisoned_file_is_refused_not_scored(capsys, files, tmp_path):
    pixels = np.full((4, 3, 55, 47), np.nan, np.float32)
    path = _h5(tmp_path / "bd_valid.h5", data=pixels, label=np.zeros(4))
    refused(capsys, files, tmp_path, ["evaluate", "--model", files["model"], "--clean", files["valid"],
                                      "--poisoned", path, "--json"], f"{path}: expected finite pixel values",
            f"found {pixels.size} of {pixels.size} values NaN")


@pytest.mark.parametrize("command", ["evaluate", "prune"])
def test_zero_images(capsys, files, tmp_path, command):
    path = _h5(tmp_path / "empty.h5", data=np.zeros((0, 3, 55, 47), np.uint8), label=np.zeros(0, np.int64))
    args = (["evaluate", "--model", files["model"], "--clean", path, "--json"] if command == "evaluate" else
            ["prune", "--model", files["model"], "--valid", path, "--out", tmp_path / "out"])
    refused(capsys, files, tmp_path, args, f"{path}: expected at least 1 image in 'data', found 0 images")


def test_json_output_is_strict_json(capsys, files):
    """No NaN in any JSON the lab prints or writes: a rate that does not exist is null."""
    from lab.io.manifest import dumps

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))

    assert strict(dumps({"a": float("nan"), "b": [np.float32("inf"), np.float64(2.5)], "c": (1, None)})) == \
        {"a": None, "b": [None, 2.5], "c": [1, None]}
    assert cli.main(["evaluate", "--model", str(files["model"]), "--clean", str(files["valid"]), "--json"]) == 0
    result = strict(capsys.readouterr().out)
    assert result["attack_success_rate"] is None and 0 <= result["clean_accuracy"] <= 100


@pytest.mark.parametrize("labels, found", [
    (np.array([0, 1, 2, 2**64 - 1], np.uint64), "maximum label 18446744073709551615"),
    (np.array([0, 1, 2, 1e30]), "maximum label 1e+30"),
    (np.array([0, 1, 2, 2.5]), "fractional values such as 2.5"),
    (np.array([0, 1, np.nan, 2]), "1 NaN or infinite labels"),
    (np.array([0, 1, -np.inf, 2]), "1 NaN or infinite labels"),
    (np.array([0, 1, -3.0, 2]), "minimum label -3"),
])
def test_labels_that_would_wrap_or_round(capsys, files, tmp_path, labels, found):
    path = _h5(tmp_path / "valid.h5", data=_images(), label=labels)
    refused(capsys, files, tmp_path, ["evaluate", "--model", files["model"], "--clean", path], f"{path}: expected",
            found)


def test_a_sidecar_scale_that_is_not_raw_or_unit(capsys, files, tmp_path):
    model = _model_copy(files, tmp_path, '{"input_scale": "foo"}')
    refused(capsys, files, tmp_path, ["evaluate", "--model", model, "--clean", files["valid"]],
            f"{model}.lab.json: expected 'input_scale' one of ['raw', 'unit'], found str 'foo'")


def test_a_sixteen_bit_greyscale_png_is_scaled_not_saturated(capsys, files, tmp_path):
    from PIL import Image

    from lab.io import images as classify

    grey = np.random.default_rng(2).integers(0, 256, (55, 47), dtype=np.uint8)
    eight, sixteen = tmp_path / "grey8.png", tmp_path / "grey16.png"
    Image.fromarray(grey).save(eight)
    Image.fromarray(grey.astype(np.uint16) * 257).save(sixteen)  # the same picture in 16 bits
    assert Image.open(sixteen).mode == "I;16"
    np.testing.assert_array_equal(classify.load_image(sixteen), classify.load_image(eight))
    assert cli.main(["classify", "--model", str(files["model"]), str(eight), str(sixteen)]) == 0
    labels = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert len(labels) == 2 and labels[0] == labels[1]


@pytest.mark.parametrize("args, expected", [
    (["make-challenge", "--out", "{tmp}/c", "--epochs", "0"], "argument --epochs: expected a positive integer, found '0'"),
    (["make-challenge", "--out", "{tmp}/c", "--epochs", "-1"], "argument --epochs: expected a positive integer, found '-1'"),
    (["make-badnet", "--data", "{tmp}", "--trigger", "sunglasses", "--out", "{tmp}/b", "--epochs", "0"],
     "argument --epochs: expected a positive integer, found '0'"),
    (["grade", "--grader", "{tmp}", "--submission", "a=b.py", "--timeout", "0"],
     "argument --timeout: expected a number > 0, found '0'"),
    (["grade", "--grader", "{tmp}", "--submission", "a=b.py", "--timeout", "-1"],
     "argument --timeout: expected a number > 0, found '-1'"),
    (["grade", "--grader", "{tmp}", "--submission", "a=b.py", "--timeout", "nan"],
     "argument --timeout: expected a number > 0, found 'nan'"),
    (["make-default", "--out", "{tmp}/d", "--identities", "1"], "argument --identities: expected an integer >= 2"),
    (["make-challenge", "--out", "{tmp}/c", "--identities", "2"], "argument --identities: expected an integer >= 3"),
    (["make-default", "--out", "{tmp}/d", "--seed", "-1"], "argument --seed: expected a seed in 0..2147483647"),
    (["prune", "--model", "m.h5", "--valid", "v.h5", "--out", "{tmp}/o", "--thresholds", "150"],
     "argument --thresholds: expected a number strictly between 0 and 100 (percentage points), found '150'"),
    (["prune", "--model", "m.h5", "--valid", "v.h5", "--out", "{tmp}/o", "--thresholds", "0"],
     "argument --thresholds: expected a number strictly between 0 and 100"),
    (["fine-prune", "--model", "m.h5", "--valid", "v.h5", "--out", "{tmp}/o.h5", "--epochs", "-1"],
     "argument --epochs: expected an integer >= 0, found '-1'"),
    (["fine-prune", "--model", "m.h5", "--valid", "v.h5", "--out", "{tmp}/o.h5", "--holdout-fraction", "1"],
     "argument --holdout-fraction: expected a fraction: a number > 0 and < 1, found '1'"),
    (["detect", "--method", "strip", "--badnet", "m.h5", "--valid", "v.h5", "--alpha", "1.5"],
     "argument --alpha: expected a fraction: a number > 0 and < 1, found '1.5'"),
    (["detect", "--method", "strip", "--badnet", "m.h5", "--valid", "v.h5", "--budget", "-2"],
     "argument --budget: expected a percentage: a number >= 0 and < 100, found '-2'"),
    (["detect", "--method", "strip", "--badnet", "m.h5", "--valid", "v.h5", "--budget", "nan"],
     "argument --budget: expected a percentage: a number >= 0 and < 100, found 'nan'"),
])
def test_arguments_out_of_range(capsys, files, tmp_path, args, expected):
    line = refused(capsys, files, tmp_path, [a.format(tmp=tmp_path) for a in args], expected)
    assert line.endswith("--help)")


def test_library_refuses_zero_epochs_and_one_identity(tmp_path):
    """The same checks hold for notebooks, which call the library without argparse."""
    from lab import attacks
    from lab.course import challenge
    from lab.synthetic import default
    from lab.errors import LabInputError
    from lab.attacks.training import TrainingConfig

    with pytest.raises(LabInputError, match="--epochs: expected a positive number of clean epochs, found 0"):
        attacks.make_badnet(tmp_path, attacks.Attack((attacks.TriggerSpec("sunglasses"),)), tmp_path / "b",
                            config=TrainingConfig(clean_epochs=0))
    with pytest.raises(LabInputError, match="--epochs: expected a positive number of clean epochs, found -1"):
        challenge.make_challenge(tmp_path / "c", config=challenge.ChallengeConfig(epochs=-1))
    with pytest.raises(LabInputError, match="--identities: expected at least 2 identities"):
        default.make_default(tmp_path / "d", n_identities=1)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ tracebacks before


def test_duplicate_thresholds(capsys, files, tmp_path):
    refused(capsys, files, tmp_path, ["prune", "--model", files["model"], "--valid", files["valid"], "--out",
                                      tmp_path / "out", "--thresholds", "2", "2.0", "2"],
            "--thresholds: expected each threshold once", "found 2 given 3 times")


def test_a_threshold_above_the_starting_accuracy_is_refused_before_the_sweep(capsys, files, tmp_path):
    model = models.load_model(files["model"])
    valid = data.load_h5(files["valid"])
    start = 100 * float(np.mean(model.predict_labels(valid.x) == valid.y))
    assert start < 90  # an untrained 5-class net
    refused(capsys, files, tmp_path, ["prune", "--model", files["model"], "--valid", files["valid"], "--out",
                                      tmp_path / "out", "--thresholds", "2", "90"],
            f"--thresholds: expected accuracy drops of at most {start:.2f} percentage points", "found 90")


def _out_commands(files, out: Path) -> dict[str, list]:
    return {
        "prune": ["prune", "--model", files["model"], "--valid", files["valid"], "--out", out],
        "goodnet": ["goodnet", "--badnet", files["model"], "--pruned", files["model"], "--out", out / "g.keras"],
        "make-challenge": ["make-challenge", "--out", out, "--epochs", "1"],
        "make-default": ["make-default", "--out", out],
        "make-badnet": ["make-badnet", "--data", files["root"], "--trigger", "sunglasses", "--out", out],
    }


@pytest.mark.parametrize("command", ["prune", "goodnet", "make-challenge", "make-default", "make-badnet"])
def test_out_under_a_file(capsys, files, tmp_path, command):
    out = files["file"] / "results"
    args = _out_commands(files, out)[command]
    refused(capsys, files, tmp_path, args, "expected --out a", "that can be written",
            f"found {files['file']} is a file, not a directory")


def test_out_that_is_a_file(capsys, files, tmp_path):
    refused(capsys, files, tmp_path, _out_commands(files, files["file"])["prune"],
            f"{files['file']}: expected --out a directory, found a file")
    folder = tmp_path / "goodnet.keras"
    folder.mkdir()
    refused(capsys, files, tmp_path, ["goodnet", "--badnet", files["model"], "--pruned", files["model"], "--out",
                                      folder], f"{folder}: expected --out a file, found a directory")


@pytest.mark.parametrize("command", ["prune", "make-default"])
def test_out_in_an_unwritable_folder(capsys, files, tmp_path, command):
    # root may write in any mode-0500 folder, so use a kernel folder nobody may create files in.
    try:
        with tempfile.NamedTemporaryFile(dir="/sys"):
            pytest.skip("/sys accepts new files here: no unwritable folder to test with")
    except OSError:
        pass
    out = Path("/sys/lab-test-out")
    refused(capsys, files, tmp_path, _out_commands(files, out)[command], f"{out}: expected --out a directory "
            "that can be written, found /sys is not writable")


def test_model_path_that_is_a_directory(capsys, files, tmp_path):
    folder = tmp_path / "bd_net.h5"
    folder.mkdir()
    refused(capsys, files, tmp_path, ["evaluate", "--model", folder, "--clean", files["valid"]],
            f"{folder}: expected a Keras model (.h5/.keras) or DeepID weights file, found a directory")


@pytest.mark.parametrize("group", ["data", "label"])
def test_an_hdf5_group_where_a_dataset_belongs(capsys, files, tmp_path, group):
    items = {"data": _images(), "label": np.zeros(4, np.int64)}
    items[group] = None
    path = _h5(tmp_path / "valid.h5", **items)
    refused(capsys, files, tmp_path, ["evaluate", "--model", files["model"], "--clean", path],
            f"{path}: expected '{group}' to be an HDF5 dataset, found an HDF5 group")


@pytest.mark.parametrize("sidecar, found", [
    ('{"input_scale": "raw",', "found invalid JSON (Expecting property name enclosed in double quotes"),
    ('["raw"]', "expected a JSON object (the lab's model metadata), found a JSON array"),
    ('"raw"', "found a JSON string"),
    ('{"input_scale": 1}', "expected 'input_scale' one of ['raw', 'unit'], found int 1"),
    ('{"input_scale": 0.00392156862745098}', "found float 0.00392156862745098"),
    ('{"input_scale": "unit", "sha256": 12345}', "expected 'sha256' 64 lowercase hex digits, found int 12345"),
    ('{"input_scale": "unit", "n_classes": "5"}', "expected 'n_classes' an integer >= 1, found str '5'"),
    ('{"input_scale": "unit", "backdoor_class": true}', "expected 'backdoor_class' an integer >= 1 or null"),
    (b'{"input_scale": "unit", "description": "\xff"}', "in UTF-8, found byte 40 not UTF-8"),
    ("[" * 100000, "found JSON nested too deeply to read"),
])
def test_malformed_list_shaped_or_ill_typed_sidecars(capsys, files, tmp_path, sidecar, found):
    model = _model_copy(files, tmp_path, sidecar)
    refused(capsys, files, tmp_path, ["evaluate", "--model", model, "--clean", files["valid"]],
            f"{model}.lab.json: expected", found)


def test_a_recorded_backdoor_class_outside_the_model(capsys, files, tmp_path):
    model = _model_copy(files, tmp_path, '{"input_scale": "unit", "backdoor_class": 9}')
    refused(capsys, files, tmp_path, ["evaluate", "--model", model, "--clean", files["valid"]],
            f"{model}.lab.json: expected a backdoor class in 1..4 (the model has 5 outputs), found 9")


# ------------------------------------------------------------------ hints


@pytest.mark.parametrize("stored, hint", [
    ((0, 3, 2, 1), "channels last, shape (4, 47, 55, 3); x.transpose(0, 3, 2, 1) gives (4, 3, 55, 47)"),
    ((0, 2, 3, 1), "channels last, shape (4, 55, 47, 3); x.transpose(0, 3, 1, 2) gives (4, 3, 55, 47)"),
    ((0, 2, 1, 3), "channels in axis 2, shape (4, 55, 3, 47); x.transpose(0, 2, 1, 3) gives (4, 3, 55, 47)"),
    ((0, 3, 1, 2), "channels in axis 2, shape (4, 47, 3, 55); x.transpose(0, 2, 3, 1) gives (4, 3, 55, 47)"),
    ((0, 1, 3, 2), "height and width swapped; x.transpose(0, 1, 3, 2) gives (4, 3, 55, 47)"),
])
def test_the_transpose_hint_is_the_one_that_fixes_the_file(capsys, files, tmp_path, stored, hint):
    """``stored`` = how the course array (n, 3, 55, 47) was permuted; applying the hint must give it back."""
    images = _images()
    wrong = images.transpose(*stored)
    path = _h5(tmp_path / "valid.h5", data=wrong, label=np.zeros(4, np.int64))
    line = refused(capsys, files, tmp_path, ["evaluate", "--model", files["model"], "--clean", path], hint)
    order = tuple(int(axis) for axis in line.split("x.transpose(")[1].split(")")[0].split(", "))
    np.testing.assert_array_equal(wrong.transpose(*order), images)


def test_the_hint_for_other_image_sizes_keeps_height_before_width(tmp_path):
    path = _h5(tmp_path / "small.h5", data=np.zeros((2, 40, 30, 3), np.uint8), label=np.zeros(2))
    with pytest.raises(data.LabInputError, match=r"x\.transpose\(0, 3, 1, 2\) gives \(2, 3, 40, 30\)"):
        data.load_h5(path)


# ------------------------------------------------------------------ in a fresh process, as a user runs it


@pytest.mark.parametrize("case", ["nan", "epochs", "out"])
def test_a_fresh_process_prints_one_line_and_no_traceback(files, tmp_path, case):
    pixels = _images(dtype=np.float32)
    pixels[0, 0, 0, 0] = np.nan
    nan_file = _h5(tmp_path / "nan.h5", data=pixels, label=np.zeros(4))
    args = {"nan": ["evaluate", "--model", files["model"], "--clean", nan_file, "--json"],
            "epochs": ["make-badnet", "--data", files["root"], "--trigger", "sunglasses", "--out", tmp_path / "b",
                       "--epochs", "0"],
            "out": ["prune", "--model", files["model"], "--valid", files["valid"], "--out", files["file"] / "o"]}[case]
    before = _tree(files["root"], tmp_path)
    result = run_cli(*[str(a) for a in args])
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1], result.stderr
    assert _tree(files["root"], tmp_path) == before


def test_targets_out_of_range_or_with_another_detector(capsys, files, tmp_path):
    n = models.load_model(files["model"]).n_classes
    refused(capsys, files, tmp_path, ["goodnet", "--badnet", files["model"], "--pruned", files["model"], "--out",
                                      tmp_path / "g.keras", "--targets", "1", str(n)],
            f"--targets: expected suspected target classes in 0..{n - 1}, found [{n}]")
    assert not (tmp_path / "g.keras").exists()
    refused(capsys, files, tmp_path, ["detect", "--method", "strip", "--badnet", files["model"], "--valid",
                                      files["valid"], "--targets", "0"],
            "expected --targets only with --method goodnet, found --method strip")
