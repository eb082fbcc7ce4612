"""Splitting the defender's clean validation data: a part to fit on, a part held out to choose with.

Every defense that trains or calibrates picks its epoch, threshold or
budget on images it did not fit on; this split is the one they share.
"""

from __future__ import annotations

import numpy as np

from lab.constants import DEFAULT_SEED
from lab.errors import LabInputError
from lab.io.data import Dataset


def split_validation(dataset: Dataset, holdout_fraction: float = 1 / 3, seed: int = DEFAULT_SEED):
    """``(train, holdout)``: a per-class split of clean validation data.

    Each class gives ``round(holdout_fraction * count)`` images to the
    held-out part, but always keeps at least one for fine-tuning. Both parts
    keep the file's order. Deterministic for a given ``seed``.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise LabInputError(None, "a holdout fraction in [0, 1)", repr(holdout_fraction))
    rng = np.random.default_rng(seed)
    holdout = []
    for label in np.unique(dataset.y):
        members = rng.permutation(np.flatnonzero(dataset.y == label))
        take = min(int(round(holdout_fraction * len(members))), len(members) - 1)
        holdout.extend(members[:take].tolist())
    mask = np.zeros(len(dataset), bool)
    mask[np.asarray(holdout, dtype=np.int64)] = True
    name = dataset.path or "clean validation"
    return (Dataset(dataset.x[~mask], dataset.y[~mask], f"{name} [fine-tuning part]"),
            Dataset(dataset.x[mask], dataset.y[mask], f"{name} [held-out part]"))
