"""lab.defenses.fitting: the keep-best rule, the one epoch loop and the compiled step, on real (tiny) Keras models."""

from __future__ import annotations

import numpy as np

from lab.defenses.fitting import BestEpoch, compiled_step, fit_keep_best, step_parts


def _model():
    import keras

    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def _set(model, value: float):
    model.set_weights([np.full(w.shape, value, np.float32) for w in model.get_weights()])


def test_the_highest_score_is_kept_a_later_epoch_wins_a_tie_and_restore_puts_it_back():
    model = _model()
    best = BestEpoch(model)
    assert best.summary() == {"best_epoch": 0, "holdout_clean_accuracy": -np.inf}
    kept = []
    for epoch, score in enumerate([50.0, 70.0, 60.0, 70.0, 40.0], start=1):
        _set(model, float(epoch))  # the weights "after" this epoch
        kept.append(best.offer(epoch, score))
    assert kept == [True, True, False, True, False]
    assert best.summary() == {"best_epoch": 4, "holdout_clean_accuracy": 70.0}
    assert all(np.all(w == 5.0) for w in model.get_weights())  # still the last epoch's
    best.restore()
    assert all(np.all(w == 4.0) for w in model.get_weights())  # the tie went to the later epoch, 4


def test_offering_copies_the_weights_and_restore_without_an_epoch_leaves_the_model():
    model = _model()
    _set(model, 1.0)
    untouched = BestEpoch(model)
    untouched.restore()
    assert all(np.all(w == 1.0) for w in model.get_weights())
    best = BestEpoch(model)
    best.offer(1, 10.0)
    _set(model, 2.0)  # training goes on after the offer: the kept copy must not follow
    best.restore()
    assert all(np.all(w == 1.0) for w in model.get_weights())


def test_step_parts_build_the_lab_optimizer_on_the_trainable_variables_with_the_models_scale():
    import keras

    import small_models as helpers
    from lab.defenses.unlearn import copy_model

    student = copy_model(helpers.trained_deepid())  # unit scale: pixels 0..255 times 1/255
    parts = step_parts(student, learning_rate=1e-3, total_steps=10)
    assert parts.model is student.model and parts.shape == (55, 47, 3)
    assert parts.scale == np.float32(1 / 255) and parts.scale.dtype == np.float32
    assert [v.path for v in parts.variables] == [v.path for v in student.model.trainable_variables]
    assert isinstance(parts.optimizer, keras.optimizers.Adam) and parts.optimizer.built
    rate = parts.optimizer.learning_rate  # cosine decay from 1e-3 to 0 over 10 steps
    assert float(rate) == np.float32(1e-3)
    assert [tuple(spec.shape) for spec in parts.spec] == [(None, 55, 47, 3), (None,)]
    given = keras.optimizers.SGD(0.1)
    assert step_parts(student, optimizer=given).optimizer is given and given.built


def test_fit_keep_best_ends_at_the_best_epoch_a_later_one_on_ties_and_records_every_epoch():
    model = _model()
    _set(model, 0.0)
    scores = {0: 99.0, 1: 50.0, 2: 70.0, 3: 60.0, 4: 70.0, 5: 40.0}  # epoch 0 would win but is never offered
    trained = []

    def run_epoch(epoch):
        trained.append(epoch)
        _set(model, float(epoch))  # the weights after this epoch
        return f"loss {epoch}"

    def score(epoch):
        assert np.all(model.get_weights()[0] == epoch)  # taken on the model as that epoch left it
        return scores[epoch]

    best, history = fit_keep_best(model, 5, run_epoch, score, lambda epoch, loss, value: (epoch, loss, value))
    assert trained == [1, 2, 3, 4, 5]
    assert history == [(0, None, 99.0), (1, "loss 1", 50.0), (2, "loss 2", 70.0), (3, "loss 3", 60.0),
                       (4, "loss 4", 70.0), (5, "loss 5", 40.0)]
    assert best.summary() == {"best_epoch": 4, "holdout_clean_accuracy": 70.0}
    assert all(np.all(w == 4.0) for w in model.get_weights())  # restored: the tie went to the later epoch
    best, history = fit_keep_best(model, 3, lambda epoch: _set(model, 10.0 + epoch), lambda epoch: epoch)
    assert best.epoch == 3 and history == [0, 1, 2, 3]  # score = epoch: the last one; no row: the scores
    assert all(np.all(w == 13.0) for w in model.get_weights())
    best, history = fit_keep_best(model, 0, run_epoch, lambda epoch: 5.0)
    assert best.epoch == 0 and history == [5.0] and all(np.all(w == 13.0) for w in model.get_weights())


def test_compiled_step_trains_only_the_mask_variables_it_is_given():
    """An ANP-style step: a mask on the 3 channels feeding a real model's head trains; the weights do not move.

    The colour classifier answers the brightest channel (kernel 10 I). Pure red images labelled green make
    the red channel's mask the only thing with a gradient: it falls (clipped to [0, 1] after every step by
    ``after``), the green and blue masks and every weight of the model stay exactly as they were.
    """
    import keras
    import tensorflow as tf

    import small_models as helpers

    student = helpers.colour_classifier()
    keras_model = student.model
    before = [w.copy() for w in keras_model.get_weights()]
    gap, head = keras_model.get_layer("gap"), keras_model.get_layer("output")
    mask = tf.Variable(np.ones(3, np.float32), name="channel_mask")
    parts = step_parts(student, learning_rate=1e-3, total_steps=10)

    def loss_of(inputs, labels):
        probabilities = head(gap(inputs) * mask)
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))

    optimizer = keras.optimizers.Adam(0.3)
    step = compiled_step(parts, loss_of, variables=[mask], optimizer=optimizer,
                         after=lambda: mask.assign(tf.clip_by_value(mask, 0.0, 1.0)))
    assert optimizer.built
    images, labels = helpers.colour_images([0] * 8), np.ones(8, np.int64)  # red, labelled green
    losses = [float(step(images, labels)) for _ in range(6)]
    assert losses[-1] < losses[0]
    kept = mask.numpy()
    assert 0.0 <= kept[0] < 1.0 and kept[1] == 1.0 and kept[2] == 1.0
    assert all(np.array_equal(a, b) for a, b in zip(before, keras_model.get_weights()))
    assert int(optimizer.iterations.numpy()) == 6 and int(parts.optimizer.iterations.numpy()) == 0
