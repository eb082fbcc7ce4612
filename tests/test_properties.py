"""Property-based tests (hypothesis) of the three loaders that read what users hand in.

For arbitrary files, each loader either returns a result that meets its
contract or raises the lab's one-line :class:`LabInputError` naming the
file; never another exception, never a silently changed value:

- ``lab.io.data.load_h5``: arbitrary shapes, dtypes (uint64, float16, bool,
  complex, strings, ...), values (NaN, inf, huge), missing keys, groups;
- the sidecar reader ``lab.io.models.read_metadata`` (and the input scale it
  feeds): arbitrary JSON values and shapes, arbitrary bytes;
- ``lab.io.images.load_image``: arbitrary Pillow modes, sizes, bit depths,
  truncated files.

Examples are few (the whole file runs in well under a minute) and drawn
deterministically (``derandomize=True``), so a failure reproduces.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lab.io import images as classify, data, models
from lab.errors import LabInputError

PROPERTY_SETTINGS = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_one_line_error(error: LabInputError, path: Path) -> None:
    message = str(error)
    assert "\n" not in message and message.startswith(str(path)) and ": expected " in message, message


# ------------------------------------------------------------------ h5 loader

DTYPES = [np.uint8, np.int8, np.int16, np.int64, np.uint16, np.uint64, np.float16, np.float32, np.float64,
          np.bool_, np.complex64, np.dtype("S4")]


@st.composite
def h5_items(draw):
    """What one h5 item is: absent, a group, a vlen-string dataset or a numeric array of any shape and dtype."""
    kind = draw(st.sampled_from(["array", "array", "array", "group", "strings", "absent"]))
    if kind in ("group", "absent"):
        return kind
    if kind == "strings":
        return np.array(draw(st.lists(st.text(max_size=4), min_size=0, max_size=3)), dtype=object)
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.one_of(
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=3),
        st.tuples(st.integers(0, 3), st.just(3), st.integers(1, 4), st.integers(1, 4)),  # course-like
        st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.just(3)),  # channels last
    ))
    elements = None
    if dtype.kind == "f" and draw(st.booleans()):
        elements = st.floats(0, 255, width=dtype.itemsize * 8)  # mostly valid pixels: reach the later checks
    elif dtype.kind in "ui" and draw(st.booleans()):
        elements = st.integers(0, min(255, int(np.iinfo(dtype).max)))
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _values(draw, dtype: np.dtype, low: int, high: int):
    """Elements of ``dtype``: half the time only low..high (valid), else anything the dtype holds (NaN, inf, huge)."""
    if draw(st.booleans()):
        return None  # hypothesis' full range for the dtype
    if dtype.kind == "f":
        return st.floats(low, high, width=dtype.itemsize * 8)
    if dtype.kind in "ui":
        return st.integers(max(low, int(np.iinfo(dtype).min)), min(high, int(np.iinfo(dtype).max)))
    return None


@st.composite
def course_like(draw):
    """data (n, 3, H, W) and label (n,) of numeric dtypes: the value checks (NaN, range, wrapping) are reached."""
    n, height, width = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pixel_dtype = np.dtype(draw(st.sampled_from([np.uint8, np.int16, np.uint64, np.float16, np.float32, np.float64])))
    label_dtype = np.dtype(draw(st.sampled_from([np.int64, np.uint64, np.uint8, np.int8, np.float16, np.float64])))
    pixels = draw(hnp.arrays(pixel_dtype, (n, 3, height, width), elements=_values(draw, pixel_dtype, 0, 255)))
    labels = draw(hnp.arrays(label_dtype, (n,), elements=_values(draw, label_dtype, 0, 20)))
    for array in (pixels, labels):  # one value of those that used to pass silently, where the dtype holds it
        special = draw(st.sampled_from([None, None, np.nan, np.inf, -np.inf, 1e30, 2**64 - 1, -1, 2.5, 300]))
        with np.errstate(all="ignore"):
            cast = np.array(special, dtype=np.float64).astype(array.dtype) if special is not None else None
        if cast is not None and float(cast) == special:
            array.flat[draw(st.integers(0, array.size - 1))] = cast
            event(f"planted {special!r}")
    return {"data": pixels, "label": labels}


@st.composite
def h5_files(draw):
    if draw(st.integers(0, 3)):  # 3 in 4: well-formed layout, values anywhere
        return draw(course_like())
    return {"data": draw(h5_items()), "label": draw(h5_items())}


def _write_h5(path: Path, items: dict) -> None:
    with h5py.File(path, "w") as handle:
        for key, value in items.items():
            if isinstance(value, str) and value == "group":
                handle.create_group(key)
            elif isinstance(value, np.ndarray) and value.dtype == object:
                handle.create_dataset(key, data=value, dtype=h5py.string_dtype())
            elif isinstance(value, np.ndarray):
                handle.create_dataset(key, data=value)


@PROPERTY_SETTINGS
@given(h5_files(), st.one_of(st.none(), st.integers(1, 3)))
def test_h5_loader_gives_a_valid_dataset_or_one_line(items, n):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file.h5"
        _write_h5(path, items)
        try:
            dataset = data.load_h5(path, n=n)
        except LabInputError as error:
            assert_one_line_error(error, path)
            event(f"refused: expected {error.expected[:40]}")
            return
    event("loaded")
    pixels, labels = items["data"], items["label"]
    stop = len(pixels) if n is None else min(n, len(pixels))
    assert dataset.x.dtype == np.float32 and dataset.x.ndim == 4 and dataset.x.shape[3] == 3
    assert len(dataset) == stop >= 1 and dataset.y.dtype == np.int64
    assert np.isfinite(dataset.x).all() and dataset.x.min() >= 0 and dataset.x.max() <= 255
    # Nothing changed silently: the pixels and labels are the file's, only transposed and widened.
    np.testing.assert_array_equal(dataset.x, pixels[:stop].astype(np.float32).transpose(0, 2, 3, 1))
    assert dataset.y.tolist() == [int(v) for v in labels[:stop].tolist()]


def test_h5_loader_on_arbitrary_bytes():
    @PROPERTY_SETTINGS
    @given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: b"\x89HDF\r\n\x1a\n" + b)))
    def check(blob):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "file.h5"
            path.write_bytes(blob)
            with pytest.raises(LabInputError) as info:
                data.load_h5(path)
            assert_one_line_error(info.value, path)

    check()


# ------------------------------------------------------------------ sidecar reader

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda children: st.lists(children, max_size=3) |
                           st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=8)
KNOWN_KEYS = st.sampled_from(["input_scale", "sha256", "n_classes", "backdoor_class", "description"])
SIDECAR_OBJECTS = st.dictionaries(KNOWN_KEYS | st.text(max_size=5), JSON_VALUES | st.sampled_from(
    ["raw", "unit", "Unit", "foo", "", "a" * 64, "0" * 64]), max_size=5)


@st.composite
def sidecar_bytes(draw):
    kind = draw(st.sampled_from(["object", "object", "any json", "bytes", "mangled"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    text = json.dumps(draw(SIDECAR_OBJECTS if kind != "any json" else JSON_VALUES))
    if kind == "mangled":  # valid JSON with a cut or an inserted byte
        cut = draw(st.integers(0, len(text)))
        return text[:cut].encode() + draw(st.binary(max_size=2))
    return text.encode()


@PROPERTY_SETTINGS
@given(sidecar_bytes())
def test_sidecar_reader_gives_checked_metadata_or_one_line(blob):
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "net.h5"
        sidecar = Path(f"{model}{models.META_SUFFIX}")
        sidecar.write_bytes(blob)
        try:
            metadata = models.read_metadata(model)
        except LabInputError as error:
            assert_one_line_error(error, sidecar)
            event(f"refused: expected {error.expected[:30]}")
            return
        event("read")
        assert isinstance(metadata, dict)
        assert metadata.get("input_scale", "raw") in models.SCALES
        digest = metadata.get("sha256", "0" * 64)
        assert isinstance(digest, str) and len(digest) == 64
        for key in ("n_classes", "backdoor_class"):
            value = metadata.get(key, 1)
            assert value is None or (type(value) is int and value >= 1)
        # The input scale it feeds is one of the two, or refused: never a typo taken as x/255.
        try:
            scale, source = models._resolve_scale(model, None, metadata, "0" * 64)
        except LabInputError as error:
            assert_one_line_error(error, model)
            return
        assert scale in models.SCALES and source


# ------------------------------------------------------------------ image loader

PNG_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]
JPEG_MODES = ["L", "RGB", "CMYK"]
CHANNELS = {"1": 1, "L": 1, "LA": 2, "P": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}


@st.composite
def image_files(draw):
    """(bytes of a PNG or JPEG, its mode, size, pixels) of any mode and size, sometimes truncated."""
    from PIL import Image

    file_format = draw(st.sampled_from(["PNG", "PNG", "JPEG"]))
    mode = draw(st.sampled_from(PNG_MODES if file_format == "PNG" else JPEG_MODES))
    width, height = draw(st.one_of(st.just((47, 55)), st.just((47, 55)),
                                   st.tuples(st.integers(1, 60), st.integers(1, 60))))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    options = {}
    if mode == "I;16":
        values = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        if draw(st.booleans()):
            values = values.astype(np.uint16) // 257 * 257  # an 8-bit picture stored in 16 bits
        image = Image.frombytes("I;16", (width, height), values.astype("<u2").tobytes())
    else:
        values = rng.integers(0, 256, (height, width, CHANNELS[mode]), dtype=np.uint8)
        if mode == "1":
            image = Image.frombytes("L", (width, height), values.tobytes()).convert("1")
        else:
            image = Image.frombytes(mode, (width, height), values.tobytes())
        if mode == "P":
            image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
            if draw(st.booleans()):
                options["transparency"] = int(rng.integers(0, 256))
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    blob = buffer.getvalue()
    truncated = draw(st.booleans()) and draw(st.booleans())
    if truncated:
        blob = blob[:draw(st.integers(0, len(blob) - 1))]
    return blob, file_format, mode, (width, height), values, truncated


@PROPERTY_SETTINGS
@given(image_files())
def test_image_loader_gives_course_pixels_or_one_line(case):
    blob, file_format, mode, size, values, truncated = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("face.png" if file_format == "PNG" else "face.jpg")
        path.write_bytes(blob)
        try:
            pixels = classify.load_image(path)
        except LabInputError as error:
            assert_one_line_error(error, path)
            event(f"refused: found {error.found[:25]}")
            # A whole image of a supported mode and the course size is never refused.
            assert truncated or size != (47, 55), str(error)
            return
    event(f"loaded {file_format} {mode}")
    assert size == (47, 55) and pixels.shape == (55, 47, 3) and pixels.dtype == np.float32
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255
    if mode == "I;16" and not truncated:  # 16 bits scaled, never clipped to white
        np.testing.assert_allclose(pixels[..., 0], values / 257.0, rtol=1e-6)
        np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])
    if mode in ("RGB", "RGBA") and file_format == "PNG" and not truncated:  # lossless: the colours as stored
        np.testing.assert_array_equal(pixels, values[..., :3].astype(np.float32))
