"""Loading and saving models: explicit input scale, safe mode, recorded checksums, the real course files."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest

from lab.io import data, models
from lab.errors import LabInputError, RefuseOverwrite


@pytest.fixture(scope="module")
def small_model():
    import keras

    keras.utils.set_random_seed(3)
    return models.build_deepid(7, input_scale="raw")


def _pixels(n=6, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 55, 47, 3)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_saved_model_reloads_with_its_scale_and_same_predictions(tmp_path, small_model, suffix):
    path = models.save_model(small_model, tmp_path / f"net{suffix}", "raw", "a test model")
    loaded = models.load_model(path)
    assert loaded.input_scale == "raw" and "recorded in" in loaded.scale_source
    assert loaded.n_classes == 7
    expected = np.asarray(small_model(_pixels()))
    np.testing.assert_allclose(loaded.predict_proba(_pixels()), expected, atol=1e-6)
    metadata = json.loads((tmp_path / f"net{suffix}.lab.json").read_text())
    assert metadata["sha256"] == models.sha256_file(path) and metadata["description"] == "a test model"


def test_saved_h5_loads_with_plain_keras_in_a_fresh_process(tmp_path, small_model):
    """The course's eval.py contract: keras.models.load_model, predict on raw pixels, argmax."""
    path = models.save_model(small_model, tmp_path / "bd_net.h5", "raw")
    np.save(tmp_path / "x.npy", _pixels())
    code = ("import numpy as np, keras; m = keras.models.load_model(r'%s', compile=False); "
            "print([int(v) for v in np.argmax(m.predict(np.load(r'%s'), verbose=0), axis=1)])" % (path, tmp_path / "x.npy"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = list(np.argmax(np.asarray(small_model(_pixels())), axis=1))
    assert out.stdout.strip().splitlines()[-1] == str([int(v) for v in expected])


def test_refuses_to_overwrite_a_model(tmp_path, small_model):
    path = models.save_model(small_model, tmp_path / "net.keras", "raw")
    with pytest.raises(RefuseOverwrite):
        models.save_model(small_model, path, "raw")


def test_tampered_model_is_refused(tmp_path, small_model):
    path = models.save_model(small_model, tmp_path / "net.h5", "raw")
    with h5py.File(path, "a") as handle:
        handle.attrs["note"] = "changed by someone else"
    with pytest.raises(LabInputError, match="SHA-256.*changed since the lab saved it"):
        models.load_model(path)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_lambda_layers_are_refused_before_loading(tmp_path, suffix):
    import keras

    inputs = keras.Input((55, 47, 3))
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t * 2)(inputs)))
    path = tmp_path / f"evil{suffix}"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(LabInputError, match="Lambda"):
        models.load_model(path, scale="unit")


def _lambda_models():
    """Lambda layers where a text search for '"Lambda"' would look, and where it would not."""
    import keras

    def functional():
        inputs = keras.Input((55, 47, 3))
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(
            keras.layers.Lambda(lambda t: t * 2)(inputs))))

    def nested():  # a Sequential with a Lambda, inside a Functional model
        inner = keras.Sequential([keras.Input((55, 47, 3)), keras.layers.Lambda(lambda t: t + 1),
                                  keras.layers.Flatten()], name="inner")
        inputs = keras.Input((55, 47, 3))
        return keras.Model(inputs, keras.layers.Dense(3)(inner(inputs)))

    def wrapped():  # TimeDistributed(Lambda): the Lambda is the wrapper's config.layer
        inputs = keras.Input((2, 55, 47, 3))
        x = keras.layers.TimeDistributed(keras.layers.Lambda(lambda t: t * 3))(inputs)
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))

    return {"functional": functional, "nested": nested, "wrapped": wrapped}


@pytest.mark.parametrize("shape", ["functional", "nested", "wrapped"])
@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_lambda_check_parses_the_configuration_escaped_and_nested(tmp_path, suffix, shape):
    """The lab's own check finds a Lambda written as \\u004cambda, nested in a model or wrapped in a layer."""
    import json
    import zipfile

    path = tmp_path / f"evil{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _lambda_models()[shape]().save(path)
    escape = lambda text: text.replace('"Lambda"', '"\\u004cambda"')  # noqa: E731 - same JSON, no plain text
    if suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        members["config.json"] = escape(members["config.json"].decode()).encode()
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in members.items():
                archive.writestr(name, content)
        text = members["config.json"].decode()
    else:
        with h5py.File(path, "a") as handle:
            config = handle.attrs["model_config"]
            text = escape(config.decode() if isinstance(config, bytes) else config)
            handle.attrs["model_config"] = text
    assert '"Lambda"' not in text and "Lambda" in json.dumps(json.loads(text))  # the escape hides it from grep only
    with pytest.raises(LabInputError, match=r"found \S*Lambda\S* in the model configuration"):
        models._refuse_lambda(path, text)
    with pytest.raises(LabInputError, match=r"found \S*Lambda\S* in the model configuration"):
        models.load_model(path, scale="unit")


def test_lambda_check_refuses_configuration_that_is_not_json(tmp_path):
    with pytest.raises(LabInputError, match="a model configuration that is not JSON"):
        models._refuse_lambda(tmp_path / "x.h5", '{"class_name": "Lambda"')
    models._refuse_lambda(tmp_path / "x.h5", json.dumps({"class_name": "Functional", "config": {
        "layers": [{"class_name": "Dense", "config": {"name": "Lambda"}}]}}))  # a layer *named* Lambda is fine


def test_a_huge_model_configuration_is_refused_before_it_is_read(tmp_path):
    """A config.json that inflates to 17 MiB (a few kB on disk), and an h5 attribute as big: one line each,
    before any of it is read into memory."""
    import zipfile

    import h5py

    archive_path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b" " * (17 << 20))
        archive.writestr("metadata.json", b"{}")
    assert archive_path.stat().st_size < 1 << 20
    with pytest.raises(LabInputError, match="config.json fits in 16 MiB, found config.json of 17 MiB"):
        models.load_model(archive_path, scale="unit")
    h5_path = tmp_path / "bomb.h5"
    with h5py.File(h5_path, "w", libver="latest") as handle:  # dense attribute storage: no 64 kB limit
        handle.create_dataset("filler", data=np.zeros(1))
        handle.attrs.create("model_config", np.zeros(17 << 20, np.uint8))
    with pytest.raises(LabInputError, match="attributes fit in 16 MiB, found attribute 'model_config' of 17 MiB"):
        models.load_model(h5_path, scale="unit")


def test_unknown_scale_is_never_guessed(tmp_path, small_model):
    path = tmp_path / "mystery.keras"
    small_model.save(path)
    with pytest.raises(LabInputError, match="pass scale='raw'"):
        models.load_model(path)
    assert models.load_model(path, scale="unit").input_scale == "unit"


def test_data_file_given_as_model(tmp_path):
    path = data.save_h5(tmp_path / "valid.h5", np.zeros((2, 3, 55, 47), np.uint8), np.zeros(2))
    with pytest.raises(LabInputError, match="a data file"):
        models.load_model(path, scale="raw")


def test_truncated_model(tmp_path, small_model):
    path = tmp_path / "net.h5"
    small_model.save(path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(LabInputError, match="truncated or damaged"):
        models.load_model(path, scale="raw")


def test_model_input_shape_must_match_data(tmp_path, small_model):
    images = np.zeros((2, 3, 40, 40), np.uint8)
    dataset = data.load_h5(data.save_h5(tmp_path / "small.h5", images, np.zeros(2)))
    with pytest.raises(LabInputError, match=r"images of shape \(55, 47, 3\).*found \(40, 40, 3\)"):
        models.LoadedModel(small_model, "raw", "net.h5").check_data(dataset)


@pytest.mark.fixtures
def test_real_course_weight_files_load_with_1283_classes(course_fixtures):
    for name in ("lab3_sunglasses_bd_weights.h5", "sunglasses_bd_weights.h5", "anonymous_1_bd_weights.h5",
                 "anonymous_2_bd_weights.h5", "multi_trigger_multi_target_bd_weights.h5"):
        loaded = models.load_model(course_fixtures / name)
        assert loaded.n_classes == 1283
        assert loaded.input_scale == ("raw" if name.startswith("lab3") else "unit")
        assert "recorded SHA-256" in loaded.scale_source
        probabilities = loaded.predict_proba(_pixels(4))
        assert probabilities.shape == (4, 1283)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        # The weights really arrived: the layer matches the file byte for byte.
        with h5py.File(course_fixtures / name) as handle:
            kernel = handle["conv_3"]["conv_3"]["kernel:0"][()]
        np.testing.assert_array_equal(loaded.model.get_layer("conv_3").get_weights()[0], kernel)
