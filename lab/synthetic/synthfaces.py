"""SynthFaces: the embedded default data set, procedural cartoon faces.

The course data (YouTube Face crops, 55 x 47 RGB) cannot be downloaded here,
so the lab draws its own stand-in: each *identity* is a fixed set of facial
traits (face shape, skin tone, hair, eyes, brows, nose, mouth, beard,
clothes, background) and each *image* of it adds nuisance (shift, scale,
rotation, expression, lighting, sensor noise), the way a video frame differs
from the next.

Pure numpy, deterministic, vectorised over images. Images come out channels
first, uint8 ``(n, 3, 55, 47)``, exactly the ``data`` layout of the
CSAW-HackML h5 files, with landmarks in pixel coordinates so that
:mod:`lab.attacks.triggers` can draw sunglasses where the eyes are.

How it draws: every image is evaluated analytically. For each output pixel
we compute where it falls in a *canonical face frame* (inverse of the
image's shift/scale/rotation) and evaluate the face's shapes there as
implicit equations (ellipses, bands around curves) with one pixel of
anti-aliasing. Everything is vectorised over a batch of images
(arrays ``(batch, H, W)``) and colours are composited channels first in
float32, so every operation runs on whole ``(H, W)`` planes instead of a
length-3 inner axis.

Canonical frame: ``u`` = columns right of the face centre, ``v`` = rows below
it, both in output pixels at scale 1. With no nuisance a face sits at
row :data:`FACE_CENTER_ROW`, column :data:`FACE_CENTER_COL`, eyes on row
:data:`EYE_ROW` (about where aligned YouTube Face crops have them).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lab.synthetic import drawing

IMAGE_HEIGHT = 55
IMAGE_WIDTH = 47
FACE_CENTER_ROW = 28.0
FACE_CENTER_COL = 23.0
EYE_ROW = 21.0
EYE_V = EYE_ROW - FACE_CENTER_ROW  # canonical v of the eyes (-7)
MOUTH_V = 12.5                     # canonical v of the mouth centre (row 40.5)
BROW_GAP = 4.5                     # canonical rows from eye centre up to brow centre

HAIR_STYLES = ("receding", "short", "fringe", "side_part", "long", "volume", "buzz")
BEARD_STYLES = ("none", "full", "moustache", "goatee")
BACKGROUND_PATTERNS = ("flat", "gradient", "split", "stripes")

DEFAULT_NUISANCE = 1.0
_CHUNK = 256  # images per vectorised batch: big enough to amortise numpy overhead


# ----------------------------------------------------------------------------
# Identities
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Identities:
    """Traits of ``n`` identities, one entry (or row) per identity.

    Lengths are in canonical pixels, colours are float32 RGB ``(n, 3)`` in
    0..255, categorical traits are int indexes into :data:`HAIR_STYLES`,
    :data:`BEARD_STYLES` and :data:`BACKGROUND_PATTERNS`. The ``hair_*``
    geometry fields are derived from ``hair_style`` (kept for rendering).
    """

    seed: int
    face_half_width: np.ndarray      # (n,) 15.5..19
    face_half_height: np.ndarray     # (n,) 21..24
    jaw_taper: np.ndarray            # (n,) 0..0.35, how much narrower the chin is
    skin_rgb: np.ndarray             # (n, 3) light to dark
    ear_size: np.ndarray             # (n,) 0.8..1.2
    hair_style: np.ndarray           # (n,) int
    hair_rgb: np.ndarray             # (n, 3)
    hair_margin_side: np.ndarray     # (n,) how far hair stands out beside the face
    hair_margin_top: np.ndarray      # (n,) and above it
    hairline_v: np.ndarray           # (n,) hairline height at the centre
    hairline_slope: np.ndarray       # (n,) side parting: hairline tilt
    hairline_curve: np.ndarray       # (n,) hairline drops this much per u**2 (temples)
    back_hair_length: np.ndarray     # (n,) v where long hair ends; very negative: none
    eye_spacing: np.ndarray          # (n,) half distance between eye centres
    eye_offset_v: np.ndarray         # (n,) eye height relative to EYE_V
    eye_half_width: np.ndarray       # (n,)
    eye_half_height: np.ndarray      # (n,)
    iris_rgb: np.ndarray             # (n, 3)
    brow_thickness: np.ndarray       # (n,)
    brow_length: np.ndarray          # (n,)
    brow_curve: np.ndarray           # (n,) arch: positive bends down at the ends
    brow_tilt: np.ndarray            # (n,) positive: outer end higher
    brow_rgb: np.ndarray             # (n, 3)
    nose_length: np.ndarray          # (n,)
    nose_width: np.ndarray           # (n,)
    mouth_half_width: np.ndarray     # (n,)
    lip_thickness: np.ndarray        # (n,)
    lip_rgb: np.ndarray              # (n, 3)
    mouth_offset_v: np.ndarray       # (n,) relative to MOUTH_V
    smile: np.ndarray                # (n,) resting smile, -0.3..0.8
    beard_style: np.ndarray          # (n,) int
    beard_rgb: np.ndarray            # (n, 3)
    shirt_rgb: np.ndarray            # (n, 3)
    background_rgb: np.ndarray       # (n, 3)
    background_rgb2: np.ndarray      # (n, 3) second colour of the pattern
    background_pattern: np.ndarray   # (n,) int
    background_angle: np.ndarray     # (n,) radians, direction of the pattern
    background_period: np.ndarray    # (n,) stripe period / split position in pixels

    def __len__(self) -> int:
        return int(self.face_half_width.shape[0])


# Skin tones from very light to very dark (RGB), sampled by interpolation.
_SKIN_RAMP = np.array([
    [255, 226, 204], [241, 194, 160], [224, 172, 130], [198, 140, 100],
    [160, 105, 70], [125, 80, 52], [98, 62, 40], [76, 48, 33],
], dtype=np.float32)
_HAIR_COLOURS = np.array([
    [20, 17, 15], [45, 30, 22], [85, 55, 35], [130, 85, 50], [165, 75, 35],
    [215, 180, 110], [185, 185, 185], [235, 230, 215],
], dtype=np.float32)
_HAIR_COLOUR_WEIGHTS = np.array([0.26, 0.2, 0.15, 0.1, 0.07, 0.1, 0.07, 0.05])
_IRIS_COLOURS = np.array([
    [60, 35, 20], [105, 65, 35], [70, 110, 150], [80, 120, 70], [110, 110, 120],
], dtype=np.float32)


def _skin_tone(rng: np.random.Generator) -> np.ndarray:
    """One skin colour from the ramp, with a slight hue wobble. RGB 0..255."""
    position = rng.uniform(0, len(_SKIN_RAMP) - 1)
    low = int(np.floor(position))
    high = min(low + 1, len(_SKIN_RAMP) - 1)
    colour = _SKIN_RAMP[low] + (position - low) * (_SKIN_RAMP[high] - _SKIN_RAMP[low])
    return np.clip(colour * rng.uniform(0.95, 1.05, 3), 0, 255)


def _hair_geometry(style: int, rng: np.random.Generator) -> tuple[float, ...]:
    """(margin_side, margin_top, hairline_v, slope, curve, back_length) for a style."""
    jitter = rng.uniform(-1, 1, 4)
    back = -1e3  # no long hair
    if HAIR_STYLES[style] == "receding":   # bald top, hair left at the temples
        side, top, line, slope, curve = 1.2, 1.5, -30 + 3 * jitter[0], 0.0, 0.075
    elif HAIR_STYLES[style] == "short":
        side, top, line, slope, curve = 1.5, 2.5, -15 + jitter[0], 0.0, 0.025
    elif HAIR_STYLES[style] == "fringe":   # bangs down to just above the brows
        side, top, line, slope, curve = 2.0, 3.0, -13.5 + 0.5 * jitter[0], 0.0, 0.02
    elif HAIR_STYLES[style] == "side_part":
        side, top, line, slope, curve = 2.0, 3.5, -15.5 + jitter[0], 0.25 * np.sign(jitter[1]), 0.02
    elif HAIR_STYLES[style] == "long":
        side, top, line, slope, curve = 2.5, 3.0, -15.5 + jitter[0], 0.0, 0.04
        back = 30.0 + 6 * jitter[2]
    elif HAIR_STYLES[style] == "volume":   # afro / big curls
        side, top, line, slope, curve = 5.5 + jitter[2], 6.0, -14.5 + jitter[0], 0.0, 0.02
    else:                                  # buzz cut: thin cap
        side, top, line, slope, curve = 0.7, 1.0, -16 + jitter[0], 0.0, 0.03
    return side + 0.3 * jitter[3], top, line, slope, curve, back


def _one_identity(rng: np.random.Generator) -> dict:
    """Draw the traits of one identity as a dict of scalars / RGB triples."""
    hair_style = int(rng.integers(len(HAIR_STYLES)))
    hair_rgb = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_COLOUR_WEIGHTS)]
    natural_hair = np.clip(hair_rgb * rng.uniform(0.85, 1.15, 3), 0, 255)  # brows and beard too
    skin = _skin_tone(rng)
    hair_rgb = natural_hair
    if HAIR_STYLES[hair_style] == "buzz":  # skin shows through short hair
        hair_rgb = 0.55 * natural_hair + 0.45 * skin
    margin_side, margin_top, line, slope, curve, back = _hair_geometry(hair_style, rng)
    beard_style = int(rng.choice(len(BEARD_STYLES), p=[0.6, 0.15, 0.13, 0.12]))
    brow_rgb = np.clip(0.7 * natural_hair + 0.3 * np.array([25, 20, 15]), 0, 255)
    background = rng.uniform(30, 230, 3)
    return dict(
        face_half_width=rng.uniform(15.5, 19), face_half_height=rng.uniform(21, 24),
        jaw_taper=rng.uniform(0, 0.35), skin_rgb=skin, ear_size=rng.uniform(0.8, 1.2),
        hair_style=hair_style, hair_rgb=hair_rgb, hair_margin_side=margin_side,
        hair_margin_top=margin_top, hairline_v=line, hairline_slope=slope,
        hairline_curve=curve, back_hair_length=back,
        eye_spacing=rng.uniform(7.5, 9.5), eye_offset_v=rng.uniform(-0.8, 0.8),
        eye_half_width=rng.uniform(2.4, 3.5), eye_half_height=rng.uniform(1.3, 2.1),
        iris_rgb=_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] * rng.uniform(0.85, 1.15),
        brow_thickness=rng.uniform(1.0, 2.4), brow_length=rng.uniform(6, 9),
        brow_curve=rng.uniform(-0.02, 0.09), brow_tilt=rng.uniform(-0.25, 0.25),
        brow_rgb=brow_rgb, nose_length=rng.uniform(4, 8), nose_width=rng.uniform(2, 3.8),
        mouth_half_width=rng.uniform(4, 7), lip_thickness=rng.uniform(0.8, 2.0),
        lip_rgb=np.clip(skin * rng.uniform(0.6, 0.8) + np.array([40, 0, 5]), 0, 255),
        mouth_offset_v=rng.uniform(-1.2, 1.2), smile=rng.uniform(-0.3, 0.8),
        beard_style=beard_style, beard_rgb=np.clip(natural_hair * rng.uniform(0.8, 1.1), 0, 255),
        shirt_rgb=rng.uniform(20, 235, 3),
        background_rgb=background,
        background_rgb2=np.clip(background + rng.uniform(-90, 90, 3), 0, 255),
        background_pattern=int(rng.integers(len(BACKGROUND_PATTERNS))),
        background_angle=rng.uniform(0, np.pi), background_period=rng.uniform(6, 14),
    )


def _trait_vector(traits: dict) -> np.ndarray:
    """Traits scaled to comparable units, to keep identities apart when drawing them."""
    parts = [
        np.asarray(traits["skin_rgb"]) / 40, np.asarray(traits["hair_rgb"]) / 50,
        np.asarray(traits["background_rgb"]) / 60, np.asarray(traits["shirt_rgb"]) / 120,
        np.eye(len(HAIR_STYLES))[traits["hair_style"]] * 1.5,
        np.eye(len(BEARD_STYLES))[traits["beard_style"]] * 1.0,
        np.eye(len(BACKGROUND_PATTERNS))[traits["background_pattern"]] * 0.7,
        [traits["face_half_width"] / 2, traits["face_half_height"] / 2,
         traits["eye_spacing"] / 1.5, traits["mouth_half_width"] / 2,
         traits["brow_thickness"] / 1.0, traits["nose_length"] / 3],
    ]
    return np.concatenate([np.ravel(np.asarray(p, dtype=np.float64)) for p in parts])


def make_identities(n_identities: int, seed: int, min_distance: float = 2.5,
                    tries: int = 40) -> Identities:
    """Draw ``n_identities`` distinguishable identities, deterministically from ``seed``.

    Identities are drawn one after the other; each keeps the first of up to
    ``tries`` candidates whose trait vector lies at least ``min_distance``
    from every identity already kept (else the farthest candidate), so no
    two identities are near twins. The first ``k`` identities do not depend
    on ``n_identities``.
    """
    if int(n_identities) < 1:
        raise ValueError(f"n_identities must be at least 1, got {n_identities}")
    rng = np.random.default_rng(seed)
    kept: list[dict] = []
    vectors = None  # (n_identities, d) trait vectors of the identities kept so far
    for count in range(int(n_identities)):
        best, best_distance = None, -1.0
        for _ in range(tries):
            candidate = _one_identity(rng)
            vector = _trait_vector(candidate)
            if vectors is None:
                vectors = np.zeros((int(n_identities), vector.size))
            distance = np.linalg.norm(vectors[:count] - vector, axis=1).min(initial=np.inf)
            if distance > best_distance:
                best, best_distance, best_vector = candidate, distance, vector
            if distance >= min_distance:
                break
        kept.append(best)
        vectors[count] = best_vector
    columns = {}
    for field in dataclasses.fields(Identities):
        if field.name == "seed":
            continue
        values = np.array([traits[field.name] for traits in kept])
        integer = field.name in ("hair_style", "beard_style", "background_pattern")
        columns[field.name] = values.astype(np.int64 if integer else np.float32)
    return Identities(seed=int(seed), **columns)


# ----------------------------------------------------------------------------
# Per-image nuisance
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RenderedFaces:
    """Rendered images and where their landmarks ended up.

    ``images``: uint8 ``(n, 3, 55, 47)``, 0..255, channels first (the
    CSAW-HackML h5 ``data`` layout). Landmarks are float32 pixel coordinates
    ``(row, col)``, shape ``(n, 2)``; "left" means the image's left (smaller
    column). ``face_scale`` ``(n,)``: size relative to the canonical face
    (1.0 = eyes about 17 pixels apart); ``angle`` ``(n,)``: in-plane rotation
    in radians (positive turns the face clockwise on screen, rows down).
    """

    images: np.ndarray
    left_eye: np.ndarray
    right_eye: np.ndarray
    mouth: np.ndarray
    brow_left: np.ndarray
    brow_right: np.ndarray
    face_scale: np.ndarray
    angle: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def landmarks(self) -> dict[str, np.ndarray]:
        """The landmark arrays as a dict, the form :func:`lab.attacks.triggers.apply_trigger` takes."""
        names = ("left_eye", "right_eye", "mouth", "brow_left", "brow_right", "face_scale", "angle")
        return {name: getattr(self, name) for name in names}


_NORMALS = 16
_UNIFORMS = 8


def _image_random(seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard normals (16,), uniforms (8,) and pixel noise (3, H, W) for one image.

    Each image has its own stream keyed by ``(seed, index)``, so an image does
    not depend on how many images are rendered or how they are chunked.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    normals = rng.standard_normal(_NORMALS)
    uniforms = rng.random(_UNIFORMS)
    noise = rng.standard_normal((3, IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.float32)
    return normals, uniforms, noise


def _clipped(x: np.ndarray, limit: float) -> np.ndarray:
    """Clip standard normals to +-limit: rare tails would push faces out of the frame."""
    return np.clip(x, -limit, limit)


def _nuisance(normals: np.ndarray, uniforms: np.ndarray, strength: float) -> dict:
    """Per-image nuisance parameters (arrays ``(b,)`` or ``(b, 3)``) from random draws.

    ``strength`` scales every deviation from the canonical face: 0 gives the
    canonical face under neutral light with no noise.
    """
    z, q, s = normals, uniforms, float(strength)
    # The scales set the difficulty: at strength 1.0 DeepID trained as the default is (100 identities x 50
    # training images) reaches a course-like clean accuracy, high but short of perfect (a task that is too
    # easy leaves pruning nothing to show). Stronger nuisance lowers it. The default's build records the
    # accuracy it reached in its manifest.json.
    params = dict(
        shift_row=s * 1.95 * _clipped(z[:, 0], 2.5),
        shift_col=s * 1.95 * _clipped(z[:, 1], 2.5),
        scale=np.exp(s * 0.072 * _clipped(z[:, 2], 2.5)),
        angle=s * 0.115 * _clipped(z[:, 3], 2.5),
        smile=s * 0.55 * z[:, 4],
        mouth_open=s * 1.9 * np.clip(q[:, 0] - 0.55, 0, None) / 0.45,
        brow_raise=s * 0.85 * _clipped(z[:, 5], 2.5),
        eye_open=np.clip(1 - s * 0.4 * q[:, 1] ** 2, 0.3, 1),
        gaze=np.stack([s * 0.6 * _clipped(z[:, 6], 2), s * 0.3 * _clipped(z[:, 7], 2)], axis=1),
        gain=np.exp(s * 0.27 * _clipped(z[:, 8], 2.5)),
        contrast=np.exp(s * 0.23 * _clipped(z[:, 9], 2.5)),
        cast=1 + s * 0.07 * _clipped(z[:, 10:13], 2.5),
        light_angle=2 * np.pi * q[:, 2],
        light_strength=s * 0.44 * q[:, 3],
        noise_sigma=s * 7.25 * (0.4 + q[:, 4]),
        background_shift=s * 14.0 * _clipped(z[:, 13:16], 2.5),
    )
    return {name: value.astype(np.float32) for name, value in params.items()}


# ----------------------------------------------------------------------------
# Drawing primitives: soft coverage (0..1) of shapes in canonical coordinates
# ----------------------------------------------------------------------------

def _p(values: np.ndarray) -> np.ndarray:
    """Per-image scalars (b,) shaped to broadcast against (b, H, W)."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


# ----------------------------------------------------------------------------
# Face parts, drawn back to front on a (b, 3, H, W) float32 canvas
# ----------------------------------------------------------------------------

def _background(traits: dict, nuis: dict, rows, cols) -> np.ndarray:
    """Per-identity background in image coordinates (it does not move with the face)."""
    pattern = traits["background_pattern"]
    angle = _p(traits["background_angle"])
    along = np.cos(angle) * (cols - FACE_CENTER_COL) + np.sin(angle) * (rows - FACE_CENTER_ROW)
    period = _p(traits["background_period"])
    ramp = np.where(_p(pattern == 1), np.clip(0.5 + along / 40.0, 0, 1), 0.0)
    split = np.where(_p(pattern == 2), np.clip(0.5 + along - period, 0, 1), 0.0)
    stripes = np.where(_p(pattern == 3), 0.5 + 0.5 * np.sin(2 * np.pi * along / period), 0.0)
    weight = (ramp + split + stripes)[:, None].astype(np.float32)
    first = (traits["background_rgb"] + nuis["background_shift"])[:, :, None, None]
    second = (traits["background_rgb2"] + nuis["background_shift"])[:, :, None, None]
    return (first + weight * (second - first)).astype(np.float32)


def _draw_head(canvas, traits, u, v, pixel) -> np.ndarray:
    """Long hair behind, neck, shoulders, ears and the face; returns face coverage."""
    a, b = _p(traits["face_half_width"]), _p(traits["face_half_height"])
    hair_a = a + _p(traits["hair_margin_side"])
    hair_b = b + _p(traits["hair_margin_top"])
    back_length = _p(traits["back_hair_length"])
    long_hair = np.maximum(drawing.ellipse(u, v, 0, 0, hair_a, hair_b, pixel),
                           drawing.band(u, hair_a, pixel) * drawing.coverage(v - back_length, pixel)
                           * (v > 0))
    drawing.paint(canvas, long_hair, traits["hair_rgb"] * 0.85)  # behind the head: in shadow
    skin = traits["skin_rgb"]
    drawing.paint(canvas, drawing.band(u, 0.5 * a, pixel) * (v > 0), skin * 0.8)  # neck
    drawing.paint(canvas, drawing.ellipse(u, v, 0, b + 17, a + 15, 15.0, pixel), traits["shirt_rgb"])
    ear_a, ear_b = 2.3 * _p(traits["ear_size"]), 4.0 * _p(traits["ear_size"])
    ears = drawing.ellipse(np.abs(u), v, a - 0.3, EYE_V + 3, ear_a, ear_b, pixel)  # |u|: both ears at once
    drawing.paint(canvas, ears, skin * 0.88)
    # jaw: the face narrows towards the chin
    narrowing = 1 - _p(traits["jaw_taper"]) * np.clip(v / b, 0, 1) ** 2
    face = drawing.ellipse(u, v, 0, 0, a * narrowing, b, pixel)
    radius2 = np.clip((u / (a * narrowing)) ** 2 + (v / b) ** 2, 0, 1)
    shading = (1 - 0.22 * radius2 ** 3)[:, None]  # darker towards the outline: reads as round
    drawing.paint(canvas, face, skin[:, :, None, None] * shading)
    return face


def _draw_beard(canvas, traits, u, v, face, mouth_v, pixel) -> None:
    """Full beard, moustache or goatee in the identity's beard colour."""
    style = traits["beard_style"]
    width = _p(traits["mouth_half_width"])
    # full beard: lower face up to a line that rises towards the sideburns
    beard_top = mouth_v - 2.5 - 0.022 * u * u
    full = face * drawing.coverage(beard_top - v, pixel) * _p(style == 1)
    moustache = (drawing.band(v - (mouth_v - 2.2), 1.1, pixel) * drawing.band(u, width + 0.8, pixel)
                 * _p(style == 2))
    goatee = drawing.ellipse(u, v, 0, mouth_v + 4.5, width * 0.65, 4.0, pixel) * _p(style == 3)
    beard = np.maximum(np.maximum(full, moustache), goatee)
    drawing.paint(canvas, beard * 0.92, traits["beard_rgb"])


def _draw_nose(canvas, traits, u, v, pixel) -> None:
    """Shaded nose ridge, a darker tip and two nostrils."""
    length, width = _p(traits["nose_length"]), _p(traits["nose_width"])
    tip_v = EYE_V + 3 + length
    skin = traits["skin_rgb"]
    ridge = drawing.band(u - 0.9, 0.45, pixel) * drawing.coverage(EYE_V + 2 - v, pixel) * drawing.coverage(v - tip_v, pixel)
    drawing.paint(canvas, ridge * 0.6, skin * 0.7)
    drawing.paint(canvas, drawing.ellipse(u, v, 0, tip_v, width, 1.6, pixel) * 0.6, skin * 0.8)
    nostrils = np.maximum(drawing.ellipse(u, v, -0.55 * width, tip_v + 0.6, 0.8, 0.55, pixel),
                          drawing.ellipse(u, v, 0.55 * width, tip_v + 0.6, 0.8, 0.55, pixel))
    drawing.paint(canvas, nostrils, skin * 0.35)


def _draw_mouth(canvas, traits, nuis, u, v, mouth_v, pixel) -> None:
    """Lips around a centre line whose corners rise with the smile; open mouths are dark inside."""
    width = _p(traits["mouth_half_width"])
    t = np.clip(u / width, -1.0, 1.0)
    profile = np.sqrt(np.clip(1 - t * t, 0, 1))
    smile = _p(traits["smile"] + nuis["smile"])
    centre = mouth_v - smile * 0.35 * width * t * t + smile * 0.35 * width * 0.3
    opening = _p(nuis["mouth_open"]) * profile
    lips_half = (_p(traits["lip_thickness"]) + 0.3) * profile + opening
    inside_width = drawing.coverage(np.abs(u) - width, pixel)
    drawing.paint(canvas, drawing.band(v - centre, lips_half, pixel) * inside_width, traits["lip_rgb"])
    inner = drawing.band(v - centre, np.maximum(opening, 0.35), pixel) * inside_width
    drawing.paint(canvas, inner, traits["lip_rgb"] * 0.3)


def _draw_eyes(canvas, traits, nuis, u, v, pixel) -> None:
    """Whites, iris, pupil and a dark lid line for both eyes."""
    # Coordinates relative to the nearer eye centre: one set of shapes draws
    # both eyes (half the work of drawing them one by one).
    across = u - np.where(u < 0, -1.0, 1.0) * _p(traits["eye_spacing"])  # not sign(): 0 at u == 0
    down = v - (EYE_V + _p(traits["eye_offset_v"]))
    a = _p(traits["eye_half_width"])
    b = _p(traits["eye_half_height"] * nuis["eye_open"])
    iris_across = across - _p(nuis["gaze"][:, 0])
    iris_down = down - _p(nuis["gaze"][:, 1])
    iris_radius = 0.75 * _p(traits["eye_half_height"]) + 0.3
    white = np.broadcast_to(np.float32([240, 238, 232]), traits["skin_rgb"].shape)
    drawing.paint(canvas, drawing.ellipse(across, down, 0, 0, a + 0.6, b + 0.6, pixel), traits["skin_rgb"] * 0.3)
    sclera = drawing.ellipse(across, down, 0, 0, a, b, pixel)
    drawing.paint(canvas, sclera, white)
    iris = drawing.ellipse(iris_across, iris_down, 0, 0, iris_radius, iris_radius, pixel)
    drawing.paint(canvas, iris * sclera, traits["iris_rgb"])
    pupil = drawing.ellipse(iris_across, iris_down, 0, 0, 0.55 * iris_radius, 0.55 * iris_radius, pixel)
    drawing.paint(canvas, pupil * sclera, np.full_like(traits["iris_rgb"], 15.0))


def _draw_brows(canvas, traits, u, v, brow_v, pixel) -> None:
    """Brows: bands around arched, tilted curves, thinner towards the outer end."""
    outward = np.abs(u) - _p(traits["eye_spacing"])  # both brows at once; positive towards the ear
    length, thickness = _p(traits["brow_length"]), _p(traits["brow_thickness"])
    centre = brow_v + _p(traits["brow_curve"]) * outward ** 2 - _p(traits["brow_tilt"]) * outward
    half = 0.5 * thickness * (1 - 0.35 * np.clip(outward / length, -0.5, 0.5))
    brow = drawing.band(v - centre, half, pixel) * drawing.band(outward, 0.5 * length, pixel)
    drawing.paint(canvas, brow, traits["brow_rgb"])


def _draw_hair_top(canvas, traits, u, v, pixel) -> None:
    """Hair in front: inside the hair cap and above the hairline curve."""
    a = _p(traits["face_half_width"] + traits["hair_margin_side"])
    b = _p(traits["face_half_height"] + traits["hair_margin_top"])
    hairline = (_p(traits["hairline_v"]) + _p(traits["hairline_slope"]) * u
                + _p(traits["hairline_curve"]) * u * u)
    hair = drawing.ellipse(u, v, 0, 0, a, b, pixel) * drawing.coverage(v - hairline, pixel)
    drawing.paint(canvas, hair, traits["hair_rgb"])


def _apply_lighting(canvas, nuis, rows, cols, noise) -> np.ndarray:
    """Directional light, gain, contrast, colour cast and sensor noise; returns uint8."""
    angle = _p(nuis["light_angle"])
    across = (np.cos(angle) * (cols - FACE_CENTER_COL) / IMAGE_WIDTH
              + np.sin(angle) * (rows - FACE_CENTER_ROW) / IMAGE_HEIGHT)
    light = (1 + 2 * _p(nuis["light_strength"]) * across)[:, None]
    canvas *= light * (_p(nuis["gain"])[:, None] * nuis["cast"][:, :, None, None])
    mean = canvas.mean(axis=(1, 2, 3), keepdims=True)
    canvas = mean + _p(nuis["contrast"])[:, None] * (canvas - mean)
    canvas += _p(nuis["noise_sigma"])[:, None] * noise
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _canonical_coordinates(nuis: dict):
    """Image rows/cols (1, H, 1)/(1, 1, W) and their canonical (u, v) (b, H, W) and pixel size."""
    rows = np.arange(IMAGE_HEIGHT, dtype=np.float32)[None, :, None]
    cols = np.arange(IMAGE_WIDTH, dtype=np.float32)[None, None, :]
    dy = rows - FACE_CENTER_ROW - _p(nuis["shift_row"])
    dx = cols - FACE_CENTER_COL - _p(nuis["shift_col"])
    cos, sin, scale = _p(np.cos(nuis["angle"])), _p(np.sin(nuis["angle"])), _p(nuis["scale"])
    u = (cos * dx + sin * dy) / scale
    v = (-sin * dx + cos * dy) / scale
    return rows, cols, u, v, 1.0 / scale


def _render_chunk(traits: dict, nuis: dict, noise: np.ndarray) -> np.ndarray:
    """Draw one batch: per-image traits and nuisance (b,...) -> uint8 (b, 3, H, W)."""
    rows, cols, u, v, pixel = _canonical_coordinates(nuis)
    canvas = _background(traits, nuis, rows, cols)
    face = _draw_head(canvas, traits, u, v, pixel)
    mouth_v = MOUTH_V + _p(traits["mouth_offset_v"])
    _draw_beard(canvas, traits, u, v, face, mouth_v, pixel)
    _draw_nose(canvas, traits, u, v, pixel)
    _draw_mouth(canvas, traits, nuis, u, v, mouth_v, pixel)
    _draw_eyes(canvas, traits, nuis, u, v, pixel)
    brow_v = EYE_V + _p(traits["eye_offset_v"]) - BROW_GAP - _p(nuis["brow_raise"])
    _draw_brows(canvas, traits, u, v, brow_v, pixel)
    _draw_hair_top(canvas, traits, u, v, pixel)
    return _apply_lighting(canvas, nuis, rows, cols, noise)


# ----------------------------------------------------------------------------
# Landmarks and the public entry point
# ----------------------------------------------------------------------------

def _to_image(u, v, nuis) -> np.ndarray:
    """Canonical points (b,) -> image (row, col) float32 (b, 2): the forward transform."""
    cos, sin, scale = np.cos(nuis["angle"]), np.sin(nuis["angle"]), nuis["scale"]
    row = FACE_CENTER_ROW + nuis["shift_row"] + scale * (sin * u + cos * v)
    col = FACE_CENTER_COL + nuis["shift_col"] + scale * (cos * u - sin * v)
    return np.stack([row, col], axis=1).astype(np.float32)


def _landmarks(traits: dict, nuis: dict) -> dict:
    """Eye, brow and mouth centres of each image in pixel coordinates."""
    spacing = traits["eye_spacing"]
    eye_v = EYE_V + traits["eye_offset_v"]
    brow_v = eye_v - BROW_GAP - nuis["brow_raise"]
    mouth_v = MOUTH_V + traits["mouth_offset_v"]
    return dict(
        left_eye=_to_image(-spacing, eye_v, nuis), right_eye=_to_image(spacing, eye_v, nuis),
        mouth=_to_image(np.zeros_like(spacing), mouth_v, nuis),
        brow_left=_to_image(-spacing, brow_v, nuis), brow_right=_to_image(spacing, brow_v, nuis),
        face_scale=nuis["scale"].astype(np.float32), angle=nuis["angle"].astype(np.float32),
    )


def _chunk_inputs(identities: Identities, index: np.ndarray, seed: int, start: int,
                  nuisance: float) -> tuple[dict, dict, np.ndarray]:
    """Traits, nuisance and pixel noise of the images ``start .. start + len(index)``."""
    draws = [_image_random(seed, start + i) for i in range(len(index))]
    normals = np.stack([d[0] for d in draws])
    uniforms = np.stack([d[1] for d in draws])
    noise = np.stack([d[2] for d in draws])
    traits = {f.name: getattr(identities, f.name)[index]
              for f in dataclasses.fields(Identities) if f.name != "seed"}
    return traits, _nuisance(normals, uniforms, nuisance), noise


def render(identities: Identities, identity_index, seed: int,
           nuisance: float = DEFAULT_NUISANCE, progress: bool = False) -> RenderedFaces:
    """Render one image per entry of ``identity_index``.

    identities: from :func:`make_identities`.
    identity_index: int array ``(n,)``, values in ``0 .. len(identities) - 1``.
    seed: image ``i`` is drawn from the stream ``(seed, i)``; use different
        seeds for training, validation and test images.
    nuisance: strength of the per-image variation (>= 0); 0 gives canonical
        faces; the default is set so a DeepID net on 100 identities is
        accurate but not perfect (the build's manifest records how accurate).
    progress: show a tqdm bar over chunks.

    Returns :class:`RenderedFaces` with images uint8 ``(n, 3, 55, 47)`` and
    landmarks. Same inputs give byte-identical output, however they are chunked.
    """
    index = np.asarray(identity_index)
    if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
        raise ValueError(f"identity_index must be a 1-d integer array, got {index.dtype} {index.shape}")
    if index.size and (index.min() < 0 or index.max() >= len(identities)):
        raise ValueError(f"identity_index values must lie in 0..{len(identities) - 1}")
    if not nuisance >= 0:
        raise ValueError(f"nuisance must be >= 0, got {nuisance}")
    starts = range(0, len(index), _CHUNK)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="rendering faces", unit="chunk")
    images, marks = [], []
    for start in starts:
        traits, nuis, noise = _chunk_inputs(identities, index[start:start + _CHUNK], seed,
                                            start, nuisance)
        images.append(_render_chunk(traits, nuis, noise))
        marks.append(_landmarks(traits, nuis))
    if not images:
        empty = np.zeros((0, 2), np.float32)
        return RenderedFaces(np.zeros((0, 3, IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8),
                             empty, empty, empty, empty, empty,
                             np.zeros(0, np.float32), np.zeros(0, np.float32))
    joined = {key: np.concatenate([m[key] for m in marks]) for key in marks[0]}
    return RenderedFaces(images=np.concatenate(images), **joined)
