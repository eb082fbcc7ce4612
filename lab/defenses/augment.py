"""Generic image augmentations for defenses that train on clean data (nothing here knows the trigger).

Random shifts, horizontal flips, brightness/contrast, Gaussian noise and
random erasing (Zhong et al. 2017). Random erasing matters for backdoors:
the default BadNet answers the target for many randomly occluded faces, so
correct labels on erased faces unlearn that shortcut.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What :func:`augment` does. Pixel quantities are in 0..255 units.

    max_shift: random shifts up to this many pixels (edge padding); flip:
    horizontal flips of half the images; brightness: relative brightness
    and contrast jitter; noise: Gaussian noise standard deviation;
    erase_probability: share of images given one random-erasing rectangle.
    """

    max_shift: int = 3
    flip: bool = True
    brightness: float = 0.2
    noise: float = 8.0
    erase_probability: float = 0.5


def random_erase(x: np.ndarray, rng: np.random.Generator, probability: float = 0.5,
                 area: tuple[float, float] = (0.02, 0.25)) -> np.ndarray:
    """Random erasing (Zhong et al. 2017): a copy of ``x`` with one noise-filled rectangle per chosen image.

    x: float32 (n, H, W, 3), 0..255. Each image is chosen with ``probability``;
    its rectangle covers ``area`` (a fraction of the image, drawn uniformly)
    with an aspect ratio between 0.3 and 3.3, anywhere in the image.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    n, height, width, channels = out.shape
    for index in np.flatnonzero(rng.random(n) < probability):
        size = rng.uniform(*area) * height * width
        ratio = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        h = int(min(height, max(1, round(np.sqrt(size * ratio)))))
        w = int(min(width, max(1, round(np.sqrt(size / ratio)))))
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        out[index, top:top + h, left:left + w] = rng.uniform(0, 255, (h, w, channels))
    return out


def augment(x: np.ndarray, rng: np.random.Generator, config=AugmentConfig()) -> np.ndarray:
    """One random variant of every image: shift, flip, brightness/contrast, noise, random erasing.

    x: float32 (n, H, W, 3), 0..255; returns the same shape, clipped to 0..255.
    config: anything with the fields of :class:`AugmentConfig` (e.g. a
    :class:`lab.defenses.finepruning.FineTuneConfig`).
    Nothing here knows the trigger: these are generic augmentations.
    """
    x = np.asarray(x, dtype=np.float32)
    n, height, width, _ = x.shape
    shift = config.max_shift
    if shift:
        padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
        rows, cols = rng.integers(0, 2 * shift + 1, n), rng.integers(0, 2 * shift + 1, n)
        out = np.stack([padded[i, r:r + height, c:c + width] for i, (r, c) in enumerate(zip(rows, cols))])
    else:
        out = x.copy()
    if config.flip:
        flipped = rng.random(n) < 0.5
        out[flipped] = out[flipped, :, ::-1]
    if config.brightness:
        out *= rng.uniform(1 - config.brightness, 1 + config.brightness, (n, 1, 1, 1)).astype(np.float32)
        out += rng.uniform(-100 * config.brightness, 100 * config.brightness, (n, 1, 1, 1)).astype(np.float32)
    if config.noise:
        out += rng.normal(0.0, config.noise, out.shape).astype(np.float32)
    np.clip(out, 0, 255, out=out)
    if config.erase_probability:
        out = random_erase(out, rng, config.erase_probability)
    return out
