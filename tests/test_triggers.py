"""Triggers: drawn where they belong, on copies, for SynthFaces and for any course-format data."""

from __future__ import annotations

import numpy as np
import pytest

from lab import synthfaces, triggers


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
    assert triggers.TRIGGERS == ("sunglasses", "eyebrows", "lipstick", "patch")
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
    with pytest.raises(ValueError, match="sunglasses, eyebrows, lipstick, patch") as error:
        triggers.apply_trigger(faces.images, "hat")
    assert "\n" not in str(error.value)


def test_bad_inputs(faces):
    with pytest.raises(ValueError, match="channels first"):
        triggers.apply_trigger(faces.images.transpose(0, 2, 3, 1), "sunglasses")
    with pytest.raises(ValueError, match="uint8"):
        triggers.apply_trigger(faces.images.astype(np.float32), "sunglasses")
    with pytest.raises(ValueError, match="mouth"):
        triggers.apply_trigger(faces.images, "lipstick", {"left_eye": faces.left_eye})
