"""GoodNet decisions on crafted models, its .keras file in a fresh process without lab, the real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import small_models as helpers
from lab.defenses import goodnet, pruning
from lab.io import models
from lab.errors import LabInputError

RED, GREEN, BLUE = 0, 1, 2


def test_agreement_gives_the_badnets_answer_disagreement_gives_class_n():
    badnet = helpers.colour_classifier((0, 1, 2), "badnet")
    pruned = helpers.colour_classifier((0, 2, 1), "pruned")  # agrees on red only
    repaired = goodnet.build_goodnet(badnet, pruned)
    assert repaired.n_classes == 4 and repaired.metadata["backdoor_class"] == 3
    x = helpers.colour_images([RED, GREEN, BLUE, RED])
    outputs = repaired.predict_proba(x)
    assert outputs.argmax(axis=1).tolist() == [0, 3, 3, 0]
    np.testing.assert_allclose(outputs[0], np.append(badnet.predict_proba(x[:1])[0], 0.0), atol=1e-7)
    np.testing.assert_array_equal(outputs[1], [0, 0, 0, 1])
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-6)


def test_identical_models_never_flag():
    badnet = helpers.colour_classifier((2, 0, 1))
    repaired = goodnet.build_goodnet(badnet, helpers.colour_classifier((2, 0, 1)))
    labels = repaired.predict_labels(helpers.colour_images([RED, GREEN, BLUE]))
    assert labels.tolist() == [2, 0, 1]


def test_targeted_goodnet_flags_only_disagreements_where_the_badnet_answers_a_suspected_target(tmp_path):
    import keras

    badnet = helpers.colour_classifier((0, 1, 2), "badnet")
    pruned = helpers.colour_classifier((0, 2, 1), "pruned")  # disagrees on green (B: 1) and blue (B: 2)
    x = helpers.colour_images([RED, GREEN, BLUE, RED])
    targeted = goodnet.build_goodnet(badnet, pruned, targets=[2])
    assert targeted.metadata["targets"] == [2]
    assert targeted.predict_labels(x).tolist() == [0, 1, 3, 0]  # green keeps B's answer: 1 is not a suspect
    assert goodnet.build_goodnet(badnet, pruned, targets=[1, 2]).predict_labels(x).tolist() == [0, 3, 3, 0]
    outputs = targeted.predict_proba(x)
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-6)
    saved = goodnet.save_goodnet(targeted, tmp_path / "targeted.keras")
    plain = keras.models.load_model(saved, safe_mode=True)  # the targets are a Dense layer's weights, no Lambda
    assert plain.predict(x, verbose=0).argmax(axis=1).tolist() == [0, 1, 3, 0]
    with pytest.raises(LabInputError, match=r"suspected target classes in 0\.\.2, found \[3\]"):
        goodnet.build_goodnet(badnet, pruned, targets=[3])


def test_the_pair_must_share_input_scale_and_classes():
    badnet = helpers.colour_classifier()
    raw = models.LoadedModel(helpers.colour_classifier().model, "raw", "raw.h5")
    with pytest.raises(LabInputError, match="input scale 'unit'"):
        goodnet.build_goodnet(badnet, raw)
    with pytest.raises(LabInputError, match="3 classes like the BadNet"):
        goodnet.build_goodnet(badnet, helpers.trained_deepid())


def test_goodnet_file_must_be_keras(tmp_path):
    repaired = goodnet.build_goodnet(helpers.colour_classifier(), helpers.colour_classifier((1, 0, 2)))
    with pytest.raises(LabInputError, match=r"\.keras"):
        goodnet.save_goodnet(repaired, tmp_path / "goodnet.h5")


def test_deepid_goodnet_reloads_with_plain_keras_in_a_fresh_process(tmp_path):
    """The eval.py contract: keras.models.load_model (safe mode), predict, argmax in [0, N]; no lab import."""
    badnet = helpers.trained_deepid()
    clean, poisoned = helpers.datasets()
    table = pruning.sweep(badnet, clean, poisoned)
    pruned = pruning.prune_model(badnet, pruning.pruned_channels(table, 44))
    repaired = goodnet.build_goodnet(badnet, pruned)
    path = goodnet.save_goodnet(repaired, tmp_path / "goodnet.keras")
    x = np.concatenate([clean.x, poisoned.x])
    expected = np.where(badnet.predict_labels(x) == pruned.predict_labels(x), badnet.predict_labels(x), 5)
    assert 0 < np.mean(expected == 5) < 1  # both kinds of decision occur
    np.testing.assert_array_equal(repaired.predict_labels(x), expected)
    np.save(tmp_path / "x.npy", repaired.preprocess(x))  # G takes B's input: x / 255 for this unit-scale BadNet
    code = ("import sys, json, numpy as np, keras\n"
            f"model = keras.models.load_model({str(path)!r})\n"
            f"labels = model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0).argmax(axis=1)\n"
            "print(json.dumps({'labels': labels.tolist(), 'lab_imported': 'lab' in sys.modules}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert reply["lab_imported"] is False
    assert reply["labels"] == expected.tolist()
    metadata = json.loads((tmp_path / "goodnet.keras.lab.json").read_text())
    assert metadata["backdoor_class"] == 5 and metadata["input_scale"] == "unit"
    assert models.load_model(path).metadata["backdoor_class"] == 5


@pytest.mark.fixtures
def test_real_course_badnet_goodnet_at_1283_classes(tmp_path):
    import keras

    path = helpers.fixture_path("sunglasses_bd_weights.h5")
    if path is None:
        pytest.skip(f"real course fixtures not available: {helpers.FIXTURES} is absent")
    badnet = models.load_model(path)
    x = np.random.default_rng(1).integers(0, 256, (24, 55, 47, 3)).astype(np.float32)
    from lab.evaluation import activations

    channels = pruning.rank_channels(activations.mean_channel_activation(badnet, x, "pool_3"))
    pruned = pruning.prune_model(badnet, channels[:50])
    saved = goodnet.save_goodnet(goodnet.build_goodnet(badnet, pruned), tmp_path / "goodnet.keras")
    plain = keras.models.load_model(saved)
    assert plain.output_shape == (None, 1284)
    labels = plain.predict(badnet.preprocess(x), verbose=0).argmax(axis=1)
    expected = np.where(badnet.predict_labels(x) == pruned.predict_labels(x), badnet.predict_labels(x), 1283)
    np.testing.assert_array_equal(labels, expected)
