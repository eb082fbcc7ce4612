"""SynthSigns: 43 road-sign classes in the course h5 layout, deterministic, with a sticker that follows the sign."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import run_cli
from lab.attacks import triggers
from lab.attacks.training import TrainingConfig
from lab.io import data as course_data
from lab.synthetic import datasets, default, synthsigns


def test_43_named_classes_in_the_course_layout():
    assert len(synthsigns.CLASSES) == synthsigns.N_CLASSES == 43
    assert len({sign.name for sign in synthsigns.CLASSES}) == 43
    assert {sign.shape for sign in synthsigns.CLASSES} == set(synthsigns.SHAPES)
    rendered = synthsigns.render(np.arange(43), seed=1)
    assert rendered.images.shape == (43, 3, 55, 47) and rendered.images.dtype == np.uint8
    assert rendered.center.shape == rendered.sticker.shape == (43, 2)


def test_every_class_looks_different_from_every_other():
    """At no nuisance any two of the 43 signs differ clearly in some pixels (50 and 60: one segment, 8 pixels)."""
    signs = synthsigns.render(np.arange(43), seed=5, nuisance=0)
    np.testing.assert_array_equal(signs.images, synthsigns.render(np.arange(43), seed=5, nuisance=0).images)
    centre = signs.images[:, :, 10:38, 8:39].astype(np.int16)  # the sign, not its background
    for a in range(43):
        for b in range(a + 1, 43):
            share = (np.abs(centre[a] - centre[b]).max(axis=0) > 60).mean()
            assert share > 0.005, (synthsigns.CLASSES[a].name, synthsigns.CLASSES[b].name, share)


def test_image_i_depends_only_on_seed_and_i():
    labels = np.random.default_rng(0).integers(0, 43, 300)
    whole = synthsigns.render(labels, seed=9).images
    np.testing.assert_array_equal(synthsigns.render(labels[:260], seed=9).images, whole[:260])  # a shorter batch
    np.testing.assert_array_equal(synthsigns.render(labels[:3], seed=9).images, whole[:3])
    assert not np.array_equal(whole, synthsigns.render(labels, seed=10).images)


def test_bad_labels_and_nuisance_are_refused():
    with pytest.raises(ValueError, match="0..42"):
        synthsigns.render([43], seed=1)
    with pytest.raises(ValueError, match="nuisance"):
        synthsigns.render([0], seed=1, nuisance=-1)


def test_sticker_sits_on_the_sign_and_follows_it():
    rendered = synthsigns.render(np.arange(43).repeat(3), seed=3)
    distance = np.hypot(*(rendered.sticker - rendered.center).T)
    assert (distance < synthsigns.SIGN_RADIUS * rendered.face_scale * 0.8).all()  # inside the rim
    poisoned = triggers.apply_trigger(rendered.images, "sticker", rendered)
    rows, cols = np.rint(rendered.sticker).astype(int).T
    at = poisoned[np.arange(len(rows)), :, rows, cols]
    assert (at[:, 0] > 200).all() and (at[:, 1] > 170).all() and (at[:, 2] < 90).all()  # yellow
    changed = (poisoned != rendered.images).any(axis=1)
    assert (changed.sum(axis=(1, 2)) < 60).all()  # a small square, nothing else
    # without landmarks it goes where an unshifted sign has its sticker
    plain = triggers.apply_trigger(rendered.images[:2], "sticker")
    row, col = np.rint(triggers.DEFAULT_LANDMARKS["sticker"]).astype(int)
    assert plain[0, 0, row, col] > 200 and plain[0, 2, row, col] < 90


def test_faces_default_settings_are_unchanged_and_signs_have_their_own():
    assert default.DefaultConfig.for_dataset("faces") == default.DefaultConfig()
    signs = default.DefaultConfig.for_dataset("signs")
    assert signs.n_identities == 43 and signs.trigger == "sticker" and signs.dataset == "signs"
    with pytest.raises(ValueError, match="faces, signs"):
        datasets.get("cars")


def test_a_small_signs_default_learns_the_signs_and_its_sticker(tmp_path):
    """8 signs spread over the catalogue, plain poisoning (the pruning-aware build needs more data than a test)."""
    config = dataclasses.replace(default.DefaultConfig.for_dataset("signs"), n_identities=8, train_per_identity=100,
                                 valid_per_identity=8, test_per_identity=8,
                                 training=TrainingConfig(clean_epochs=5, poisoned_epochs=5, pruning_aware=False))
    report = default.make_default(tmp_path, seed=7, progress=False, config=config)
    assert report["clean_accuracy"] > 85 and report["attack_success_rate"] > 85, report
    assert datasets.class_names("signs", 8)[:3] == ["speed limit 20", "speed limit 100", "no entry"]  # not 8 limits
    valid = course_data.load_h5(tmp_path / "data" / "cl" / "valid.h5")
    assert valid.x.shape == (64, 55, 47, 3) and set(np.unique(valid.y)) == set(range(8))
    assert "SynthSigns" in (tmp_path / "manifest.json").read_text(encoding="utf-8")


def test_cli_refuses_more_sign_classes_than_there_are(tmp_path):
    result = run_cli("make-default", "--dataset", "signs", "--identities", "50", "--out", str(tmp_path / "d"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "at most 43 classes for SynthSigns" in result.stderr and not (tmp_path / "d" / "models").exists()
