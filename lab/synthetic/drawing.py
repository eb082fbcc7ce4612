"""Anti-aliased drawing primitives shared by the face renderer and the triggers.

Shapes are given as coverage maps (0..1 per pixel) computed from implicit
equations on coordinate grids, so whole batches are drawn with array
arithmetic; :func:`paint` composites a colour with such a map.
"""

from __future__ import annotations

import numpy as np


def coverage(signed_distance: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (negative inside), one pixel wide."""
    return np.clip(0.5 - signed_distance / pixel, 0.0, 1.0)


def ellipse(u, v, cu, cv, a, b, pixel):
    """Coverage of the ellipse centred (cu, cv) with half axes (a, b); all broadcast."""
    x = (u - cu) / a
    y = (v - cv) / b
    # first-order distance to the boundary: implicit value over its gradient length
    gradient = 2.0 * np.sqrt((x / a) ** 2 + (y / b) ** 2) + 1e-6
    return coverage((x * x + y * y - 1.0) / gradient, pixel)


def band(distance_from_centre, half_width, pixel):
    """Coverage of a band ``|d| <= half_width`` around a centre line."""
    return coverage(np.abs(distance_from_centre) - half_width, pixel)


def paint(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Composite ``colour`` over ``canvas`` (b, 3, H, W) in place with ``alpha`` (b, H, W).

    ``colour`` is (3,) for one flat colour, (b, 3) for a flat colour per
    image, or (b, 3, H, W) for a shaded one.
    """
    if colour.ndim == 1:
        colour = colour[None, :, None, None]
    elif colour.ndim == 2:
        colour = colour[:, :, None, None]
    change = colour - canvas
    change *= alpha[:, None]  # in place: these are the biggest arrays the renderer makes
    canvas += change
