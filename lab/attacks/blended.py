"""The blended trigger (Chen, Liu, Li, Lu, Song 2017, "Targeted Backdoor Attacks on Deep
Learning Systems Using Data Poisoning"): a fixed pattern blended over the whole image.

    x' = (1 - alpha) * x + alpha * pattern

The paper blends either a fixed image (a Hello Kitty picture) or a fixed
random-noise pattern; we use its random-noise variant, drawn from a seed so
the same seed always gives the same pattern (no image file to ship or fetch).
Unlike a patch, the trigger covers every pixel at low contrast, so a defense
that looks for a small mask (Neural Cleanse) does not find it as such.

Defaults follow the paper and BackdoorBench: ``alpha`` 0.2 for training and
testing (the paper also tests larger alphas than it trained with; we keep
them equal, as BackdoorBench does).
"""

from __future__ import annotations

import numpy as np

DEFAULT_ALPHA = 0.2
PATTERN_SEED = 2017  # the year of the paper: any fixed seed gives a fixed pattern


def pattern(height: int, width: int, seed: int = PATTERN_SEED) -> np.ndarray:
    """The blend pattern: float32 (H, W, 3), uniform integers 0..255 per pixel and channel.

    Deterministic: numpy's PCG64 stream for ``seed`` is stable across versions.
    """
    if height < 1 or width < 1:
        raise ValueError(f"pattern size must be positive, got {height}x{width}")
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.float32)


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in (0, 1]; ValueError otherwise."""
    alpha = float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"blend alpha must be in (0, 1], got {alpha:g}")
    return alpha


def blend(x: np.ndarray, alpha: float = DEFAULT_ALPHA, seed: int = PATTERN_SEED,
          overlay: np.ndarray | None = None) -> np.ndarray:
    """``(1 - alpha) * x + alpha * overlay`` for every image: float32 (n, H, W, 3), 0..255.

    x: float32 (n, H, W, 3), 0..255 (not modified). overlay: float32 (H, W, 3)
    0..255; default :func:`pattern` of ``seed``. Every pixel moves exactly
    ``alpha * (overlay - x)``; with x and overlay in 0..255 the result is too.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must have shape (n, H, W, 3) (channels last), got {x.shape}")
    alpha = check_alpha(alpha)
    overlay = pattern(x.shape[1], x.shape[2], seed) if overlay is None else np.asarray(overlay, np.float32)
    if overlay.shape != x.shape[1:]:
        raise ValueError(f"overlay must have shape {x.shape[1:]}, got {overlay.shape}")
    # x + alpha (overlay - x) rather than (1 - alpha) x + alpha overlay: float32 rounding of the
    # two weights could push 255 a hair above 255; the clip only guards that last bit
    return np.clip(x + np.float32(alpha) * (overlay - x), 0.0, 255.0).astype(np.float32)
