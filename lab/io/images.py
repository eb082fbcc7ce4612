"""Image file in, class out: the course's submission contract.

Each image is a PNG or JPEG face crop of 55x47 pixels (47 wide, 55 high),
RGB. Other modes are converted to RGB 0..255 exactly as follows (see
:data:`MODES`): greyscale (8-bit ``L``, 1-bit ``1``) is copied to the three
channels; a palette (``P``) is looked up; the alpha channel of ``LA``,
``RGBA`` and palettes with transparency is dropped (not blended: the course's
crops have none, and blending would invent a background); JPEG ``CMYK`` is
converted by Pillow. 16-bit greyscale PNGs (``I;16``, ``I``) are scaled to
0..255 as value / 257, so 65535 is 255 and an 8-bit image saved as 16 bits
gives its own pixels back (converting them the plain way would clip every
value above 255 to white). Pillow reads 16-bit RGB(A) PNGs as 8 bits (the
high byte). Any other mode, an animation, or any other size is refused with
a one-line error rather than converted or resized, because that would
silently change what the model sees. The answer is one class
in [0, N] per image, where N (for a GoodNet) means "backdoored input".
The model's own input scale is applied (``LoadedModel.preprocess``).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from lab.constants import BATCH_SIZE
from lab.io.data import IMAGE_SHAPE
from lab.errors import LabInputError

FORMATS = ("PNG", "JPEG")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # how Pillow opens 16-bit greyscale PNGs
MODES = ("RGB", "L", "1", "LA", "RGBA", "P", "CMYK") + SIXTEEN_BIT_MODES


def _to_rgb(image, path, expected: str) -> np.ndarray:
    """float32 (H, W, 3) 0..255 from a Pillow image of one of :data:`MODES` (see the module docstring)."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(image, dtype=np.float64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise LabInputError(path, expected + " (16-bit greyscale: values 0..65535)",
                                f"mode {mode} values in {grey.min():g}..{grey.max():g}")
        return np.repeat((grey / 257.0).astype(np.float32)[..., None], 3, axis=2)
    if mode in ("LA", "RGBA"):
        image = image.convert(mode[:-1])  # drop alpha; the colour values stay as they are
    elif mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode not in MODES:
        raise LabInputError(path, expected + f" (modes {', '.join(MODES)})", f"a {image.format} image of mode {mode}")
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return pixels


def load_image(path: str | os.PathLike) -> np.ndarray:
    """One face image as float32 (55, 47, 3), pixels 0..255; one-line error for anything else.

    Modes are converted as the module docstring says; never resized.
    """
    from PIL import Image, UnidentifiedImageError

    height, width, _ = IMAGE_SHAPE
    expected = f"a PNG or JPEG image {width} pixels wide and {height} high (the course's 55x47 RGB crops)"
    if not os.path.exists(path):
        raise LabInputError(path, expected, "no such file")
    if os.path.isdir(path):
        raise LabInputError(path, expected, "a directory")
    try:
        with Image.open(path, formats=FORMATS) as image:
            size = image.size
            if size != (width, height):
                raise LabInputError(path, expected, f"{size[0]} wide and {size[1]} high")
            frames = getattr(image, "n_frames", 1)
            if frames != 1:
                raise LabInputError(path, expected + ", a single frame", f"an animation of {frames} frames")
            image.load()
            pixels = _to_rgb(image, path, expected)
    except LabInputError:
        raise
    except UnidentifiedImageError:
        raise LabInputError(path, expected, _not_an_image(path)) from None
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ... for damaged files
        message = " ".join(str(error).split())[:160]
        raise LabInputError(path, expected, f"a damaged image ({error.__class__.__name__}: {message})") from None
    return pixels


def _not_an_image(path) -> str:
    """What a file Pillow cannot open as PNG or JPEG is, in words."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return f"a {image.format} image"
    except Exception:
        return "a file that is not an image (neither PNG nor JPEG)"


def classify_files(model, paths: Sequence[str | os.PathLike], batch_size: int = BATCH_SIZE) -> list[int]:
    """The class (int in [0, model.n_classes - 1]) of each image file, in order.

    model: a ``LoadedModel``. All files are read (and checked) before any is classified.
    """
    images = np.stack([load_image(path) for path in paths]) if len(paths) else np.zeros((0, *IMAGE_SHAPE), np.float32)
    expected_shape = tuple(int(d) for d in model.model.input_shape[1:])
    if images.shape[1:] != expected_shape:
        raise LabInputError(model.path, f"a model taking {IMAGE_SHAPE} images", str(expected_shape))
    return [int(label) for label in model.predict_labels(images, batch_size)]


def save_image(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Write float or uint8 (55, 47, 3) pixels 0..255 as a PNG (lossless, so classifying it gives the same answer)."""
    from PIL import Image

    Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).save(path, format="PNG")
