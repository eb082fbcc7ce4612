"""Backdoor triggers drawn onto already-rendered face images.

Like the course's photoshopped sunglasses, a trigger is painted over an image
that already exists: ``apply_trigger(images, "sunglasses", landmarks)``.
With landmarks (from :func:`lab.synthetic.synthfaces.render`) the trigger follows each
face's eyes, mouth and brows, its size and its in-plane rotation. Without
them it is drawn at :data:`DEFAULT_LANDMARKS`, where aligned 55 x 47 face
crops (the YouTube Face data of the course, and SynthFaces with no nuisance)
have their features, so it works on any course-format data set.

Triggers (:data:`REGISTRY`, name -> draw function; every list of triggers
in the lab, :data:`TRIGGERS` and the CLI's ``--trigger`` choices, reads it;
add one with a ``@register_trigger("name")`` draw function below):

- ``"sunglasses"`` (default): near-black lenses over both eyes with a light
  rim, a bridge, arms towards the ears and a white glint, so they stand out
  on light and on dark skin;
- ``"eyebrows"``: thick, near-black, slightly arched brows;
- ``"lipstick"``: bright red lips over the mouth;
- ``"patch"``: the generic BadNets trigger, a 6 x 6 pixel black-and-white
  checkerboard one pixel in from the bottom-right corner (no landmarks used);
- ``"sticker"``: the BadNets paper's traffic-sign trigger (Gu et al. 2017), a
  yellow square sticker with a dark edge, on the sign (``sticker`` landmark
  of :class:`lab.synthetic.synthsigns.RenderedSigns`; on faces, the cheek);
- ``"blended"``: a fixed random-noise pattern blended over the whole image
  (Chen et al. 2017; :mod:`lab.attacks.blended`), alpha 0.2 unless the name
  says otherwise: ``"blended@0.1"``;
- ``"warp"``: a small smooth warp of the whole image (WaNet, Nguyen & Tran
  2021; :mod:`lab.attacks.wanet`), the paper's strength 0.5 unless the name
  says otherwise: ``"warp@2"``.

A trigger registered with an option (:data:`OPTIONS`) takes it after ``@``
in its name (:func:`split_name`); its draw function gets the value.

Pure numpy; shapes and values follow the CSAW-HackML ``data`` layout:
uint8 ``(n, 3, H, W)``, 0..255, channels first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import numpy as np

from lab.attacks import blended, wanet
from lab.synthetic import drawing, synthsigns

# A draw function paints its trigger in place on ``canvas`` float32 (b, 3, H, W), 0..255,
# using the landmark arrays it needs from ``marks`` (see :func:`apply_trigger`); a trigger
# registered with an option also gets the option's value as a third argument.
DrawFunction = Callable[..., None]
REGISTRY: dict[str, DrawFunction] = {}  # trigger name -> draw function, in registration order
# triggers with an option after @: name -> (what it is, default value, range check returning the value)
OPTIONS: dict[str, tuple[str, float, Callable[[float], float]]] = {}
DEFAULT_TRIGGER = "sunglasses"
# The paper's warp strength: pixels move by at most about half a pixel, and DeepID still learns it
# (30 SynthFaces identities, 6 + 6 epochs: ASR 96 %; the default's data: see tools/measure_repairs.py)
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
    # where SynthSigns puts a sticker on an unshifted sign (lower right of its centre); on a face, the right cheek
    "sticker": (synthsigns.CENTER_ROW + synthsigns.STICKER_POINT[1] * synthsigns.SIGN_RADIUS,
                synthsigns.CENTER_COL + synthsigns.STICKER_POINT[0] * synthsigns.SIGN_RADIUS),
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
_STICKER = np.array([250, 215, 30], np.float32)
_STICKER_EDGE = np.array([60, 50, 10], np.float32)
STICKER_SIZE = 5.0  # pixels per side at scale 1


def apply_trigger(images: np.ndarray, name: str = DEFAULT_TRIGGER, landmarks=None) -> np.ndarray:
    """Return a copy of ``images`` with the trigger ``name`` drawn on every image.

    images: uint8 ``(n, 3, H, W)``, 0..255 (not modified).
    name: one of :data:`TRIGGERS` (a key of :data:`REGISTRY`), with its option
        for a trigger that has one (``"blended@0.1"``, see :func:`split_name`).
    landmarks: ``None`` (use :data:`DEFAULT_LANDMARKS`), a
        :class:`lab.synthetic.synthfaces.RenderedFaces`, or a mapping with float arrays
        ``left_eye``, ``right_eye``, ``mouth``, ``brow_left``, ``brow_right``
        ``(n, 2)`` as (row, col) pixels and optionally ``face_scale`` ``(n,)``
        (1.0 = eyes 17 pixels apart) and ``angle`` ``(n,)`` (radians, the
        face's in-plane rotation, positive clockwise on screen). Only the
        entries the trigger needs are read (``"sticker"`` reads ``sticker``);
        ``"patch"``, ``"blended"`` and ``"warp"`` ignore landmarks.

    Returns uint8 ``(n, 3, H, W)``, 0..255. Pixels the trigger does not
    cover keep their exact values.
    """
    base, option = split_name(name)
    images = _check_images(images)
    marks = _landmark_arrays(landmarks, images.shape)
    draw = REGISTRY[base]
    if base in OPTIONS:
        value = OPTIONS[base][1] if option is None else option
        draw = functools.partial(draw, option=value)
    result = np.empty_like(images)
    for start in range(0, len(images), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        canvas = images[chunk].astype(np.float32)
        draw(canvas, {key: value[chunk] for key, value in marks.items()})
        result[chunk] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return result


def register_trigger(name: str, option: tuple[str, float, Callable[[float], float]] | None = None
                     ) -> Callable[[DrawFunction], DrawFunction]:
    """Decorator: add a draw function to :data:`REGISTRY` under ``name``.

    option: ``(what, default, check)`` for a trigger with one number after ``@``
    in its name (``check`` returns the value or raises ValueError); the draw
    function then takes it as ``option=``.
    """

    def add(draw: DrawFunction) -> DrawFunction:
        if name in REGISTRY:
            raise ValueError(f"trigger {name!r} is registered twice")
        REGISTRY[name] = draw
        if option is not None:
            OPTIONS[name] = option
        return draw

    return add


def split_name(name: str) -> tuple[str, float | None]:
    """``"NAME"`` or ``"NAME@OPTION"`` -> (NAME, OPTION as a float or None); ValueError naming the valid forms.

    Only triggers with an option (:data:`OPTIONS`: blended's alpha, warp's
    strength) take one; the option is checked for range.
    """
    base, at, option = str(name).partition("@")
    if base not in REGISTRY:
        raise ValueError(f"unknown trigger {name!r}; valid triggers: {', '.join(REGISTRY)}")
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

    The trigger's warp plus per-image random jitter (:func:`lab.attacks.wanet.noise_warp`);
    training keeps their true labels. ``name``: ``"warp"`` or ``"warp@STRENGTH"``.
    """
    if split_name(name)[0] != "warp":
        raise ValueError(f"noise-mode copies exist only for the warp trigger, not {name!r}")
    images = _check_images(images)
    result = np.empty_like(images)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start:start + _CHUNK].transpose(0, 2, 3, 1).astype(np.float32)
        warped = wanet.noise_warp(chunk, rng, option_of(name))
        result[start:start + _CHUNK] = np.clip(np.rint(warped), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
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
    if "sticker" not in marks and "right_eye" in marks:  # a face: the cheek, where it is from the right eye
        offset = np.subtract(DEFAULT_LANDMARKS["sticker"], DEFAULT_LANDMARKS["right_eye"]).astype(np.float32)
        down, right = offset[0] * marks["face_scale"], offset[1] * marks["face_scale"]
        sin, cos = np.sin(marks["angle"]), np.cos(marks["angle"])
        marks["sticker"] = marks["right_eye"] + np.stack([sin * right + cos * down, cos * right - sin * down], axis=1)
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


@register_trigger("sunglasses")
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


@register_trigger("eyebrows")
def _draw_eyebrows(canvas: np.ndarray, marks: dict) -> None:
    for key, side in (("brow_left", -1.0), ("brow_right", 1.0)):
        (centre,) = _need(marks, key)
        x, y, pixel = _local_frame(canvas, centre, marks)
        outward = side * x
        arch = y + 0.8 - 0.06 * (outward + 0.5) ** 2  # highest just past the middle
        brow = drawing.band(arch, 1.7, pixel) * drawing.band(outward, 5.0, pixel)
        drawing.paint(canvas, brow, _BROW)


@register_trigger("lipstick")
def _draw_lipstick(canvas: np.ndarray, marks: dict) -> None:
    (mouth,) = _need(marks, "mouth")
    x, y, pixel = _local_frame(canvas, mouth, marks)
    drawing.paint(canvas, drawing.ellipse(x, y, 0.0, 0.0, 6.5, 2.7, pixel), _LIPSTICK)
    drawing.paint(canvas, drawing.band(y, 0.35, pixel) * drawing.band(x, 5.5, pixel), _LIP_LINE)


@register_trigger("patch")
def _draw_patch(canvas: np.ndarray, marks: dict) -> None:
    """Black-and-white checkerboard, PATCH_SIZE pixels square, bottom-right corner (landmarks unused)."""
    height, width = canvas.shape[2:]
    if height < PATCH_SIZE + PATCH_MARGIN or width < PATCH_SIZE + PATCH_MARGIN:
        raise ValueError(f"images of {height}x{width} pixels are too small for the patch")
    cells = np.indices((PATCH_SIZE, PATCH_SIZE)).sum(axis=0) % 2
    patch = np.where(cells == 0, 255, 0).astype(np.float32)
    bottom, right = height - PATCH_MARGIN, width - PATCH_MARGIN
    canvas[:, :, bottom - PATCH_SIZE:bottom, right - PATCH_SIZE:right] = patch


@register_trigger("sticker")
def _draw_sticker(canvas: np.ndarray, marks: dict) -> None:
    """A yellow square, STICKER_SIZE pixels a side at scale 1, turned with the sign, at the ``sticker`` landmark."""
    (centre,) = _need(marks, "sticker")
    x, y, pixel = _local_frame(canvas, centre, marks)
    half = STICKER_SIZE / 2
    square = np.maximum(np.abs(x), np.abs(y)) - half  # signed distance to the square's edge (chebyshev)
    drawing.paint(canvas, drawing.coverage(square, pixel), _STICKER_EDGE)
    drawing.paint(canvas, drawing.coverage(square + 0.7, pixel), _STICKER)


@register_trigger("blended", option=("alpha", blended.DEFAULT_ALPHA, blended.check_alpha))
def _draw_blended(canvas: np.ndarray, marks: dict, option: float) -> None:
    """The blended trigger over the whole image (landmarks unused)."""
    canvas[:] = blended.blend(canvas.transpose(0, 2, 3, 1), option).transpose(0, 3, 1, 2)


@register_trigger("warp", option=("strength", DEFAULT_WARP_STRENGTH, wanet.check_strength))
def _draw_warp(canvas: np.ndarray, marks: dict, option: float) -> None:
    """The WaNet warp of the whole image (landmarks unused)."""
    canvas[:] = wanet.warp(canvas.transpose(0, 2, 3, 1), option).transpose(0, 3, 1, 2)


TRIGGERS = tuple(REGISTRY)  # the names, in registration order
# Triggers drawn over the whole image rather than on one spot (a defense that reverses a small mask misses them)
WHOLE_IMAGE_TRIGGERS = tuple(name for name in ("blended", "warp") if name in REGISTRY)
