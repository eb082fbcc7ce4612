"""Image file in, class out: the course's submission contract.

Each image is a PNG or JPEG face crop of 55x47 pixels (47 wide, 55 high),
RGB. Greyscale, palette and RGBA files are converted to RGB (alpha dropped);
any other size is refused with a one-line error rather than resized, because
resizing would silently change what the model sees. The answer is one class
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


def load_image(path: str | os.PathLike) -> np.ndarray:
    """One face image as float32 (55, 47, 3), pixels 0..255; one-line error for anything else."""
    from PIL import Image, UnidentifiedImageError

    height, width, _ = IMAGE_SHAPE
    expected = f"a PNG or JPEG image {width} pixels wide and {height} high (the course's 55x47 RGB crops)"
    if not os.path.exists(path):
        raise LabInputError(path, expected, "no such file")
    if os.path.isdir(path):
        raise LabInputError(path, expected, "a directory")
    try:
        with Image.open(path) as image:
            image_format, size = image.format, image.size
            if image_format not in FORMATS:
                raise LabInputError(path, expected, f"a {image_format} image")
            if size != (width, height):
                raise LabInputError(path, expected, f"{size[0]} wide and {size[1]} high")
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    except UnidentifiedImageError:
        raise LabInputError(path, expected, "a file that is not an image") from None
    except OSError as error:
        raise LabInputError(path, expected, f"a damaged image ({error})") from None
    return pixels


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
