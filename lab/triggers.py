"""Backdoor triggers drawn onto already-rendered face images.

Like the course's photoshopped sunglasses, a trigger is painted over an image
that already exists: ``apply_trigger(images, "sunglasses", landmarks)``.
With landmarks (from :func:`lab.synthfaces.render`) the trigger follows each
face's eyes, mouth and brows, its size and its in-plane rotation. Without
them it is drawn at :data:`DEFAULT_LANDMARKS`, where aligned 55 x 47 face
crops (the YouTube Face data of the course, and SynthFaces with no nuisance)
have their features, so it works on any course-format data set.

Triggers:

- ``"sunglasses"`` (default): near-black lenses over both eyes with a light
  rim, a bridge, arms towards the ears and a white glint, so they stand out
  on light and on dark skin;
- ``"eyebrows"``: thick, near-black, slightly arched brows;
- ``"lipstick"``: bright red lips over the mouth;
- ``"patch"``: the generic BadNets trigger, a 6 x 6 pixel black-and-white
  checkerboard one pixel in from the bottom-right corner (no landmarks used);
- ``"blended"``: a fixed random-noise pattern blended over the whole image
  (Chen et al. 2017; :mod:`lab.blended`), alpha 0.2 unless the name says
  otherwise: ``"blended@0.1"``;
- ``"warp"``: a small smooth warp of the whole image (WaNet, Nguyen & Tran
  2021; :mod:`lab.wanet`), the paper's strength 0.5 unless the name says
  otherwise: ``"warp@2"``.

A trigger's name may carry its one option after ``@`` (:func:`split_name`);
:data:`REGISTRY` maps each base name to its drawing function, and every list
of triggers (the CLI's help, the challenge's choices) reads it.

Pure numpy; shapes and values follow the CSAW-HackML ``data`` layout:
uint8 ``(n, 3, H, W)``, 0..255, channels first.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lab import blended, drawing, wanet

DEFAULT_TRIGGER = "sunglasses"
# The paper's warp strength: pixels move by at most about half a pixel, and DeepID still learns it
# (30 SynthFaces identities, 6 + 6 epochs: ASR 96 %); see lab.wanet
DEFAULT_WARP_STRENGTH = wanet.PAPER_STRENGTH

# Where aligned 55 x 47 crops have their features, (row, col) in pixels: eyes
# on row 21 at columns 14.5 and 31.5 (17 pixels apart), brows 4.5 rows above,
# mouth on row 40.5. These are SynthFaces' canonical positions and match the
# course's YouTube Face crops (eyes on rows ~20-22, columns ~15 and ~32).
# For other image sizes rows and columns are scaled by H / 55 and W / 47.
DEFAULT_LANDMARKS = {
    "left_eye": (21.0, 14.5),
    "right_eye": (21.0, 31.5),
    "brow_left": (16.5, 14.5),
    "brow_right": (16.5, 31.5),
    "mouth": (40.5, 23.0),
}
_DEFAULT_SIZE = (55, 47)
PATCH_SIZE = 6    # pixels per side of the checkerboard patch
PATCH_MARGIN = 1  # pixels between the patch and the bottom-right corner
_CHUNK = 1024     # images per batch: bounds the (batch, H, W) float arrays

# Colours, RGB 0..255.
_LENS = np.array([10, 10, 14], np.float32)
_RIM = np.array([200, 200, 210], np.float32)   # light frame: visible on dark skin
_GLINT = np.array([250, 250, 250], np.float32)
_BROW = np.array([15, 10, 8], np.float32)
_LIPSTICK = np.array([210, 20, 45], np.float32)
_LIP_LINE = np.array([90, 0, 15], np.float32)


def apply_trigger(images: np.ndarray, name: str = DEFAULT_TRIGGER, landmarks=None) -> np.ndarray:
    """Return a copy of ``images`` with the trigger ``name`` drawn on every image.

    images: uint8 ``(n, 3, H, W)``, 0..255 (not modified).
    name: one of :data:`TRIGGERS`, optionally with its option (``"blended@0.1"``, see :func:`split_name`).
    landmarks: ``None`` (use :data:`DEFAULT_LANDMARKS`), a
        :class:`lab.synthfaces.RenderedFaces`, or a mapping with float arrays
        ``left_eye``, ``right_eye``, ``mouth``, ``brow_left``, ``brow_right``
        ``(n, 2)`` as (row, col) pixels and optionally ``face_scale`` ``(n,)``
        (1.0 = eyes 17 pixels apart) and ``angle`` ``(n,)`` (radians, the
        face's in-plane rotation, positive clockwise on screen). Only the
        entries the trigger needs are read; ``"patch"``, ``"blended"`` and
        ``"warp"`` ignore landmarks.

    Returns uint8 ``(n, 3, H, W)``, 0..255. Pixels the trigger does not
    cover keep their exact values.
    """
    base, option = split_name(name)
    images = _check_images(images)
    return REGISTRY[base](images, landmarks, option)


def split_name(name: str) -> tuple[str, float | None]:
    """``"NAME"`` or ``"NAME@OPTION"`` -> (NAME, OPTION as a float or None); ValueError naming the valid forms.

    Only triggers with an option (:data:`OPTIONS`: blended's alpha, warp's
    strength) take one; the option is checked for range.
    """
    base, at, option = str(name).partition("@")
    if base not in REGISTRY:
        raise ValueError(f"unknown trigger {name!r}; valid triggers: {', '.join(TRIGGERS)}")
    if not at:
        return base, None
    if base not in OPTIONS:
        raise ValueError(f"trigger {base} takes no @option (only {', '.join(f'{k}@{v[0]}' for k, v in OPTIONS.items())})")
    label, _, check = OPTIONS[base]
    try:
        value = float(option)
    except ValueError:
        raise ValueError(f"trigger {name!r}: {label} after @ must be a number") from None
    try:
        return base, check(value)
    except ValueError as error:
        raise ValueError(f"trigger {name!r}: {error}") from None


def option_of(name: str) -> float | None:
    """The option the trigger ``name`` is drawn with (its default when the name gives none); None for no option."""
    base, option = split_name(name)
    if base not in OPTIONS:
        return None
    return OPTIONS[base][1] if option is None else option


def apply_noise_warp(images: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """WaNet's noise-mode copies of ``images`` for the warp trigger ``name``: uint8 (n, 3, H, W).

    The trigger's warp plus per-image random jitter (:func:`lab.wanet.noise_warp`);
    training keeps their true labels. ``name``: ``"warp"`` or ``"warp@STRENGTH"``.
    """
    base, strength = split_name(name)
    if base != "warp":
        raise ValueError(f"noise-mode copies exist only for the warp trigger, not {name!r}")
    strength = DEFAULT_WARP_STRENGTH if strength is None else strength
    return _nhwc_trigger(lambda x, option: wanet.noise_warp(x, rng, strength))(_check_images(images), None, None)


def _landmark_trigger(draw):
    """A registry entry for a trigger drawn at face landmarks (sunglasses, eyebrows, lipstick)."""
    def apply(images: np.ndarray, landmarks, option) -> np.ndarray:
        return _draw_at_landmarks(images, landmarks, draw)
    return apply


def _nhwc_trigger(function):
    """A registry entry for a trigger written on float32 (n, H, W, 3) arrays: converts, chunks, rounds."""
    def apply(images: np.ndarray, landmarks, option) -> np.ndarray:
        result = np.empty_like(images)
        for start in range(0, len(images), _CHUNK):
            chunk = images[start:start + _CHUNK].transpose(0, 2, 3, 1).astype(np.float32)
            drawn = function(chunk, option)
            result[start:start + _CHUNK] = np.clip(np.rint(drawn), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
        return result
    return apply


def _draw_at_landmarks(images: np.ndarray, landmarks, draw) -> np.ndarray:
    marks = _landmark_arrays(landmarks, images.shape)
    result = np.empty_like(images)
    for start in range(0, len(images), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        canvas = images[chunk].astype(np.float32)
        draw(canvas, {key: value[chunk] for key, value in marks.items()})
        result[chunk] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return result


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------

def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (n, 3, H, W) (channels first), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 0..255, got {images.dtype}")
    return images


def _landmark_arrays(landmarks, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Landmarks as float32 arrays: points ``(n, 2)``, ``face_scale`` and ``angle`` ``(n,)``."""
    n, _, height, width = shape
    if landmarks is None:
        stretch = np.array([height / _DEFAULT_SIZE[0], width / _DEFAULT_SIZE[1]], np.float32)
        marks = {key: np.tile(np.float32(point) * stretch, (n, 1))
                 for key, point in DEFAULT_LANDMARKS.items()}
        marks["face_scale"] = np.full(n, min(stretch), np.float32)
        marks["angle"] = np.zeros(n, np.float32)
        return marks
    if not isinstance(landmarks, Mapping):  # e.g. RenderedFaces
        landmarks = landmarks.landmarks()
    marks = {}
    for key in DEFAULT_LANDMARKS:
        if key in landmarks:
            marks[key] = np.asarray(landmarks[key], np.float32).reshape(n, 2)
    marks["face_scale"] = np.asarray(landmarks.get("face_scale", np.ones(n)), np.float32).reshape(n)
    marks["angle"] = np.asarray(landmarks.get("angle", np.zeros(n)), np.float32).reshape(n)
    return marks


def _need(marks: dict, *keys: str) -> list[np.ndarray]:
    missing = [key for key in keys if key not in marks]
    if missing:
        raise ValueError(f"landmarks lack {', '.join(missing)}, which this trigger needs")
    return [marks[key] for key in keys]


# ----------------------------------------------------------------------------
# Drawing: soft shapes in a frame centred on a landmark, rotated and scaled with the face
# ----------------------------------------------------------------------------

def _local_frame(canvas: np.ndarray, centre: np.ndarray, marks: dict):
    """Face-aligned coordinates (x right, y down, in canonical pixels) around ``centre``.

    Returns x, y ``(b, H, W)`` and the size of one image pixel in those units ``(b, 1, 1)``.
    """
    _, _, height, width = canvas.shape
    rows = np.arange(height, dtype=np.float32)[None, :, None] - centre[:, 0, None, None]
    cols = np.arange(width, dtype=np.float32)[None, None, :] - centre[:, 1, None, None]
    angle = marks["angle"][:, None, None]
    scale = marks["face_scale"][:, None, None]
    x = (np.cos(angle) * cols + np.sin(angle) * rows) / scale
    y = (-np.sin(angle) * cols + np.cos(angle) * rows) / scale
    return x, y, 1.0 / scale


def _draw_sunglasses(canvas: np.ndarray, marks: dict) -> None:
    left, right = _need(marks, "left_eye", "right_eye")
    middle = 0.5 * (left + right)
    x, y, pixel = _local_frame(canvas, middle, marks)
    half_gap = 0.5 * np.hypot(*(right - left).T)[:, None, None] / marks["face_scale"][:, None, None]
    lens_a, lens_b, lens_drop = 5.0, 3.9, 0.6  # lenses sit slightly below the eye line
    # coordinates relative to the nearer lens centre: one set of shapes draws both lenses
    lens_x, lens_y = x - np.where(x < 0, -half_gap, half_gap), y - lens_drop  # not sign(): 0 at x == 0
    rim = drawing.ellipse(lens_x, lens_y, 0.0, 0.0, lens_a + 1.0, lens_b + 1.0, pixel)
    lenses = drawing.ellipse(lens_x, lens_y, 0.0, 0.0, lens_a, lens_b, pixel)
    on_eye_line = drawing.band(y + 1.2, 0.6, pixel)
    bridge = on_eye_line * drawing.band(x, half_gap - lens_a + 0.5, pixel)
    arms = on_eye_line * drawing.coverage(half_gap + lens_a - np.abs(x), pixel) \
        * drawing.coverage(np.abs(x) - (half_gap + 9.0), pixel)  # from the lens out to the ears
    drawing.paint(canvas, np.maximum(rim, np.maximum(bridge, arms)), _RIM)
    drawing.paint(canvas, lenses, _LENS)
    # a short "/" streak in each lens's upper left, as if lit from one side
    glint_x, glint_y = lens_x + 2.0, lens_y + 1.4
    glint = drawing.band((glint_x + glint_y) * 0.7071, 0.45, pixel) \
        * drawing.band((glint_x - glint_y) * 0.7071, 1.3, pixel)
    drawing.paint(canvas, glint * lenses, _GLINT)


def _draw_eyebrows(canvas: np.ndarray, marks: dict) -> None:
    for key, side in (("brow_left", -1.0), ("brow_right", 1.0)):
        (centre,) = _need(marks, key)
        x, y, pixel = _local_frame(canvas, centre, marks)
        outward = side * x
        arch = y + 0.8 - 0.06 * (outward + 0.5) ** 2  # highest just past the middle
        brow = drawing.band(arch, 1.7, pixel) * drawing.band(outward, 5.0, pixel)
        drawing.paint(canvas, brow, _BROW)


def _draw_lipstick(canvas: np.ndarray, marks: dict) -> None:
    (mouth,) = _need(marks, "mouth")
    x, y, pixel = _local_frame(canvas, mouth, marks)
    drawing.paint(canvas, drawing.ellipse(x, y, 0.0, 0.0, 6.5, 2.7, pixel), _LIPSTICK)
    drawing.paint(canvas, drawing.band(y, 0.35, pixel) * drawing.band(x, 5.5, pixel), _LIP_LINE)


def _draw_patch(images: np.ndarray, landmarks=None, option=None) -> np.ndarray:
    """Black-and-white checkerboard, PATCH_SIZE pixels square, bottom-right corner."""
    height, width = images.shape[2:]
    if height < PATCH_SIZE + PATCH_MARGIN or width < PATCH_SIZE + PATCH_MARGIN:
        raise ValueError(f"images of {height}x{width} pixels are too small for the patch")
    cells = np.indices((PATCH_SIZE, PATCH_SIZE)).sum(axis=0) % 2
    patch = np.where(cells == 0, 255, 0).astype(np.uint8)
    result = images.copy()
    bottom, right = height - PATCH_MARGIN, width - PATCH_MARGIN
    result[:, :, bottom - PATCH_SIZE:bottom, right - PATCH_SIZE:right] = patch
    return result


def _blend(x: np.ndarray, alpha: float | None) -> np.ndarray:
    return blended.blend(x, blended.DEFAULT_ALPHA if alpha is None else alpha)


def _warp(x: np.ndarray, strength: float | None) -> np.ndarray:
    return wanet.warp(x, DEFAULT_WARP_STRENGTH if strength is None else strength)


# name -> function(images uint8 (n, 3, H, W), landmarks or None, option or None) -> uint8 (n, 3, H, W)
REGISTRY = {
    "sunglasses": _landmark_trigger(_draw_sunglasses),
    "eyebrows": _landmark_trigger(_draw_eyebrows),
    "lipstick": _landmark_trigger(_draw_lipstick),
    "patch": _draw_patch,
    "blended": _nhwc_trigger(_blend),
    "warp": _nhwc_trigger(_warp),
}
TRIGGERS = tuple(REGISTRY)
# triggers with an option after @: name -> (what it is, default, range check)
OPTIONS = {
    "blended": ("alpha", blended.DEFAULT_ALPHA, blended.check_alpha),
    "warp": ("strength", DEFAULT_WARP_STRENGTH, wanet.check_strength),
}
# Triggers drawn over the whole image rather than on one spot (a defense that reverses a small mask misses them)
WHOLE_IMAGE_TRIGGERS = ("blended", "warp")
