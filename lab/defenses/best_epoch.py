"""Keep the best held-out epoch: the one rule by which every training loop of :mod:`lab.defenses` chooses its epoch.

The defenses that train (fine-tuning and fine-pruning, the unlearning loops,
and every repair built on :func:`lab.defenses.unlearn.train_keep_best`)
train for a number of epochs and keep the weights of the epoch with the
highest clean held-out accuracy (a later epoch wins a tie), measured on the
held-out part of the clean validation split that never trains
(:func:`lab.defenses.holdout.split_validation`).
"""

from __future__ import annotations

import numpy as np


class BestEpoch:
    """The weights of ``keras_model`` at the epoch with the highest score offered so far.

    ``offer(epoch, score)`` after each epoch (a score >= the best so far
    wins, so a later epoch wins a tie); ``restore()`` puts the kept weights
    back (nothing kept: the model stays as it is). ``epoch`` is 0 and
    ``score`` -inf until an epoch is kept.
    """

    def __init__(self, keras_model):
        self.model = keras_model
        self.epoch = 0
        self.score = -np.inf
        self.weights = None

    def offer(self, epoch: int, score: float) -> bool:
        """Keep this epoch's weights if ``score`` is at least the best so far; True when kept."""
        if score < self.score:
            return False
        self.epoch, self.score, self.weights = epoch, score, [w.copy() for w in self.model.get_weights()]
        return True

    def restore(self) -> None:
        """Set the model to the kept epoch's weights (no-op when none was kept)."""
        if self.weights is not None:
            self.model.set_weights(self.weights)

    def summary(self) -> dict:
        """``{"best_epoch", "holdout_clean_accuracy"}`` (the kept score as a float) for a defense's details."""
        return {"best_epoch": self.epoch, "holdout_clean_accuracy": float(self.score)}
