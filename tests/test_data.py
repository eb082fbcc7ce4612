"""Course h5 files: round trip, layouts, and one-line errors for every kind of bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lab.io import data
from lab.errors import LabInputError, RefuseOverwrite


def _images(n=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 55, 47), dtype=np.uint8)


def _write(path, **datasets):
    with h5py.File(path, "w") as handle:
        for key, value in datasets.items():
            handle.create_dataset(key, data=value)
    return path


def test_round_trip_gives_nhwc_float_in_0_255(tmp_path):
    images = _images()
    path = data.save_h5(tmp_path / "cl" / "valid.h5", images, np.arange(5))
    loaded = data.load_h5(path)
    assert loaded.x.dtype == np.float32 and loaded.x.shape == (5, 55, 47, 3)
    np.testing.assert_array_equal(loaded.x, images.transpose(0, 2, 3, 1).astype(np.float32))
    np.testing.assert_array_equal(loaded.y, np.arange(5))
    assert len(data.load_h5(path, n=2)) == 2


def test_same_inputs_write_byte_identical_files(tmp_path):
    first = data.save_h5(tmp_path / "a.h5", _images(), np.arange(5))
    second = data.save_h5(tmp_path / "b.h5", _images(), np.arange(5))
    assert first.read_bytes() == second.read_bytes()


def test_refuses_to_overwrite_without_force(tmp_path):
    path = data.save_h5(tmp_path / "a.h5", _images(), np.arange(5))
    with pytest.raises(RefuseOverwrite, match="--force"):
        data.save_h5(path, _images(seed=1), np.arange(5))
    data.save_h5(path, _images(seed=1), np.arange(5), force=True)


@pytest.mark.parametrize("make, expected", [
    (lambda p: _write(p, data=_images()), "datasets 'data' and 'label'.*keys \\['data'\\]"),
    (lambda p: _write(p, data=_images().transpose(0, 2, 3, 1), label=np.arange(5)), "channels first.*channels last"),
    (lambda p: _write(p, data=_images().astype(np.float32) / 255, label=np.arange(5)), "0..255.*0..1"),
    (lambda p: _write(p, data=_images()[:, :, :, :10].reshape(5, 3, -1), label=np.arange(5)), "shape \\(n, 3, H, W\\)"),
    (lambda p: _write(p, data=_images(), label=np.arange(4)), "'label' of shape \\(5,\\)"),
    (lambda p: _write(p, data=_images(), label=np.array([0, 1, 2, 3, -1])), "labels >= 0"),
    (lambda p: _write(p, data=_images().astype(np.float32) * 2, label=np.arange(5)), "0..255.*found values in"),
    (lambda p: p.write_text("not hdf5"), "not an HDF5 file"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(LabInputError, match=expected) as info:
        data.load_h5(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))


def test_truncated_file_is_reported_as_damaged(tmp_path):
    path = data.save_h5(tmp_path / "valid.h5", _images(50), np.arange(50))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(LabInputError, match="truncated or damaged|damaged file"):
        data.load_h5(path)


def test_missing_file(tmp_path):
    with pytest.raises(LabInputError, match="no such file"):
        data.load_h5(tmp_path / "nope.h5")


def test_labels_out_of_the_models_range(tmp_path):
    loaded = data.load_h5(data.save_h5(tmp_path / "a.h5", _images(), np.array([0, 1, 2, 3, 12])))
    with pytest.raises(LabInputError, match="labels in 0..9.*found label 12"):
        data.check_labels(loaded, 10, "bd_net.h5")


def test_both_course_layouts_are_found(tmp_path):
    lab3 = tmp_path / "lab3"
    for rel in data.LAB3_FILES.values():
        data.save_h5(lab3 / rel, _images(), np.arange(5))
    layout = data.find_layout(lab3)
    assert layout.kind == "lab3" and layout.poisoned_test == {"default": lab3 / "bd" / "bd_test.h5"}

    challenge = tmp_path / "2020"
    for name in ("clean_validation_data.h5", "clean_test_data.h5", "sunglasses_poisoned_data.h5",
                 "Multi-trigger Multi-target/eyebrows_poisoned_data.h5"):
        data.save_h5(challenge / name, _images(), np.arange(5))
    layout = data.find_layout(challenge)
    assert layout.kind == "challenge"
    assert sorted(layout.poisoned_test) == ["eyebrows", "sunglasses"]

    with pytest.raises(LabInputError, match="Lab 3 layout"):
        data.find_layout(tmp_path / "empty")
