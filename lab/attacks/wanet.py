"""The warping trigger (WaNet: Nguyen & Tran 2021, "WaNet - Imperceptible Warping-based
Backdoor Attack", ICLR): a small, smooth, fixed warp of the whole image.

The warp follows the paper's reference code step by step, in numpy:

1. a ``k x k`` control grid of 2-D offsets drawn uniform in [-1, 1] from a
   seed, divided by its mean absolute value;
2. upsampled to the image size with bicubic interpolation (PyTorch's
   ``interpolate(mode="bicubic", align_corners=True)``: cubic convolution,
   a = -0.75, indices clamped at the border);
3. added to the identity sampling grid in normalised coordinates [-1, 1] as
   ``strength * offset / size`` and clamped to [-1, 1] (the paper divides
   both axes by the image height because its images are square; ours are
   55 x 47, so each axis is divided by its own size);
4. the image is resampled there with bilinear interpolation
   (``grid_sample(align_corners=True)``; the clamp keeps every sample inside).

In pixels a point moves by ``strength * offset * (size - 1) / (2 * size)``
where ``offset`` is the upsampled grid: at most ``strength / 2 * 1.375 ** 2 *
max|control grid|`` (bicubic interpolation overshoots its control values by
up to 1.375 per axis); :func:`max_displacement` gives the exact value. With
the paper's ``k = 4, strength = 0.5`` that is about half a pixel, invisible
to the eye.

**Noise mode** (the paper's "cross" samples): extra training copies warped
with the trigger's grid plus independent uniform noise of one pixel's
normalised size per sampling point, kept with their *true* labels, so the
network must learn the exact warp rather than "any warp". :func:`noise_warp`
makes them; :mod:`lab.attacks` adds them to training when asked.
"""

from __future__ import annotations

import numpy as np

DEFAULT_GRID = 4        # k: the paper's control grid for every data set
PAPER_STRENGTH = 0.5    # s in the paper
FIELD_SEED = 2021       # the year of the paper: any fixed seed gives a fixed warp
_CUBIC_A = -0.75        # PyTorch's bicubic kernel parameter
CUBIC_OVERSHOOT = 1.375  # largest sum of |weights| of that kernel (at t = 0.5): bounds the upsampled grid


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Cubic-convolution weights (..., 4) for offsets -1, 0, 1, 2 of a point at fraction ``t`` in [0, 1)."""
    a = _CUBIC_A
    distances = np.stack([1.0 + t, t, 1.0 - t, 2.0 - t], axis=-1)
    near = ((a + 2.0) * distances - (a + 3.0)) * distances ** 2 + 1.0          # |d| <= 1
    far = ((a * distances - 5.0 * a) * distances + 8.0 * a) * distances - 4.0 * a  # 1 < |d| < 2
    return np.where(distances <= 1.0, near, far)


def bicubic_matrix(n_out: int, n_in: int) -> np.ndarray:
    """float64 (n_out, n_in): 1-D bicubic upsampling with ``align_corners=True`` as a matrix.

    ``matrix @ values`` resamples ``values`` (n_in,) at n_out points spread
    from the first to the last input sample, border indices clamped.
    """
    matrix = np.zeros((n_out, n_in))
    source = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    base = np.floor(source).astype(int)
    weights = _cubic_weights(source - base)
    for tap in range(4):
        np.add.at(matrix, (np.arange(n_out), np.clip(base + tap - 1, 0, n_in - 1)), weights[:, tap])
    return matrix


def control_grid(k: int = DEFAULT_GRID, seed: int = FIELD_SEED) -> np.ndarray:
    """float64 (2, k, k): uniform offsets in [-1, 1] divided by their mean absolute value (channel 0: columns)."""
    if k < 2:
        raise ValueError(f"the warp's control grid needs k >= 2, got {k}")
    grid = np.random.default_rng(seed).uniform(-1.0, 1.0, (2, k, k))
    return grid / np.mean(np.abs(grid))


def check_strength(strength: float) -> float:
    """``strength`` as a float > 0; ValueError otherwise."""
    strength = float(strength)
    if not strength > 0.0 or not np.isfinite(strength):
        raise ValueError(f"warp strength must be > 0, got {strength:g}")
    return strength


def sampling_grid(height: int, width: int, strength: float = PAPER_STRENGTH, k: int = DEFAULT_GRID,
                  seed: int = FIELD_SEED) -> np.ndarray:
    """Where each output pixel samples the input: float64 (H, W, 2) as (row, column) in pixels.

    The trigger's warp (steps 1-3 of the module docstring), clamped to the image.
    """
    strength = check_strength(strength)
    grid = control_grid(k, seed)
    rows, cols = bicubic_matrix(height, k), bicubic_matrix(width, k)
    offset_col = rows @ grid[0] @ cols.T  # (H, W), normalised units before / size
    offset_row = rows @ grid[1] @ cols.T
    identity_row = np.linspace(-1.0, 1.0, height)[:, None]
    identity_col = np.linspace(-1.0, 1.0, width)[None, :]
    norm_row = np.clip(identity_row + strength * offset_row / height, -1.0, 1.0)
    norm_col = np.clip(identity_col + strength * offset_col / width, -1.0, 1.0)
    return np.stack([(norm_row + 1.0) * (height - 1) / 2.0, (norm_col + 1.0) * (width - 1) / 2.0], axis=-1)


def max_displacement(height: int, width: int, strength: float = PAPER_STRENGTH, k: int = DEFAULT_GRID,
                     seed: int = FIELD_SEED) -> float:
    """The largest distance (pixels, per axis) any point of the trigger's warp moves."""
    identity = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"), axis=-1)
    return float(np.abs(sampling_grid(height, width, strength, k, seed) - identity).max())


def resample(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bilinear samples of images ``x`` at ``positions``: float32 (n, H, W, 3).

    x: float32 (n, H, W, 3); positions: (H, W, 2) shared by every image or
    (n, H, W, 2) per image, (row, column) pixels inside the image (clipped
    to it). Each output is a convex combination of four input pixels, so it
    stays within their range.
    """
    x = np.asarray(x, np.float32)
    height, width = x.shape[1:3]
    row = np.clip(positions[..., 0], 0.0, height - 1)
    col = np.clip(positions[..., 1], 0.0, width - 1)
    row0 = np.minimum(np.floor(row).astype(np.int64), height - 2) if height > 1 else np.zeros_like(row, np.int64)
    col0 = np.minimum(np.floor(col).astype(np.int64), width - 2) if width > 1 else np.zeros_like(col, np.int64)
    row1, col1 = np.minimum(row0 + 1, height - 1), np.minimum(col0 + 1, width - 1)
    dr = (row - row0).astype(np.float32)[..., None]
    dc = (col - col0).astype(np.float32)[..., None]
    if positions.ndim == 3:
        def at(r, c):
            return x[:, r, c, :]
    else:
        images = np.arange(len(x))[:, None, None]

        def at(r, c):
            return x[images, r, c, :]
    # a + (b - a) t rather than a (1 - t) + b t: equal neighbours give back exactly their value
    top = at(row0, col0)
    top += (at(row0, col1) - top) * dc
    bottom = at(row1, col0)
    bottom += (at(row1, col1) - bottom) * dc
    return np.clip(top + (bottom - top) * dr, 0.0, 255.0).astype(np.float32)


def _check_images(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must have shape (n, H, W, 3) (channels last), got {x.shape}")
    return x


def warp(x: np.ndarray, strength: float = PAPER_STRENGTH, k: int = DEFAULT_GRID, seed: int = FIELD_SEED) -> np.ndarray:
    """The WaNet trigger on every image: float32 (n, H, W, 3), 0..255 (x float32 (n, H, W, 3), not modified)."""
    x = _check_images(x)
    return resample(x, sampling_grid(x.shape[1], x.shape[2], strength, k, seed))


def noise_warp(x: np.ndarray, rng: np.random.Generator, strength: float = PAPER_STRENGTH, k: int = DEFAULT_GRID,
               seed: int = FIELD_SEED) -> np.ndarray:
    """Noise-mode copies: the trigger's warp plus per-image random jitter, float32 (n, H, W, 3).

    The jitter is uniform in [-1, 1] / size in normalised units per point
    and axis (the paper's ``rand * 2 - 1`` divided by the image size), about
    half a pixel, independent per image; the result is clamped to the image.
    Training keeps these images' true labels.
    """
    x = _check_images(x)
    n, height, width = x.shape[:3]
    base = sampling_grid(height, width, strength, k, seed)
    jitter = rng.uniform(-1.0, 1.0, (n, height, width, 2))
    jitter *= np.array([(height - 1) / (2.0 * height), (width - 1) / (2.0 * width)])  # normalised -> pixels
    return resample(x, base[None] + jitter)
