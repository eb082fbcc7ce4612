"""SynthFaces: deterministic, course-format images with landmarks, distinguishable identities."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lab.synthetic import synthfaces


@pytest.fixture(scope="module")
def identities():
    return synthfaces.make_identities(20, seed=3)


@pytest.fixture(scope="module")
def faces(identities):
    index = np.repeat(np.arange(len(identities)), 6)
    return synthfaces.render(identities, index, seed=11)


def test_identities_are_deterministic_and_prefix_stable():
    first = synthfaces.make_identities(12, seed=5)
    again = synthfaces.make_identities(12, seed=5)
    longer = synthfaces.make_identities(15, seed=5)
    other = synthfaces.make_identities(12, seed=6)
    assert len(first) == 12 and len(longer) == 15
    for field in dataclasses.fields(synthfaces.Identities):
        if field.name == "seed":
            continue
        values = getattr(first, field.name)
        assert values.shape[0] == 12
        np.testing.assert_array_equal(values, getattr(again, field.name))
        np.testing.assert_array_equal(values, getattr(longer, field.name)[:12])
    assert not np.array_equal(first.skin_rgb, other.skin_rgb)


def test_trait_ranges(identities):
    for name in ("skin_rgb", "hair_rgb", "iris_rgb", "lip_rgb", "background_rgb", "shirt_rgb"):
        colours = getattr(identities, name)
        assert colours.shape == (len(identities), 3)
        assert colours.min() >= 0 and colours.max() <= 255, name
    assert set(identities.hair_style) <= set(range(len(synthfaces.HAIR_STYLES)))
    assert set(identities.beard_style) <= set(range(len(synthfaces.BEARD_STYLES)))


def test_skin_tones_span_light_to_dark():
    skin = synthfaces.make_identities(60, seed=0).skin_rgb.mean(axis=1)
    assert skin.min() < 90 and skin.max() > 190


def test_render_shapes_dtypes_ranges(faces, identities):
    n = 6 * len(identities)
    assert faces.images.shape == (n, 3, 55, 47) and faces.images.dtype == np.uint8
    assert len(faces) == n
    for name in ("left_eye", "right_eye", "mouth", "brow_left", "brow_right"):
        points = getattr(faces, name)
        assert points.shape == (n, 2) and points.dtype == np.float32
        assert (points[:, 0] >= 0).all() and (points[:, 0] < 55).all()
        assert (points[:, 1] >= 0).all() and (points[:, 1] < 47).all()
    assert faces.face_scale.shape == (n,) and faces.angle.shape == (n,)
    assert 0.7 < faces.face_scale.min() and faces.face_scale.max() < 1.4
    assert np.abs(faces.angle).max() < 0.5
    # images use the value range, not a sliver of it
    assert faces.images.min() < 40 and faces.images.max() > 215


def test_landmarks_are_anatomically_ordered(faces):
    assert (faces.left_eye[:, 1] < faces.right_eye[:, 1]).all()
    assert (faces.brow_left[:, 0] < faces.left_eye[:, 0]).all()
    assert (faces.mouth[:, 0] > faces.left_eye[:, 0] + 10).all()
    eye_distance = np.hypot(*(faces.right_eye - faces.left_eye).T)
    np.testing.assert_allclose(eye_distance / faces.face_scale, 17, atol=2.5)


def test_no_nuisance_gives_canonical_landmarks(identities):
    faces = synthfaces.render(identities, np.arange(len(identities)), seed=0, nuisance=0.0)
    np.testing.assert_allclose(faces.face_scale, 1.0)
    np.testing.assert_allclose(faces.angle, 0.0)
    np.testing.assert_allclose(faces.left_eye[:, 0], synthfaces.EYE_ROW, atol=0.81)
    np.testing.assert_allclose(faces.left_eye[:, 1] + faces.right_eye[:, 1],
                               2 * synthfaces.FACE_CENTER_COL, atol=1e-4)


def test_eyes_are_drawn_where_the_landmarks_say(identities):
    """Around an eye landmark, white and pupil give strong contrast; on the cheek there is none."""
    faces = synthfaces.render(identities, np.arange(len(identities)), seed=2, nuisance=0.0)
    luminance = faces.images.astype(np.float32).mean(axis=1)

    def contrast(points, row_offset):
        ranges = []
        for image, (row, col) in zip(luminance, np.rint(points).astype(int)):
            window = image[row + row_offset - 1:row + row_offset + 2, col - 3:col + 4]
            ranges.append(window.max() - window.min())
        return np.array(ranges)

    for eye in (faces.left_eye, faces.right_eye):
        assert (contrast(eye, 0) > 80).all()
        assert (contrast(eye, 8) < 40).all()  # the cheek below


def test_render_is_deterministic(identities):
    index = np.array([0, 3, 3, 7, 19])
    first = synthfaces.render(identities, index, seed=4)
    again = synthfaces.render(identities, index, seed=4)
    other = synthfaces.render(identities, index, seed=5)
    assert first.images.tobytes() == again.images.tobytes()
    np.testing.assert_array_equal(first.left_eye, again.left_eye)
    assert (first.images != other.images).mean() > 0.5


def test_chunking_does_not_change_images(identities, monkeypatch):
    index = np.arange(40) % len(identities)
    whole = synthfaces.render(identities, index, seed=8)
    monkeypatch.setattr(synthfaces, "_CHUNK", 7)
    chunked = synthfaces.render(identities, index, seed=8)
    assert whole.images.tobytes() == chunked.images.tobytes()
    np.testing.assert_array_equal(whole.mouth, chunked.mouth)
    # an image depends on (seed, position) only: a prefix renders the same
    prefix = synthfaces.render(identities, index[:10], seed=8)
    assert prefix.images.tobytes() == whole.images[:10].tobytes()


def test_nuisance_strength_controls_variation(identities):
    index = np.zeros(12, dtype=int)
    calm = synthfaces.render(identities, index, seed=1, nuisance=0.0).images.astype(float)
    default = synthfaces.render(identities, index, seed=1).images.astype(float)
    assert calm.std(axis=0).mean() == 0.0  # no nuisance: every image of an identity is the same
    assert default.std(axis=0).mean() > 10


def test_identities_are_distinguishable(faces, identities):
    """Mean images differ more between identities than images within one identity."""
    images = faces.images.astype(np.float32).reshape(len(identities), 6, -1)
    means = images.mean(axis=1)
    within = np.sqrt(((images - means[:, None]) ** 2).mean(axis=2)).mean()
    distance = np.sqrt(((means[:, None] - means[None]) ** 2).mean(axis=2))
    between = distance[~np.eye(len(identities), dtype=bool)]
    assert np.median(between) > within
    assert between.min() > 0.35 * within  # no two identities collapse onto one


def test_no_near_twin_identities():
    identities = synthfaces.make_identities(100, seed=0)
    vectors = np.stack([synthfaces._trait_vector({f.name: getattr(identities, f.name)[i]
                                                  for f in dataclasses.fields(identities)
                                                  if f.name != "seed"})
                        for i in range(len(identities))])
    distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    assert distance.min() > 1.5


def test_empty_render(identities):
    faces = synthfaces.render(identities, np.zeros(0, dtype=int), seed=0)
    assert faces.images.shape == (0, 3, 55, 47) and faces.left_eye.shape == (0, 2)


@pytest.mark.parametrize("index, message", [
    (np.array([0, 20]), "0..19"),
    (np.array([-1]), "0..19"),
    (np.array([[0, 1]]), "1-d integer"),
    (np.array([0.5]), "1-d integer"),
])
def test_bad_identity_index(identities, index, message):
    with pytest.raises(ValueError, match=message):
        synthfaces.render(identities, index, seed=0)


def test_bad_arguments(identities):
    with pytest.raises(ValueError, match="nuisance"):
        synthfaces.render(identities, np.array([0]), seed=0, nuisance=-1)
    with pytest.raises(ValueError, match="at least 1"):
        synthfaces.make_identities(0, seed=0)


def test_progress_bar_renders_the_same(identities, capsys):
    index = np.arange(5)
    plain = synthfaces.render(identities, index, seed=3)
    with_bar = synthfaces.render(identities, index, seed=3, progress=True)
    assert plain.images.tobytes() == with_bar.images.tobytes()
