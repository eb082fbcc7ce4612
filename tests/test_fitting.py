"""lab.defenses.best_epoch: the one rule that chooses a training loop's epoch, on a real (tiny) Keras model."""

from __future__ import annotations

import numpy as np

from lab.defenses.fitting import BestEpoch


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
    from lab.defenses.fitting import step_parts
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
