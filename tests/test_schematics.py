"""Schematics are read from the model itself: layers, shapes and the data's paths, folded for a notebook's width."""

from __future__ import annotations

import pytest

import small_models as helpers
from lab.evaluation import schematics
from lab.io import models


def _texts(figure) -> str:
    return "\n".join(text.get_text() for axes in figure.axes for text in axes.texts)


def test_deepid_boxes_follow_the_graph_with_its_shortcut_and_shapes():
    boxes = {box.name: box for box in schematics.layer_boxes(models.build_deepid(20, "raw"))}
    assert boxes["conv_3"].shape == (10, 8, 60) and boxes["conv_3"].detail == "3x3, 60, relu"
    assert boxes["pool_3"].shape == (5, 4, 60)
    # DeepID's multi-scale shortcut: pool_3 feeds conv_4 and (flattened) fc_1; fc_1 and fc_2 meet in add_1
    assert boxes["conv_4"].inputs == ("pool_3",) and boxes["flatten_1"].inputs == ("pool_3",)
    assert boxes["add_1"].inputs == ("fc_1", "fc_2") and boxes["output"].shape == (20,)
    assert boxes["rescale"].detail == "/ 255" and boxes["output"].detail == "softmax"


def test_folding_keeps_every_connection_and_says_what_was_folded():
    boxes = schematics.layer_boxes(models.build_deepid(20, "raw"))
    folded = {box.name: box for box in schematics.fold_layers(boxes)}
    assert not {"flatten_1", "flatten_2", "activation_1", "rescale"} & set(folded)
    assert folded["conv_1"].inputs == ("input",) and "/ 255" in folded["input"].detail
    assert folded["fc_1"].inputs == ("pool_3",) and "reads 1200 flat" in folded["fc_1"].detail
    assert folded["fc_2"].inputs == ("conv_4",) and "reads 960 flat" in folded["fc_2"].detail
    assert folded["add_1"].detail == "relu" and folded["output"].inputs == ("add_1",)
    assert schematics.fold_layers(boxes, ()) == [schematics.LayerBox(**vars(box)) for box in boxes]


def test_layout_lines_up_parallel_branches_in_their_own_lanes():
    grid = schematics._layout(schematics.fold_layers(schematics.layer_boxes(models.build_deepid(20))))
    assert grid["fc_1"][0] == grid["fc_2"][0] and grid["fc_1"][1] != grid["fc_2"][1]
    assert grid["input"] == (0, 0) and grid["output"][0] == max(column for column, _ in grid.values())
    assert len(set(grid.values())) == len(grid)  # no two boxes on one spot


@pytest.mark.parametrize("make", [lambda: models.build_deepid(20, "raw"), helpers.conv_relu_pool_model,
                                  helpers.bypass_model])
def test_network_figure_names_every_drawn_layer_and_outlines_the_highlight(make):
    keras_model = make()
    keras_model = getattr(keras_model, "model", keras_model)
    highlight = "conv_3" if "conv_3" in [layer.name for layer in keras_model.layers] else "conv_a"
    figure = schematics.draw_network(keras_model, highlight=highlight)
    texts = _texts(figure)
    for box in schematics.fold_layers(schematics.layer_boxes(keras_model)):
        assert box.name in texts and schematics._shape_text(box.shape) in texts
    outlined = [patch for patch in figure.axes[0].patches if patch.get_linewidth() > 2]
    assert len(outlined) == 1


def test_a_layer_called_again_elsewhere_keeps_this_model_s_drawing():
    """A clone of a model (or another model calling its layers) adds calls to the layers; only this graph counts."""
    import keras

    keras_model = helpers.conv_relu_pool_model().model
    before = schematics.layer_boxes(keras_model)
    keras.models.clone_model(keras_model)
    keras.Model(keras_model.inputs, keras_model.get_layer("conv_b").output)
    assert schematics.layer_boxes(keras_model) == before
    assert {box.name: box.inputs for box in before}["conv_b"] == ("drop_a",)


def test_real_course_deepid_is_drawn_from_its_own_layers():
    path = helpers.fixture_path("sunglasses_bd_weights.h5")
    if path is None:
        pytest.skip(f"real course fixtures not available: {helpers.FIXTURES} is absent")
    texts = _texts(schematics.draw_network(models.load_model(path), highlight="conv_3"))
    assert "1283" in texts and "5 x 4 x 60" in texts


def test_goodnet_and_threat_model_figures_say_the_rule_and_who_holds_what():
    assert "$G(x) = 1283$" in _texts(schematics.draw_goodnet(1283))
    assert "$G(x) = N$" in _texts(schematics.draw_goodnet())
    threat = _texts(schematics.draw_threat_model())
    assert "clean validation" in threat and "trigger $t$" in threat
