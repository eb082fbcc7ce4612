"""CSAW-HackML data files: read, check, write, and find them on disk.

File contract (exactly the course format, so real files drop in)::

    data   (n, 3, H, W)  uint8 or float, pixel values 0..255, channels first
    label  (n,)          integers; in poisoned files the attacker's target

In memory the lab uses :class:`Dataset` with ``x`` float32 ``(n, H, W, 3)``
in 0..255 (channels last, as Keras wants) and ``y`` int64 ``(n,)``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import numpy as np

from lab.errors import LabInputError, check_writable

IMAGE_SHAPE = (55, 47, 3)  # H, W, C of the course's YouTube Face crops

# Lab 3 layout, relative to a data directory.
LAB3_FILES = {
    "clean_valid": "cl/valid.h5",
    "clean_test": "cl/test.h5",
    "poisoned_valid": "bd/bd_valid.h5",
    "poisoned_test": "bd/bd_test.h5",
}
# CSAW-HackML 2020 challenge layout.
CHALLENGE_FILES = {
    "clean_valid": "clean_validation_data.h5",
    "clean_test": "clean_test_data.h5",
}
CHALLENGE_POISONED_SUFFIX = "_poisoned_data.h5"


@dataclasses.dataclass
class Dataset:
    """Images and labels of one course file.

    x: float32 (n, H, W, 3), 0..255. y: int64 (n,). path: where it came from.
    """

    x: np.ndarray
    y: np.ndarray
    path: str | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int | None) -> "Dataset":
        """The first ``n`` examples (all when ``n`` is None); files are shuffled at build time."""
        if n is None or n >= len(self):
            return self
        return Dataset(self.x[:n], self.y[:n], self.path)


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise LabInputError(path, "an HDF5 course data file", "no such file")
    if path.is_dir():
        raise LabInputError(path, "an HDF5 course data file", "a directory")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        with open(path, "rb") as handle:
            head = handle.read(8)
        if head.startswith(b"\x89HDF"):
            found = f"a truncated or damaged HDF5 file ({os.path.getsize(path)} bytes; {error.__class__.__name__})"
        else:
            found = f"not an HDF5 file (starts with {head[:8]!r})"
        raise LabInputError(path, "an HDF5 course data file", found) from None


def load_h5(path: str | os.PathLike, n: int | None = None) -> Dataset:
    """Read a course h5 file and check it against the contract.

    Returns a :class:`Dataset` (x float32 NHWC 0..255). ``n`` reads only the
    first ``n`` examples (for quick runs). Raises :class:`LabInputError` with
    one line naming the file for a missing key, wrong shape, channel order,
    0..1 pixel scale, non-integer or mismatched labels, or a damaged file.
    """
    path = Path(path)
    with _open_h5(path) as handle:
        for key in ("data", "label"):
            if key not in handle:
                raise LabInputError(path, "datasets 'data' and 'label'", f"keys {sorted(handle.keys())}")
        data_set, label_set = handle["data"], handle["label"]
        shape = tuple(data_set.shape)
        if len(shape) != 4:
            raise LabInputError(path, "'data' of shape (n, 3, H, W)", f"shape {shape}")
        if shape[1] != 3:
            if shape[3] == 3:
                raise LabInputError(path, "'data' channels first (n, 3, H, W) as in the course files",
                                    f"channels last {shape}; transpose with x.transpose(0, 3, 1, 2)")
            raise LabInputError(path, "'data' of shape (n, 3, H, W)", f"shape {shape}")
        if label_set.ndim != 1 or label_set.shape[0] != shape[0]:
            raise LabInputError(path, f"'label' of shape ({shape[0]},)", f"shape {tuple(label_set.shape)}")
        stop = shape[0] if n is None else min(n, shape[0])
        try:
            data = data_set[:stop]
            labels = label_set[:stop]
        except OSError as error:
            raise LabInputError(path, "readable datasets", f"a damaged file ({error})") from None
    if data.dtype.kind not in "uif":
        raise LabInputError(path, "numeric pixel data", f"dtype {data.dtype}")
    if labels.dtype.kind not in "uif":
        raise LabInputError(path, "integer labels", f"dtype {labels.dtype}")
    if labels.dtype.kind == "f" and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise LabInputError(path, "integer labels", "fractional values")
    if labels.size and labels.min() < 0:
        raise LabInputError(path, "labels >= 0", f"minimum label {labels.min()}")
    x = data.astype(np.float32).transpose(0, 2, 3, 1)
    if x.size:
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 255:
            raise LabInputError(path, "pixel values in 0..255", f"values in {low:g}..{high:g}")
        if data.dtype.kind == "f" and high <= 1.0:
            raise LabInputError(path, "pixel values in 0..255 (the course scale)",
                                f"values in {low:g}..{high:g}, i.e. already scaled to 0..1; multiply by 255")
    return Dataset(np.ascontiguousarray(x), labels.astype(np.int64), os.fspath(path))


def check_labels(dataset: Dataset, n_classes: int, model_path: str | None = None) -> None:
    """Raise if a label lies outside the model's ``n_classes`` classes."""
    if len(dataset) and dataset.y.max() >= n_classes:
        model = f" of {model_path}" if model_path else ""
        raise LabInputError(dataset.path, f"labels in 0..{n_classes - 1} (the {n_classes} classes of the model{model})",
                            f"label {int(dataset.y.max())}")


def check_image_shape(dataset: Dataset, input_shape: tuple, model_path: str | None = None) -> None:
    """Raise if the images do not have the model's input shape (H, W, C)."""
    found = tuple(dataset.x.shape[1:])
    expected = tuple(int(d) for d in input_shape)
    if found != expected:
        model = f" {model_path}" if model_path else " the model"
        raise LabInputError(dataset.path, f"images of shape {expected} (H, W, C) as{model} takes", f"{found}")


def save_h5(path: str | os.PathLike, images_nchw: np.ndarray, labels: np.ndarray, force: bool = False) -> Path:
    """Write a course h5 file: ``data`` uint8 (n, 3, H, W), ``label`` int (n,).

    Byte-identical for identical inputs (no timestamps: HDF5 object times are
    switched off). Refuses to overwrite an existing file unless ``force``.
    """
    path = Path(path)
    images_nchw = np.asarray(images_nchw)
    if images_nchw.ndim != 4 or images_nchw.shape[1] != 3:
        raise ValueError(f"images must be (n, 3, H, W), got {images_nchw.shape}")
    if images_nchw.dtype != np.uint8:
        raise ValueError(f"images must be uint8 0..255, got {images_nchw.dtype}")
    check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", track_order=False) as handle:
        handle.create_dataset("data", data=images_nchw, track_times=False)
        handle.create_dataset("label", data=np.asarray(labels, dtype=np.int64), track_times=False)
    return path


@dataclasses.dataclass
class Layout:
    """Paths of one data directory's files; ``poisoned_*`` map trigger name -> path."""

    root: Path
    kind: str
    clean_valid: Path
    clean_test: Path
    poisoned_valid: dict[str, Path]
    poisoned_test: dict[str, Path]

    def poisoned(self, split: str = "valid", name: str | None = None) -> tuple[Path, str]:
        """The poisoned file of ``split`` (trigger ``name``, default the first), and a note on what it is.

        The 2020 layout has no poisoned validation data, so ``split="valid"``
        falls back to the poisoned test file and the note says so: it may
        report results, never choose anything.
        """
        files = self.poisoned_valid if split == "valid" else self.poisoned_test
        note = f"poisoned {split} data"
        if not files and split == "valid" and self.poisoned_test:
            files, note = self.poisoned_test, "poisoned TEST data (this layout has no poisoned validation file; used for reporting only)"
        if not files:
            raise LabInputError(self.root, f"a poisoned {split} file", "none")
        key = name if name is not None else next(iter(files))
        if key not in files:
            raise LabInputError(self.root, f"a poisoned {split} file for trigger {key!r}", f"triggers {sorted(files)}")
        return files[key], note


def find_layout(data_dir: str | os.PathLike) -> Layout:
    """Recognise the Lab 3 or the 2020 challenge layout under ``data_dir``.

    Lab 3: ``cl/valid.h5``, ``cl/test.h5``, ``bd/bd_valid.h5``, ``bd/bd_test.h5``.
    2020:  ``clean_validation_data.h5``, ``clean_test_data.h5``,
    ``<name>_poisoned_data.h5`` (searched recursively; poisoned data of the
    challenge is test data, so it appears under ``poisoned_test``).
    """
    root = Path(data_dir)
    lab3 = {key: root / rel for key, rel in LAB3_FILES.items()}
    if lab3["clean_valid"].exists():
        extra = {}
        for path in sorted((root / "bd").glob("bd_valid_*.h5")):
            extra[path.stem.removeprefix("bd_valid_")] = path
        valid = {"default": lab3["poisoned_valid"]} if lab3["poisoned_valid"].exists() else {}
        test = {"default": lab3["poisoned_test"]} if lab3["poisoned_test"].exists() else {}
        valid.update(extra)
        test.update({name: root / "bd" / f"bd_test_{name}.h5" for name in extra
                     if (root / "bd" / f"bd_test_{name}.h5").exists()})
        return Layout(root, "lab3", lab3["clean_valid"], lab3["clean_test"], valid, test)
    challenge = {key: root / rel for key, rel in CHALLENGE_FILES.items()}
    if challenge["clean_valid"].exists():
        poisoned = {path.name.removesuffix(CHALLENGE_POISONED_SUFFIX): path
                    for path in sorted(root.rglob("*" + CHALLENGE_POISONED_SUFFIX))}
        return Layout(root, "challenge", challenge["clean_valid"], challenge["clean_test"], {}, poisoned)
    raise LabInputError(root, f"a data directory with {LAB3_FILES['clean_valid']} (Lab 3 layout) or "
                        f"{CHALLENGE_FILES['clean_valid']} (2020 layout)", "neither")
