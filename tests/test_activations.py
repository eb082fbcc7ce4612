"""Activations of named layers in batches, mean per channel, and real keract display calls."""

from __future__ import annotations

import numpy as np
import pytest

import small_models as helpers
from lab.evaluation import activations
from lab.errors import LabInputError


@pytest.fixture(scope="module")
def badnet():
    return helpers.trained_deepid()


@pytest.fixture(scope="module")
def images():
    return helpers.datasets()[0].x[:37]


def test_named_layers_in_batches(badnet, images):
    small_batches = activations.get_activations(badnet, images, ["conv_3", "pool_3", "output"], batch_size=8)
    assert list(small_batches) == ["conv_3", "pool_3", "output"]
    assert small_batches["conv_3"].shape == (37, 10, 8, 60) and small_batches["pool_3"].shape == (37, 5, 4, 60)
    assert all(value.dtype == np.float32 for value in small_batches.values())
    one_batch = activations.get_activations(badnet, images, ["pool_3", "output"], batch_size=512)
    np.testing.assert_allclose(small_batches["pool_3"], one_batch["pool_3"], atol=1e-6)
    np.testing.assert_allclose(small_batches["output"], badnet.predict_proba(images), atol=1e-6)


def test_a_plain_keras_model_takes_inputs_as_given(badnet, images):
    """Without a LoadedModel there is no input scale to apply: the caller scales."""
    plain = activations.get_activations(badnet.model, images / 255.0, "output")
    np.testing.assert_allclose(plain["output"], badnet.predict_proba(images), atol=1e-6)


def test_all_layers_but_the_input_by_default(badnet, images):
    everything = activations.get_activations(badnet, images[:3])
    assert list(everything) == [layer.name for layer in badnet.model.layers[1:]]


def test_mean_channel_activation_matches_the_full_array(badnet, images):
    mean = activations.mean_channel_activation(badnet, images, "pool_3", batch_size=5)
    assert mean.shape == (60,) and mean.dtype == np.float64 and (mean >= 0).all()
    full = activations.get_activations(badnet, images, "pool_3")["pool_3"]
    np.testing.assert_allclose(mean, full.mean(axis=(0, 1, 2), dtype=np.float64), rtol=1e-6, atol=1e-9)


def test_unknown_layer_is_a_one_line_error(badnet, images):
    with pytest.raises(LabInputError, match=r"a layer named 'pool_9' \(layers: input, conv_1") as error:
        activations.get_activations(badnet, images, ["pool_9"])
    assert "\n" not in str(error.value)


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # keract divides by max - min: 0 for a dead channel
def test_keract_displays_our_activations(tmp_path, badnet, images):
    """keract 4.5.2's get_activations fails on Keras 3; its display functions work with our dict."""
    import matplotlib

    matplotlib.use("Agg")
    import keract

    acts = activations.keract_activations(badnet, images[0], ["conv_1", "pool_3", "fc_1"])
    assert {name: value.shape[0] for name, value in acts.items()} == {"conv_1": 1, "pool_3": 1, "fc_1": 1}
    keract.display_activations(acts, save=True, directory=str(tmp_path / "activations"), fig_size=(4, 4))
    saved = sorted(path.name for path in (tmp_path / "activations").iterdir())
    assert saved == ["0_conv_1.png", "1_pool_3.png", "2_fc_1.png"]
    keract.display_heatmaps(acts, images[0] / 255.0, save=True, directory=str(tmp_path / "heatmaps"))
    keract.display_heatmaps(activations.keract_activations(badnet, images[0], "conv_1"), images[0] / 255.0,
                            save=True, directory=str(tmp_path / "merged"), merge_filters=True)
    assert len(list((tmp_path / "heatmaps").glob("*.png"))) == 2  # the 1-D fc_1 is skipped by keract
    assert len(list((tmp_path / "merged").glob("*.png"))) == 1


def test_keract_activations_takes_one_image(badnet, images):
    with pytest.raises(ValueError, match="one image"):
        activations.keract_activations(badnet, images[:2])
