"""SynthSigns: a second embedded data set, procedural road signs of 43 classes (another domain than faces).

The BadNets paper (Gu et al. 2017) attacked a traffic-sign classifier with a
yellow square sticker; GTSRB, the benchmark most backdoor papers use, has 43
classes. SynthSigns draws 43 sign classes in the spirit of GTSRB's (speed
limits, prohibitions, warnings, mandatory directions, information signs),
each a *shape* (circle, warning triangle, yield triangle, octagon, diamond,
square), a *rim*, a *fill* and a *glyph* (digits on a seven-segment grid,
arrows, bars, dots and rings made of strokes), so a model must read the
glyph, not only the colours. Each image adds what a camera on a road adds:
position, size, in-plane rotation, a view from the side (horizontal
squeeze), a pole, a background (sky, foliage or a wall), lighting, colour
cast, fading, blur and sensor noise.

Images come out channels first, uint8 ``(n, 3, 55, 47)``, the course h5
``data`` layout, so every part of the lab (DeepID, the attacks, the
defenses, the notebooks) runs on it unchanged. :class:`RenderedSigns`
gives landmarks for triggers: the sign's centre, its size (``face_scale``,
1.0 = a sign of :data:`SIGN_RADIUS` pixels) and its rotation (``angle``),
and ``sticker``, where a sticker sits on the sign (lower right of the
centre), so :mod:`lab.attacks.triggers`' ``"sticker"`` follows the sign.

How it draws: as :mod:`lab.synthetic.synthfaces` does, analytically: each
pixel is mapped into the sign's own frame (unit = the sign's radius, ``y``
down) and shapes are evaluated there as signed distances (a circle, convex
polygons as the largest of their edges' half-plane distances, strokes as
capsules), with one pixel of anti-aliasing, vectorised over a batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lab.synthetic import drawing

IMAGE_HEIGHT = 55
IMAGE_WIDTH = 47
N_CLASSES = 43
SIGN_RADIUS = 17.0       # pixels from the centre to the rim of a sign at scale 1
CENTER_ROW = 24.0        # where an unshifted sign's centre sits (the pole takes the rows below)
CENTER_COL = 23.0
STICKER_POINT = (0.38, 0.42)  # the sticker's place on the sign, in sign units (x right, y down)
_CHUNK = 256

RED = (200, 30, 35)
WHITE = (240, 240, 236)
BLACK = (20, 20, 24)
BLUE = (25, 80, 175)
YELLOW = (245, 190, 20)
GREY = (130, 130, 130)

# A stroke in sign units: ("line", x0, y0, x1, y1, half_width), ("dot", x, y, radius) or ("ring", radius, half_width).
Stroke = tuple


@dataclasses.dataclass(frozen=True)
class SignClass:
    """One class: its name, shape, rim/fill/glyph colours (RGB 0..255) and the glyph's strokes."""

    name: str
    shape: str
    rim: tuple[int, int, int]
    fill: tuple[int, int, int]
    ink: tuple[int, int, int]
    glyph: tuple[Stroke, ...]


# Seven-segment digits: which of the segments a (top), b (upper right), c (lower right), d (bottom),
# e (lower left), f (upper left), g (middle) are lit.
_SEGMENTS = {"0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg", "5": "acdfg", "6": "acdefg",
             "7": "abc", "8": "abcdefg", "9": "abcdfg"}


def _digits(text: str, height: float = 0.62, width: float = 0.26, stroke: float = 0.055) -> tuple[Stroke, ...]:
    """``text`` (digits) centred on the sign as seven-segment strokes."""
    strokes = []
    gap = 0.11
    total = len(text) * width + (len(text) - 1) * gap
    for k, char in enumerate(text):
        left = -total / 2 + k * (width + gap)
        right, top, middle, bottom = left + width, -height / 2, 0.0, height / 2
        ends = {"a": (left, top, right, top), "b": (right, top, right, middle), "c": (right, middle, right, bottom),
                "d": (left, bottom, right, bottom), "e": (left, middle, left, bottom), "f": (left, top, left, middle),
                "g": (left, middle, right, middle)}
        strokes += [("line", *ends[segment], stroke) for segment in _SEGMENTS[char]]
    return tuple(strokes)


def _arrow(angle_deg: float, length: float = 0.55, stroke: float = 0.09, bend: float | None = None
           ) -> tuple[Stroke, ...]:
    """An arrow through the centre pointing at ``angle_deg`` (0 = up, 90 = right); ``bend`` turns its head."""
    angle = np.deg2rad(angle_deg)
    dx, dy = np.sin(angle), -np.cos(angle)
    tail, tip = (-dx * length, -dy * length), (dx * length, dy * length)
    strokes: list[Stroke] = []
    if bend is None:
        strokes.append(("line", *tail, *tip, stroke))
        head_angle = angle
    else:  # straight to the centre, then off at ``bend`` degrees
        turn = np.deg2rad(bend)
        tip = (np.sin(angle + turn) * length, -np.cos(angle + turn) * length)
        strokes += [("line", *tail, 0.0, 0.0, stroke), ("line", 0.0, 0.0, *tip, stroke)]
        head_angle = angle + turn
    for side in (-1.0, 1.0):
        wing = head_angle + np.pi + side * np.deg2rad(35)
        strokes.append(("line", *tip, tip[0] + np.sin(wing) * 0.3, tip[1] - np.cos(wing) * 0.3, stroke))
    return tuple(strokes)


def _catalogue() -> tuple[SignClass, ...]:
    """The 43 classes, in a fixed order (class k is always the same sign)."""
    limits = [SignClass(f"speed limit {v}", "circle", RED, WHITE, BLACK, _digits(str(v)))
              for v in (20, 30, 50, 60, 70, 80, 100, 120)]
    slash = (("line", -0.55, 0.55, 0.55, -0.55, 0.07),)
    prohibitions = [
        SignClass("end of speed limit 80", "circle", GREY, WHITE, BLACK, _digits("80") + slash),
        SignClass("no overtaking", "circle", RED, WHITE, BLACK,
                  (("line", -0.3, -0.3, -0.3, 0.3, 0.14), ("line", 0.3, -0.3, 0.3, 0.3, 0.14))),
        SignClass("no overtaking by trucks", "circle", RED, WHITE, BLACK,
                  (("line", -0.35, -0.1, -0.1, -0.1, 0.16), ("line", 0.25, -0.3, 0.25, 0.3, 0.12))),
        SignClass("no vehicles", "circle", RED, WHITE, BLACK, ()),
        SignClass("no entry", "circle", RED, RED, WHITE, (("line", -0.6, 0.0, 0.6, 0.0, 0.15),)),
        SignClass("end of all limits", "circle", GREY, WHITE, BLACK, slash + (("line", -0.4, 0.4, 0.4, -0.4, 0.03),)),
        SignClass("no stopping", "circle", RED, BLUE, RED,
                  (("line", -0.6, -0.6, 0.6, 0.6, 0.09), ("line", -0.6, 0.6, 0.6, -0.6, 0.09))),
        SignClass("no parking", "circle", RED, BLUE, RED, (("line", -0.6, 0.6, 0.6, -0.6, 0.09),)),
    ]
    regulatory = [
        SignClass("stop", "octagon", WHITE, RED, WHITE, (("line", -0.5, 0.0, 0.5, 0.0, 0.1),)),
        SignClass("yield", "yield", RED, WHITE, BLACK, ()),
        SignClass("priority road", "diamond", WHITE, YELLOW, BLACK, ()),
        SignClass("end of priority road", "diamond", WHITE, YELLOW, BLACK, (("line", -0.5, 0.5, 0.5, -0.5, 0.08),)),
    ]
    warning = [SignClass(name, "triangle", RED, WHITE, BLACK, glyph) for name, glyph in (
        ("general caution", (("line", 0.0, -0.2, 0.0, 0.22, 0.07), ("dot", 0.0, 0.42, 0.08))),
        ("curve left", _arrow(0, 0.35, 0.07, bend=-60)),
        ("curve right", _arrow(0, 0.35, 0.07, bend=60)),
        ("double curve", (("line", -0.15, 0.5, 0.15, 0.2, 0.07), ("line", 0.15, 0.2, -0.15, -0.1, 0.07),
                          ("line", -0.15, -0.1, 0.1, -0.25, 0.07))),
        ("bumpy road", (("dot", -0.18, 0.38, 0.13), ("dot", 0.18, 0.38, 0.13),
                        ("line", -0.45, 0.48, 0.45, 0.48, 0.05))),
        ("slippery road", (("line", -0.3, 0.5, 0.0, 0.25, 0.06), ("line", 0.0, 0.25, -0.1, 0.0, 0.06),
                           ("line", 0.1, 0.5, 0.35, 0.25, 0.06))),
        ("road narrows", (("line", -0.28, 0.5, -0.1, -0.15, 0.06), ("line", 0.28, 0.5, 0.1, -0.15, 0.06))),
        ("road works", (("line", -0.3, 0.48, 0.15, 0.05, 0.08), ("dot", 0.18, -0.08, 0.1))),
        ("traffic signals", (("dot", 0.0, -0.12, 0.09), ("dot", 0.0, 0.12, 0.09), ("dot", 0.0, 0.36, 0.09))),
        ("pedestrians", (("dot", 0.0, -0.1, 0.09), ("line", 0.0, 0.05, 0.0, 0.5, 0.07))),
        ("children crossing", (("dot", -0.15, -0.05, 0.08), ("line", -0.15, 0.08, -0.15, 0.5, 0.06),
                               ("dot", 0.17, 0.05, 0.07), ("line", 0.17, 0.16, 0.17, 0.5, 0.05))),
        ("bicycles crossing", (("dot", -0.2, 0.35, 0.12), ("dot", 0.2, 0.35, 0.12),
                               ("line", -0.2, 0.35, 0.2, 0.35, 0.03))),
        ("ice or snow", (("line", 0.0, -0.1, 0.0, 0.5, 0.04), ("line", -0.25, 0.05, 0.25, 0.35, 0.04),
                         ("line", -0.25, 0.35, 0.25, 0.05, 0.04))),
    )]
    mandatory = [SignClass(name, "circle", BLUE, BLUE, WHITE, glyph) for name, glyph in (
        ("turn right ahead", _arrow(0, 0.4, bend=90)),
        ("turn left ahead", _arrow(0, 0.4, bend=-90)),
        ("ahead only", _arrow(0)),
        ("go straight or right", _arrow(0) + _arrow(0, 0.45, 0.07, bend=60)),
        ("go straight or left", _arrow(0) + _arrow(0, 0.45, 0.07, bend=-60)),
        ("keep right", _arrow(135)),
        ("keep left", _arrow(225)),
        ("roundabout", (("ring", 0.42, 0.08), ("dot", 0.42, 0.0, 0.13))),
    )]
    information = [SignClass(name, "square", WHITE, BLUE, WHITE, glyph) for name, glyph in (
        ("parking", (("line", -0.2, -0.45, -0.2, 0.45, 0.1), ("line", -0.2, -0.45, 0.2, -0.3, 0.1),
                     ("line", 0.2, -0.3, -0.2, -0.05, 0.1))),
        ("hospital", (("line", 0.0, -0.4, 0.0, 0.4, 0.13), ("line", -0.4, 0.0, 0.4, 0.0, 0.13))),
    )]
    classes = tuple(limits + prohibitions + regulatory + warning + mandatory + information)
    assert len({c.name for c in classes}) == len(classes) == N_CLASSES, len(classes)
    return classes


CLASSES = _catalogue()
SHAPES = ("circle", "triangle", "yield", "octagon", "diamond", "square")
# Regular polygons: (sides, angle of the first edge normal in degrees, 0 = up, clockwise; circumradius 1)
_POLYGONS = {"triangle": (3, 180.0), "yield": (3, 0.0), "octagon": (8, 22.5), "diamond": (4, 45.0),
             "square": (4, 0.0)}
_POLYGON_SIZE = {"triangle": 1.18, "yield": 1.18, "octagon": 1.0, "diamond": 1.12, "square": 0.86}
_RIM_WIDTH = 0.16  # sign units


@dataclasses.dataclass
class RenderedSigns:
    """Rendered images and where their signs are.

    ``images``: uint8 ``(n, 3, 55, 47)``, channels first. ``center`` and
    ``sticker``: float32 ``(n, 2)`` pixel ``(row, col)``; ``face_scale``
    ``(n,)``: the sign's radius over :data:`SIGN_RADIUS`; ``angle`` ``(n,)``:
    in-plane rotation in radians (clockwise on screen). The names match the
    face landmarks' where the meaning is the same, so triggers take either.
    """

    images: np.ndarray
    center: np.ndarray
    sticker: np.ndarray
    face_scale: np.ndarray
    angle: np.ndarray

    def landmarks(self) -> dict[str, np.ndarray]:
        """The landmark arrays as a dict, the form :func:`lab.attacks.triggers.apply_trigger` takes."""
        return {"sticker": self.sticker, "face_scale": self.face_scale, "angle": self.angle}


def _shape_distance(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (sign units, negative inside) to the outline of ``shape`` of radius about 1."""
    if shape == "circle":
        return np.sqrt(x * x + y * y) - 1.0
    sides, first = _POLYGONS[shape]
    size = _POLYGON_SIZE[shape]
    apothem = size * np.cos(np.pi / sides)
    distance = None
    for k in range(sides):
        normal = np.deg2rad(first + 360.0 * k / sides)
        edge = x * np.sin(normal) - y * np.cos(normal) - apothem
        distance = edge if distance is None else np.maximum(distance, edge)
    return distance


def _stroke_coverage(glyph: tuple[Stroke, ...], x, y, pixel) -> np.ndarray:
    """Coverage of a glyph's strokes (their union) on the grids ``x``, ``y``."""
    covered = np.zeros_like(x)
    for stroke in glyph:
        kind = stroke[0]
        if kind == "line":
            x0, y0, x1, y1, half = stroke[1:]
            dx, dy = x1 - x0, y1 - y0
            t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
            distance = np.hypot(x - x0 - t * dx, y - y0 - t * dy) - half
        elif kind == "dot":
            cx, cy, radius = stroke[1:]
            distance = np.hypot(x - cx, y - cy) - radius
        else:  # ring
            radius, half = stroke[1:]
            distance = np.abs(np.hypot(x, y) - radius) - half
        covered = np.maximum(covered, drawing.coverage(distance, pixel))
    return covered


def _image_parameters(seed: int, start: int, count: int, nuisance: float) -> dict[str, np.ndarray]:
    """Per-image nuisance, image ``i`` from the stream ``(seed, i)`` whatever the batch: deterministic."""
    columns = {key: np.empty(count, np.float32) for key in
               ("row", "col", "scale", "angle", "squeeze", "light", "fade", "blur", "noise", "background",
                "cast_r", "cast_g", "cast_b", "field_seed")}
    for j in range(count):
        rng = np.random.default_rng([seed, start + j])
        u = rng.random(14)
        columns["row"][j] = CENTER_ROW + nuisance * (u[0] - 0.5) * 6.0
        columns["col"][j] = CENTER_COL + nuisance * (u[1] - 0.5) * 6.0
        columns["scale"][j] = 1.0 + nuisance * (u[2] - 0.6) * 0.3
        columns["angle"][j] = nuisance * (u[3] - 0.5) * 0.24
        columns["squeeze"][j] = 1.0 - nuisance * u[4] * 0.18
        columns["light"][j] = 1.0 + nuisance * (u[5] - 0.55) * 0.7
        columns["fade"][j] = nuisance * u[6] * 0.3
        columns["blur"][j] = float(u[7] < 0.5 * nuisance)
        columns["noise"][j] = 3.0 + nuisance * u[8] * 5.0
        columns["background"][j] = np.floor(u[9] * 3)
        columns["cast_r"][j], columns["cast_g"][j], columns["cast_b"][j] = 1.0 + nuisance * (u[10:13] - 0.5) * 0.16
        columns["field_seed"][j] = np.floor(u[13] * 2**20)
    return columns


def _background(params: dict, shape: tuple[int, int]) -> np.ndarray:
    """Sky, foliage or a wall behind the sign, float32 ``(b, 3, H, W)``: smooth random fields, no sign-like edges."""
    height, width = shape
    rows = np.arange(height, dtype=np.float32)[:, None] / height
    cols = np.arange(width, dtype=np.float32)[None, :] / width
    out = np.empty((len(params["row"]), 3, height, width), np.float32)
    for j in range(len(out)):
        rng = np.random.default_rng(int(params["field_seed"][j]))
        field = np.zeros((height, width), np.float32)
        for _ in range(4):  # a few random low-frequency waves
            fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
            field += np.cos(2 * np.pi * (fy * rows + fx * cols) + phase).astype(np.float32) / 4
        kind = int(params["background"][j])
        if kind == 0:  # sky: blue above, paler below, a few clouds
            base = np.array([110, 160, 220], np.float32)[:, None, None] * (1.0 - 0.3 * rows) + 60 * rows
            out[j] = base + 25 * np.clip(field, 0, None)
        elif kind == 1:  # foliage: dark greens and browns
            base = np.array([60, 95, 45], np.float32)[:, None, None]
            out[j] = base + np.array([25, 35, 15], np.float32)[:, None, None] * field
        else:  # a wall: a flat colour with soft blotches
            base = rng.uniform(90, 190, 3).astype(np.float32)[:, None, None]
            out[j] = base + 20 * field
    return out


def class_subset(n_classes: int) -> np.ndarray:
    """Which of the 43 signs a data set of ``n_classes`` classes uses: evenly spread over the catalogue.

    The catalogue is ordered by kind (speed limits first), so the first few
    classes alone would all be speed limits; spreading keeps a small data
    set as varied as the whole. ``n_classes = 43`` gives every sign in order.
    """
    if not 1 <= n_classes <= N_CLASSES:
        raise ValueError(f"n_classes must be in 1..{N_CLASSES}, got {n_classes}")
    return np.unique(np.round(np.linspace(0, N_CLASSES - 1, n_classes)).astype(np.int64))


def render(labels, seed: int, nuisance: float = 1.0, progress: bool = False,
           classes: np.ndarray | None = None) -> RenderedSigns:
    """One image of class ``labels[i]`` for every ``i``, image ``i`` from the stream ``(seed, i)``.

    labels: ints, indexes into ``classes`` (sign numbers of :data:`CLASSES`,
        e.g. :func:`class_subset`; default all 43, so labels are sign numbers).
    nuisance: strength of the per-image variation (>= 0); 0 draws every sign
        centred, upright, unblurred, on its background.
    """
    classes = np.arange(N_CLASSES) if classes is None else np.asarray(classes, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"labels must be in 0..{len(classes) - 1}, got {labels.min()}..{labels.max()}")
    labels = classes[labels]
    if nuisance < 0:
        raise ValueError(f"nuisance must be >= 0, got {nuisance}")
    n = len(labels)
    images = np.empty((n, 3, IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
    center = np.empty((n, 2), np.float32)
    sticker = np.empty((n, 2), np.float32)
    scale = np.empty(n, np.float32)
    angle = np.empty(n, np.float32)
    starts = range(0, n, _CHUNK)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="SynthSigns", unit="chunk")
    for start in starts:
        chunk = labels[start:start + _CHUNK]
        params = _image_parameters(seed, start, len(chunk), nuisance)
        canvas = _background(params, (IMAGE_HEIGHT, IMAGE_WIDTH))
        radius = (SIGN_RADIUS * params["scale"])[:, None, None]
        rows = np.arange(IMAGE_HEIGHT, dtype=np.float32)[None, :, None] - params["row"][:, None, None]
        cols = np.arange(IMAGE_WIDTH, dtype=np.float32)[None, None, :] - params["col"][:, None, None]
        turn = params["angle"][:, None, None]
        x = (np.cos(turn) * cols + np.sin(turn) * rows) / (radius * params["squeeze"][:, None, None])
        y = (-np.sin(turn) * cols + np.cos(turn) * rows) / radius
        pixel = 1.0 / radius
        pole = drawing.band(cols / radius, 0.07, pixel) * drawing.coverage(-rows / radius, pixel)
        drawing.paint(canvas, pole, np.array(GREY, np.float32))
        for k in np.unique(chunk):
            sign = CLASSES[int(k)]
            rows_k = chunk == k
            xk, yk, pk = x[rows_k], y[rows_k], pixel[rows_k]
            outline = _shape_distance(sign.shape, xk, yk)
            part = canvas[rows_k]
            drawing.paint(part, drawing.coverage(outline, pk), np.array(sign.rim, np.float32))
            drawing.paint(part, drawing.coverage(outline + _RIM_WIDTH, pk), np.array(sign.fill, np.float32))
            if sign.glyph:
                drawing.paint(part, _stroke_coverage(sign.glyph, xk, yk, pk), np.array(sign.ink, np.float32))
            canvas[rows_k] = part
        canvas = _camera(canvas, params, seed, start)
        images[start:start + len(chunk)] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        center[start:start + len(chunk)] = np.stack([params["row"], params["col"]], axis=1)
        sx, sy = STICKER_POINT
        r = SIGN_RADIUS * params["scale"]
        px, py = sx * r * params["squeeze"], sy * r  # sign frame -> image offsets, rotated back
        sticker[start:start + len(chunk), 0] = params["row"] + np.sin(params["angle"]) * px + np.cos(params["angle"]) * py
        sticker[start:start + len(chunk), 1] = params["col"] + np.cos(params["angle"]) * px - np.sin(params["angle"]) * py
        scale[start:start + len(chunk)] = params["scale"]
        angle[start:start + len(chunk)] = params["angle"]
    return RenderedSigns(images, center, sticker, scale, angle)


def _camera(canvas: np.ndarray, params: dict, seed: int, start: int) -> np.ndarray:
    """Lighting, colour cast, fading, an optional 3 x 3 blur and sensor noise, per image."""
    cast = np.stack([params["cast_r"], params["cast_g"], params["cast_b"]], axis=1)[:, :, None, None]
    canvas = canvas * params["light"][:, None, None, None] * cast
    grey = canvas.mean(axis=1, keepdims=True)
    fade = params["fade"][:, None, None, None]
    canvas = canvas * (1.0 - fade) + (grey * 0.8 + 40.0) * fade
    blurred = params["blur"] > 0
    if blurred.any():
        padded = np.pad(canvas[blurred], ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        canvas[blurred] = sum(padded[:, :, i:i + IMAGE_HEIGHT, j:j + IMAGE_WIDTH]
                              for i in range(3) for j in range(3)) / 9.0
    for j in range(len(canvas)):
        rng = np.random.default_rng([seed, start + j, 1])
        canvas[j] += rng.normal(0.0, params["noise"][j], canvas[j].shape).astype(np.float32)
    return canvas
