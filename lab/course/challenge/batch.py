"""Batches of test images that say nothing about where each image came from.

A submission sees its images as PNG files in a private folder. Everything it
could read from them besides the pixels is the same for a clean and a
poisoned face, or drawn fresh from the operating system's cryptographic
source for every batch:

- names: 16 random hex digits (``secrets.token_hex``), no index, no prefix;
- order: clean and poisoned interleaved by ``secrets.SystemRandom().shuffle``,
  new on every call (no seed a submission could recompute), and files are
  written in that order (inode numbers and directory order follow it);
- size: PNGs with stored (level 0) compression, so every 47x55 RGB file has
  the same number of bytes whatever its content; no ancillary chunks (no
  text, time, gamma or dpi); the same uint8 pixels for every image;
- times: every file's access and modification time set to the same instant.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np

from lab.io.data import IMAGE_SHAPE

FILE_TIME = 946684800  # 2000-01-01 00:00:00 UTC, every file's atime and mtime
NAME_BYTES = 8  # 16 hex digits: a collision among 10^5 images has odds about 3e-10


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pixels 0..255 (any dtype, NHWC) as uint8, rounded and clipped: what a PNG can hold."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float64)), 0, 255).astype(np.uint8)


def shuffled_order(n: int) -> np.ndarray:
    """A permutation of 0..n-1 from the OS's cryptographic random source (new each call).

    ``order[position]`` is the index of the image shown at ``position``.
    """
    order = list(range(n))
    secrets.SystemRandom().shuffle(order)
    return np.asarray(order, dtype=np.int64)


def random_names(n: int, suffix: str = ".png") -> list[str]:
    """``n`` distinct file names of random hex digits."""
    names: set[str] = set()
    while len(names) < n:
        names.add(secrets.token_hex(NAME_BYTES) + suffix)
    result = list(names)
    secrets.SystemRandom().shuffle(result)  # set order is hash order: drawn, but not from the same source
    return result


def encode_png(pixels: np.ndarray) -> bytes:
    """One uint8 (55, 47, 3) image as a PNG of fixed size: stored deflate, no metadata chunks."""
    import io

    from PIL import Image

    if pixels.shape != IMAGE_SHAPE or pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels of shape {IMAGE_SHAPE}, got {pixels.dtype} {pixels.shape}")
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=0, optimize=False)
    return buffer.getvalue()


def write_batch(images: np.ndarray, folder: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Write ``images`` (n, 55, 47, 3), pixels 0..255, into the empty ``folder`` as shuffled, randomly named PNGs.

    Returns ``(names, order)``: ``names[position]`` is the file shown at
    ``position``, holding ``images[order[position]]``. Answers a submission
    gives in ``names`` order go back to image order with
    ``answers_by_image[order] = answers``.
    """
    folder = Path(folder)
    pixels = to_uint8(images)
    order = shuffled_order(len(pixels))
    names = random_names(len(pixels))
    for name, index in zip(names, order):
        path = folder / name
        path.write_bytes(encode_png(pixels[index]))
        os.utime(path, (FILE_TIME, FILE_TIME))
    return names, order


def write_array(images: np.ndarray, folder: str | os.PathLike) -> tuple[str, np.ndarray]:
    """``images`` as one shuffled uint8 ``.npy`` under a random name (what a model submission's worker reads).

    Returns ``(name, order)`` as :func:`write_batch`.
    """
    pixels = to_uint8(images)
    order = shuffled_order(len(pixels))
    name = random_names(1, ".npy")[0]
    path = Path(folder) / name
    np.save(path, pixels[order], allow_pickle=False)
    os.utime(path, (FILE_TIME, FILE_TIME))
    return name, order
