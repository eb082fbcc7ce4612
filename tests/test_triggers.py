"""Triggers: drawn where they belong, on copies, for SynthFaces and for any course-format data."""

from __future__ import annotations

import numpy as np
import pytest

from lab.attacks import triggers
from lab.synthetic import synthfaces
from lab.attacks import blended, wanet


@pytest.fixture(scope="module")
def faces():
    identities = synthfaces.make_identities(12, seed=1)
    return synthfaces.render(identities, np.repeat(np.arange(12), 3), seed=4)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-pixel mask (n, H, W): any channel changed."""
    return (before != after).any(axis=1)


def distance_map(points: np.ndarray, shape=(55, 47)) -> np.ndarray:
    """Distance (n, H, W) in pixels from each pixel to the nearest of the given points (k, n, 2)."""
    rows = np.arange(shape[0])[None, :, None]
    cols = np.arange(shape[1])[None, None, :]
    distances = [np.hypot(rows - p[:, 0, None, None], cols - p[:, 1, None, None]) for p in points]
    return np.min(distances, axis=0)


def test_names():
    assert triggers.TRIGGERS == ("sunglasses", "eyebrows", "lipstick", "patch", "sticker", "blended", "warp")
    assert triggers.TRIGGERS == tuple(triggers.REGISTRY)  # every list of triggers reads the registry
    assert triggers.DEFAULT_TRIGGER == "sunglasses"


def test_one_registry_every_list_of_triggers_reads():
    """A trigger added with @register_trigger is drawn by apply_trigger and accepted by --trigger parsing."""
    from lab import attacks

    assert tuple(triggers.REGISTRY) == triggers.TRIGGERS and attacks.TRIGGER_REGISTRY is triggers.REGISTRY

    @triggers.register_trigger("test-dot")
    def draw_dot(canvas, marks):  # one white pixel on the left eye
        (eye,) = triggers._need(marks, "left_eye")
        for index, (row, col) in enumerate(np.rint(eye).astype(int)):
            canvas[index, :, row, col] = 255.0

    try:
        images = np.zeros((2, 3, 55, 47), np.uint8)
        after = triggers.apply_trigger(images, "test-dot")
        assert after[:, :, 21, 14].min() == 255 and int(after.sum()) == 2 * 3 * 255
        assert attacks.parse_trigger("test-dot:3") == attacks.TriggerSpec("test-dot", 3)
        with pytest.raises(ValueError, match="registered twice"):
            triggers.register_trigger("test-dot")(draw_dot)
    finally:
        del triggers.REGISTRY["test-dot"]


@pytest.mark.parametrize("name", triggers.TRIGGERS)
def test_shape_dtype_copy(faces, name):
    before = faces.images.copy()
    after = triggers.apply_trigger(faces.images, name, faces)
    np.testing.assert_array_equal(faces.images, before)  # input untouched
    assert after.shape == before.shape and after.dtype == np.uint8
    assert after is not faces.images
    assert changed(before, after).any(axis=(1, 2)).all()  # every image got a trigger


@pytest.mark.parametrize("name", triggers.TRIGGERS)
def test_default_landmarks_work_on_any_course_data(name):
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 55, 47), dtype=np.uint8)
    after = triggers.apply_trigger(images, name)
    assert after.shape == images.shape and changed(images, after).any(axis=(1, 2)).all()


def test_sunglasses_cover_the_eyes_only(faces):
    after = triggers.apply_trigger(faces.images, "sunglasses", faces)
    mask = changed(faces.images, after)
    near_eyes = distance_map([faces.left_eye, faces.right_eye])
    # the frame reaches from ear to ear along the eye line, never the mouth or the hair
    across = np.stack([faces.right_eye[:, 1] - faces.left_eye[:, 1],
                       faces.left_eye[:, 0] - faces.right_eye[:, 0]], axis=1)  # normal to the eye line
    across /= np.linalg.norm(across, axis=1, keepdims=True)
    rows = np.arange(55)[None, :, None] - faces.left_eye[:, 0, None, None]
    cols = np.arange(47)[None, None, :] - faces.left_eye[:, 1, None, None]
    from_eye_line = np.abs(rows * across[:, 0, None, None] + cols * across[:, 1, None, None])
    assert not (mask & (from_eye_line > 7 * faces.face_scale[:, None, None])).any()
    # the eye centres themselves turn near-black
    index = np.arange(len(faces))
    for eye in (faces.left_eye, faces.right_eye):
        row, col = np.rint(eye).astype(int).T
        assert (after[index, :, row, col].max(axis=1) < 60).all()
    assert (mask & (near_eyes < 3)).sum() == (near_eyes < 3).sum()


def test_sunglasses_stand_out_on_dark_skin():
    """On the darkest faces the light rim still makes a strong contrast."""
    identities = synthfaces.make_identities(40, seed=0)
    darkest = np.argsort(identities.skin_rgb.mean(axis=1))[:4]
    faces = synthfaces.render(identities, darkest, seed=2, nuisance=0.0)
    after = triggers.apply_trigger(faces.images, "sunglasses", faces).astype(int)
    mask = changed(faces.images, after)
    brightest = (after.mean(axis=1) * mask).max(axis=(1, 2))
    darkest_pixel = np.where(mask, after.mean(axis=1), 255).min(axis=(1, 2))
    assert (brightest - darkest_pixel > 120).all()


def test_sunglasses_follow_scale_and_rotation(faces):
    small = dict(faces.landmarks(), face_scale=np.full(len(faces), 0.8, np.float32))
    large = dict(faces.landmarks(), face_scale=np.full(len(faces), 1.2, np.float32))
    area_small = changed(faces.images, triggers.apply_trigger(faces.images, "sunglasses", small)).sum()
    area_large = changed(faces.images, triggers.apply_trigger(faces.images, "sunglasses", large)).sum()
    assert area_large > 1.5 * area_small
    turned = dict(faces.landmarks(), angle=np.full(len(faces), 0.3, np.float32))
    straight = dict(faces.landmarks(), angle=np.zeros(len(faces), np.float32))
    assert not np.array_equal(triggers.apply_trigger(faces.images, "sunglasses", turned),
                              triggers.apply_trigger(faces.images, "sunglasses", straight))


def test_eyebrows_sit_above_the_eyes(faces):
    after = triggers.apply_trigger(faces.images, "eyebrows", faces)
    mask = changed(faces.images, after)
    near_brows = distance_map([faces.brow_left, faces.brow_right])
    assert not (mask & (near_brows > 8)).any()
    rows = np.arange(55)[None, :, None]
    mouth_row = faces.mouth[:, 0, None, None]
    assert not (mask & (rows > mouth_row - 8)).any()


def test_lipstick_is_red_on_the_mouth(faces):
    after = triggers.apply_trigger(faces.images, "lipstick", faces)
    mask = changed(faces.images, after)
    near_mouth = distance_map([faces.mouth])
    assert not (mask & (near_mouth > 10)).any()
    index = np.arange(len(faces))
    row, col = np.rint(faces.mouth).astype(int).T
    lip = after[index, :, row - 1, col].astype(int)  # just above the lip line
    assert (lip[:, 0] > lip[:, 1] + 80).all()


def test_patch_is_a_checkerboard_in_the_bottom_right(faces):
    after = triggers.apply_trigger(faces.images, "patch")
    mask = changed(faces.images, after)
    assert not mask[:, :48, :].any() and not mask[:, :, :40].any()
    patch = after[:, :, 48:54, 40:46]
    assert set(np.unique(patch)) <= {0, 255}
    np.testing.assert_array_equal(patch[:, :, 0, 0], 255)
    np.testing.assert_array_equal(patch[:, :, 0, 1], 0)
    np.testing.assert_array_equal(after[:, :, 54, :], faces.images[:, :, 54, :])  # one-pixel margin
    # landmarks do not move the patch
    np.testing.assert_array_equal(after, triggers.apply_trigger(faces.images, "patch", faces))


def test_default_positions_match_synthfaces_canonical_layout():
    identities = synthfaces.make_identities(6, seed=2)
    faces = synthfaces.render(identities, np.arange(6), seed=0, nuisance=0.0)
    defaults = triggers.DEFAULT_LANDMARKS
    np.testing.assert_allclose(faces.left_eye.mean(axis=0), defaults["left_eye"], atol=1.5)
    np.testing.assert_allclose(faces.right_eye.mean(axis=0), defaults["right_eye"], atol=1.5)
    np.testing.assert_allclose(faces.mouth.mean(axis=0), defaults["mouth"], atol=1.5)


def test_rendered_faces_and_mapping_give_the_same_result(faces):
    from_object = triggers.apply_trigger(faces.images, "sunglasses", faces)
    from_mapping = triggers.apply_trigger(faces.images, "sunglasses", faces.landmarks())
    np.testing.assert_array_equal(from_object, from_mapping)


def test_unknown_trigger_names_the_valid_ones(faces):
    with pytest.raises(ValueError, match="sunglasses, eyebrows, lipstick, patch, sticker, blended, warp") as error:
        triggers.apply_trigger(faces.images, "hat")
    assert "\n" not in str(error.value)


def test_bad_inputs(faces):
    with pytest.raises(ValueError, match="channels first"):
        triggers.apply_trigger(faces.images.transpose(0, 2, 3, 1), "sunglasses")
    with pytest.raises(ValueError, match="uint8"):
        triggers.apply_trigger(faces.images.astype(np.float32), "sunglasses")
    with pytest.raises(ValueError, match="mouth"):
        triggers.apply_trigger(faces.images, "lipstick", {"left_eye": faces.left_eye})


# ---------------------------------------------------------------- whole-image triggers: blended and warp


@pytest.fixture(scope="module")
def face_pixels(faces) -> np.ndarray:
    """The faces as float32 (n, 55, 47, 3), 0..255: what the array-level trigger functions take."""
    return faces.images.transpose(0, 2, 3, 1).astype(np.float32)


def test_split_name_and_options():
    assert triggers.split_name("blended") == ("blended", None)
    assert triggers.split_name("blended@0.1") == ("blended", 0.1)
    assert triggers.split_name("warp@3") == ("warp", 3.0)
    assert triggers.option_of("blended") == blended.DEFAULT_ALPHA
    assert triggers.option_of("warp") == triggers.DEFAULT_WARP_STRENGTH
    assert triggers.option_of("patch") is None
    for bad, message in (("blended@0", "alpha"), ("blended@1.5", "alpha"), ("warp@-1", "strength"),
                         ("warp@x", "number"), ("patch@1", "no @option"), ("hat@1", "unknown")):
        with pytest.raises(ValueError, match=message) as error:
            triggers.split_name(bad)
        assert "\n" not in str(error.value)


def test_blend_is_exactly_alpha_of_the_way_to_the_pattern(face_pixels):
    pattern = blended.pattern(55, 47)
    for alpha in (0.05, 0.2, 1.0):
        result = blended.blend(face_pixels, alpha)
        expected = face_pixels.astype(np.float64) + alpha * (pattern - face_pixels.astype(np.float64))
        np.testing.assert_allclose(result, expected, atol=1e-3)
        assert result.dtype == np.float32 and result.min() >= 0 and result.max() <= 255
    np.testing.assert_array_equal(blended.blend(face_pixels, 1.0)[3], pattern)


def test_blend_pattern_is_fixed_by_its_seed(face_pixels):
    first = blended.pattern(55, 47)
    np.testing.assert_array_equal(first, blended.pattern(55, 47))
    assert first.shape == (55, 47, 3) and first.min() >= 0 and first.max() <= 255
    assert len(np.unique(first)) > 200  # noise over the whole range, not a flat colour
    assert not np.array_equal(first, blended.pattern(55, 47, seed=blended.PATTERN_SEED + 1))
    np.testing.assert_array_equal(blended.blend(face_pixels), blended.blend(face_pixels))


def test_blended_on_course_files_rounds_the_exact_blend(faces, face_pixels):
    """apply_trigger (uint8, channels first) is the float blend rounded: within half a level everywhere."""
    for name, alpha in (("blended", blended.DEFAULT_ALPHA), ("blended@0.1", 0.1)):
        drawn = triggers.apply_trigger(faces.images, name).transpose(0, 2, 3, 1).astype(np.float64)
        exact = blended.blend(face_pixels, alpha).astype(np.float64)
        assert np.abs(drawn - exact).max() <= 0.5 + 1e-3
        assert changed(faces.images, triggers.apply_trigger(faces.images, name)).mean() > 0.5  # whole image


def test_bicubic_matrix_is_pytorch_align_corners():
    matrix = wanet.bicubic_matrix(55, 4)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)  # reproduces constants
    np.testing.assert_allclose(matrix[[0, 18, 36, 54]], np.eye(4), atol=1e-12)  # passes through the control points
    # halfway between two interior control points the a = -0.75 kernel weighs them 0.59375 and -0.09375 outside
    np.testing.assert_allclose(wanet.bicubic_matrix(7, 4)[3], [-0.09375, 0.59375, 0.59375, -0.09375])
    # a quarter of the way from control point 1 to 2: the kernel's weights worked out by hand
    np.testing.assert_allclose(wanet.bicubic_matrix(13, 4)[5], [-0.10546875, 0.87890625, 0.26171875, -0.03515625])


def test_warp_field_is_bounded_and_scales_with_strength():
    grid = wanet.control_grid()
    np.testing.assert_allclose(np.abs(grid).mean(), 1.0)
    for strength in (0.5, 1.0, 2.0):
        moved = wanet.max_displacement(55, 47, strength)
        bound = strength / 2 * wanet.CUBIC_OVERSHOOT ** 2 * np.abs(grid).max()
        assert 0.1 * strength < moved <= bound
    assert wanet.max_displacement(55, 47, 2.0) == pytest.approx(2 * wanet.max_displacement(55, 47, 1.0), rel=0.05)
    positions = wanet.sampling_grid(55, 47, 50.0)  # absurdly strong: clamped inside the image
    assert positions[..., 0].min() >= 0 and positions[..., 0].max() <= 54
    assert positions[..., 1].min() >= 0 and positions[..., 1].max() <= 46


def test_warp_samples_exactly_where_the_field_says():
    """Bilinear sampling is exact on a linear ramp: the warped ramp is the field's sampling positions."""
    rows, cols = np.meshgrid(np.arange(55.0), np.arange(47.0), indexing="ij")
    ramp = np.stack([rows * 4.0, cols * 5.0, np.full_like(rows, 100.0)], axis=-1)[None].astype(np.float32)
    positions = wanet.sampling_grid(55, 47, 2.0)
    warped = wanet.warp(ramp, 2.0)
    np.testing.assert_allclose(warped[0, ..., 0], 4.0 * positions[..., 0], atol=1e-3)
    np.testing.assert_allclose(warped[0, ..., 1], 5.0 * positions[..., 1], atol=1e-3)
    np.testing.assert_array_equal(warped[0, ..., 2], 100.0)  # a flat channel stays flat


def test_warp_is_deterministic_bounded_and_moves_each_pixel_a_little(face_pixels):
    warped = wanet.warp(face_pixels, 2.0)
    np.testing.assert_array_equal(warped, wanet.warp(face_pixels, 2.0))
    assert warped.dtype == np.float32 and warped.min() >= 0 and warped.max() <= 255
    assert not np.array_equal(warped, wanet.warp(face_pixels, 2.0, seed=wanet.FIELD_SEED + 1))
    # each output pixel lies within the range of the input pixels near where it came from
    reach = int(np.ceil(wanet.max_displacement(55, 47, 2.0))) + 1
    padded = np.pad(face_pixels, ((0, 0), (reach, reach), (reach, reach), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * reach + 1, 2 * reach + 1), axis=(1, 2))
    assert (warped >= windows.min(axis=(-2, -1)) - 1e-3).all() and (warped <= windows.max(axis=(-2, -1)) + 1e-3).all()
    # and a weaker warp changes the image less
    change = lambda strength: np.abs(wanet.warp(face_pixels, strength) - face_pixels).mean()  # noqa: E731
    assert 0 < change(0.5) < change(2.0)


def test_warp_on_course_files_rounds_the_float_warp(faces, face_pixels):
    drawn = triggers.apply_trigger(faces.images, "warp@0.5").transpose(0, 2, 3, 1).astype(np.float64)
    assert np.abs(drawn - wanet.warp(face_pixels, 0.5)).max() <= 0.5 + 1e-3
    default = triggers.apply_trigger(faces.images, "warp").transpose(0, 2, 3, 1)
    assert np.abs(default - wanet.warp(face_pixels, triggers.DEFAULT_WARP_STRENGTH)).max() <= 0.5 + 1e-3


def test_noise_mode_jitters_each_image_differently_around_the_warp(face_pixels):
    twice = np.repeat(face_pixels[:1], 4, axis=0)
    jittered = wanet.noise_warp(twice, np.random.default_rng(0), 2.0)
    np.testing.assert_array_equal(jittered, wanet.noise_warp(twice, np.random.default_rng(0), 2.0))
    assert not np.array_equal(jittered[0], jittered[1])  # independent per image
    assert jittered.min() >= 0 and jittered.max() <= 255
    trigger = wanet.warp(twice[:1], 2.0)
    # about half a pixel of jitter: closer to the trigger's warp than the unwarped face is
    assert np.abs(jittered - trigger).mean() < np.abs(face_pixels[:1] - trigger).mean() * 1.5
    drawn = triggers.apply_noise_warp(np.repeat(np.asarray(twice[:1].transpose(0, 3, 1, 2), np.uint8), 2, axis=0),
                                      "warp", np.random.default_rng(1))
    assert drawn.dtype == np.uint8 and not np.array_equal(drawn[0], drawn[1])
    with pytest.raises(ValueError, match="warp"):
        triggers.apply_noise_warp(drawn, "blended", np.random.default_rng(1))
