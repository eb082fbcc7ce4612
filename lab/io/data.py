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


LABEL_MAX = np.iinfo(np.int64).max  # labels are held as int64


def transpose_hint(shape: tuple) -> str | None:
    """How to turn ``data`` of ``shape`` (4 axes, not channels first) into the course's (n, 3, H, W).

    The channel axis is the one of size 3; of the other two, the one of size
    55 becomes H and 47 becomes W (the course's crops); for other sizes their
    order is kept. Returns e.g. ``"x.transpose(0, 3, 2, 1) gives (n, 3, 55, 47)"``,
    or None when no axis has size 3.
    """
    shape = tuple(int(d) for d in shape)
    channel = next((axis for axis in (1, 2, 3) if shape[axis] == 3), None)
    if channel is None:
        return None
    rest = [axis for axis in (1, 2, 3) if axis != channel]
    height, width = IMAGE_SHAPE[:2]
    if sorted(shape[axis] for axis in rest) == sorted((height, width)) and shape[rest[0]] != height:
        rest.reverse()
    order = (0, channel, *rest)
    result = tuple(shape[axis] for axis in order)
    return f"x.transpose{order} gives {result}"


def _check_layout(path: Path, data_set, label_set) -> tuple:
    """The shape of ``data``, checked (datasets, 4 axes, channels first, H x W, label shape, dtypes)."""
    for key, item in (("data", data_set), ("label", label_set)):
        if not isinstance(item, h5py.Dataset):
            raise LabInputError(path, f"'{key}' to be an HDF5 dataset", f"an HDF5 {type(item).__name__.lower()}")
    shape = tuple(data_set.shape or ())
    if len(shape) != 4:
        raise LabInputError(path, "'data' of shape (n, 3, H, W)", f"shape {shape}")
    height, width = IMAGE_SHAPE[:2]
    if shape[1] != 3:
        hint = transpose_hint(shape)
        if hint:
            where = "last" if shape[3] == 3 else "in axis 2"
            raise LabInputError(path, "'data' channels first (n, 3, H, W) as in the course files",
                                f"channels {where}, shape {shape}; {hint}")
        raise LabInputError(path, "'data' of shape (n, 3, H, W)", f"shape {shape}")
    if shape[2:] == (width, height):
        raise LabInputError(path, f"'data' of shape (n, 3, {height}, {width}) (H = {height} rows, W = {width} columns)",
                            f"shape {shape}, height and width swapped; x.transpose(0, 1, 3, 2) gives "
                            f"{(shape[0], 3, height, width)}")
    if shape[0] == 0:
        raise LabInputError(path, "at least 1 image in 'data'", "0 images")
    if min(shape[2:]) == 0:
        raise LabInputError(path, "images at least 1 pixel high and wide", f"shape {shape}")
    if label_set.ndim != 1 or label_set.shape[0] != shape[0]:
        raise LabInputError(path, f"'label' of shape ({shape[0]},)", f"shape {tuple(label_set.shape or ())}")
    if data_set.dtype.kind not in "uif":
        raise LabInputError(path, "numeric pixel data (uint8, integers or floats)", f"dtype {data_set.dtype}")
    if label_set.dtype.kind not in "uif":
        raise LabInputError(path, "integer labels", f"dtype {label_set.dtype}")
    return shape


def _checked_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    """``labels`` as int64, refusing (before any cast could wrap them) what int64 cannot hold exactly."""
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels)
        if not finite.all():
            raise LabInputError(path, "integer labels", f"{int((~finite).sum())} NaN or infinite labels")
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            bad = labels[np.not_equal(np.mod(labels, 1), 0)][0]
            raise LabInputError(path, "integer labels", f"fractional values such as {float(bad)!r}")
    low, high = labels.min(), labels.max()
    if low < 0:
        raise LabInputError(path, "labels >= 0", f"minimum label {low:.17g}" if labels.dtype.kind == "f"
                            else f"minimum label {int(low)}")
    # Float labels above 2**63 (or uint64 above int64's range) would wrap to negative classes when cast.
    if (labels.dtype.kind == "f" and float(high) >= 2.0**63) or (labels.dtype.kind == "u" and int(high) > LABEL_MAX):
        shown = f"{float(high):.6g}" if labels.dtype.kind == "f" else str(int(high))
        raise LabInputError(path, f"labels in 0..{LABEL_MAX} (class numbers)", f"maximum label {shown}")
    return labels.astype(np.int64)


def _checked_pixels(path: Path, data: np.ndarray) -> np.ndarray:
    """``data`` (n, 3, H, W) as float32 NHWC, refusing NaN/inf and values outside 0..255 before the cast."""
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = data[~finite]
            kinds = ", ".join(name for name, hit in (("NaN", np.isnan(bad).any()), ("inf", np.isinf(bad).any())) if hit)
            raise LabInputError(path, "finite pixel values in 0..255",
                                f"{bad.size} of {data.size} values {kinds}")
    low, high = data.min(), data.max()
    if low < 0 or high > 255:
        raise LabInputError(path, "pixel values in 0..255", f"values in {float(low):g}..{float(high):g}")
    if data.dtype.kind == "f" and high <= 1.0:
        raise LabInputError(path, "pixel values in 0..255 (the course scale)",
                            f"values in {float(low):g}..{float(high):g}, i.e. already scaled to 0..1; multiply by 255")
    return np.ascontiguousarray(data.astype(np.float32).transpose(0, 2, 3, 1))


def load_h5(path: str | os.PathLike, n: int | None = None) -> Dataset:
    """Read a course h5 file and check it against the contract.

    Returns a :class:`Dataset` (x float32 NHWC 0..255). ``n`` (>= 1) reads
    only the first ``n`` examples (for quick runs). Raises
    :class:`LabInputError` with one line naming the file for a missing key,
    a group where a dataset belongs, no images, wrong shape or channel order
    (with the transpose that fixes it), non-numeric, NaN/inf or out-of-range
    pixels, 0..1 pixel scale, non-integer, negative or out-of-range labels,
    mismatched label count, or a damaged file. Everything is checked before
    any value is cast, so nothing wraps around silently.
    """
    path = Path(path)
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise LabInputError(None, "n, the number of examples to read, an integer >= 1", repr(n))
    with _open_h5(path) as handle:
        try:
            keys = sorted(handle.keys())
        except (OSError, RuntimeError, KeyError) as error:
            raise LabInputError(path, "a readable HDF5 file", f"a damaged file ({error})") from None
        for key in ("data", "label"):
            if key not in keys:
                raise LabInputError(path, "datasets 'data' and 'label'", f"keys {keys}")
        try:
            data_set, label_set = handle["data"], handle["label"]
            shape = _check_layout(path, data_set, label_set)
            stop = shape[0] if n is None else min(int(n), shape[0])
            data = data_set[:stop]
            labels = label_set[:stop]
        except LabInputError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as error:
            # h5py raises these for damaged files, external links and filters it cannot decode.
            message = " ".join(str(error).split())[:160]
            raise LabInputError(path, "readable datasets", f"a damaged file ({error.__class__.__name__}: {message})") from None
    labels = _checked_labels(path, np.asarray(labels))
    x = _checked_pixels(path, np.asarray(data))
    return Dataset(x, labels, os.fspath(path))


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
