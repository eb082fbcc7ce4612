"""The defense contract (stand-in for H1's ``lab/defenses/base.py``; the merge takes H1's version).

A defense gets the BadNet B and clean validation data, nothing else, and
returns a :class:`DefenseResult`. ``REGISTRY`` maps names to classes.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Protocol

import numpy as np

from lab.data import Dataset
from lab.seed import DEFAULT_SEED

BATCH_SIZE = 512


class Classifier(Protocol):
    n_classes: int
    backdoor_class: int | None
    metadata: dict

    def predict_labels(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray: ...


@dataclasses.dataclass
class DefenseResult:
    name: str
    kind: str
    classifier: object
    seconds: float
    details: dict
    model: object | None = None


class Defense(abc.ABC):
    name: str = ""
    kind: str = "repair"
    paper: str = ""

    @dataclasses.dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    @abc.abstractmethod
    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        """Repair or wrap ``badnet`` from clean validation data only."""


REGISTRY: dict[str, type] = {}


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


def get(name: str):
    from lab.errors import LabInputError

    if name not in REGISTRY:
        raise LabInputError(None, f"a defense name, one of {sorted(REGISTRY)}", repr(name))
    return REGISTRY[name]
