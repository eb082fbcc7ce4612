"""The defense contract: what a defense takes, what it returns, and the registry of defenses.

A defense takes the BadNet B (a ``LoadedModel`` with N classes), the
defender's clean validation data and a seed, never poisoned data, and
returns a :class:`DefenseResult` whose ``classifier`` meets
:class:`Classifier`:

- ``kind == "repair"``: an N-class model (``result.model`` is the same
  ``LoadedModel``, saveable with :func:`lab.io.models.save_model`);
- ``kind == "detector"``: an N+1-class answer, class N (``backdoor_class``)
  meaning "this input is backdoored" (GoodNet, confidence detector, STRIP).

Every table and metric of :mod:`lab.evaluation` takes a ``Classifier``, so
06's comparison loops over :data:`REGISTRY`. Adding a defense: one module in
``lab/defenses/`` with a ``@register`` subclass of :class:`Defense` (its
``Config`` a frozen dataclass of documented hyperparameters), imported in
``lab/defenses/__init__.py``; one test file; optionally one row in
``notebooks/06_defenses_compared.ipynb``. ``tests/test_defenses_contract.py``
checks every registered defense against this contract (no poisoned data in
any signature).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from lab.constants import BATCH_SIZE, DEFAULT_SEED
from lab.errors import LabInputError
from lab.io.data import Dataset

KINDS = ("repair", "detector")


@runtime_checkable
class Classifier(Protocol):
    """What every defense returns and every evaluation takes.

    n_classes: N for a repaired model, N+1 for a detector or GoodNet.
    backdoor_class: None for a plain classifier, N for a detector (its "backdoor" answer).
    metadata: what the classifier records about itself (how it was made).
    predict_labels(x, batch_size): x float32 (n, 55, 47, 3) NHWC, pixels 0..255 -> int64 (n,).
    """

    n_classes: int
    backdoor_class: int | None
    metadata: dict

    def predict_labels(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray: ...


@dataclasses.dataclass
class DefenseResult:
    """What :meth:`Defense.fit` returns.

    name: the defense's registry name. kind: ``"repair"`` or ``"detector"``.
    classifier: the repaired model or the detector (a :class:`Classifier`).
    seconds: wall time of ``fit`` (including any defense it builds on).
    details: defense-specific facts for reports (channels pruned, chosen
    epoch, calibrated threshold, the repair a detector wraps, ...).
    model: the repaired N-class ``LoadedModel`` when ``kind == "repair"``, else None.
    """

    name: str
    kind: str
    classifier: Any
    seconds: float
    details: dict = dataclasses.field(default_factory=dict)
    model: Any = None


class Defense(abc.ABC):
    """A defense with the hyperparameters of its ``Config``; :meth:`fit` builds it for one BadNet.

    Class attributes: ``name`` (registry key), ``kind`` (``"repair"`` or
    ``"detector"``), ``paper`` (citation), ``Config`` (a frozen dataclass
    whose defaults are documented), ``oracle`` (True only for the labelled
    attack-aware comparison that uses poisoned data; never registered).
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    paper: ClassVar[str]
    Config: ClassVar[type]
    oracle: ClassVar[bool] = False

    def __init__(self, config=None):
        config = self.Config() if config is None else config
        if not isinstance(config, self.Config):
            raise LabInputError(None, f"a {self.Config.__qualname__} for defense {self.name!r}",
                                type(config).__name__)
        self.config = config

    @abc.abstractmethod
    def fit(self, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED) -> DefenseResult:
        """Build the defense for ``badnet`` (``LoadedModel``, N classes) from clean validation data only."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


REGISTRY: dict[str, type[Defense]] = {}  # name -> Defense subclass, in registration order


def register(cls: type[Defense]) -> type[Defense]:
    """Class decorator: add a :class:`Defense` subclass to :data:`REGISTRY` under ``cls.name``."""
    if cls.kind not in KINDS:
        raise ValueError(f"defense {cls.__name__}: kind must be one of {KINDS}, not {cls.kind!r}")
    if not (dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen):
        raise ValueError(f"defense {cls.__name__}: Config must be a frozen dataclass")
    if cls.oracle:
        raise ValueError(f"defense {cls.__name__} uses poisoned data (oracle): keep it out of the registry")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"two defenses named {cls.name!r}: {REGISTRY[cls.name].__name__} and {cls.__name__}")
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Defense]:
    """The :class:`Defense` class registered as ``name``; one-line error listing the names otherwise."""
    if name not in REGISTRY:
        raise LabInputError(None, f"a defense in {', '.join(REGISTRY)}", repr(name))
    return REGISTRY[name]


def build(name: str, badnet, clean_valid: Dataset, seed: int = DEFAULT_SEED, **config) -> DefenseResult:
    """``get(name)(Config(**config)).fit(badnet, clean_valid, seed)``: one call from a name and overrides."""
    defense = get(name)
    return defense(defense.Config(**config)).fit(badnet, clean_valid, seed)


def resolve_repair(repair, repair_config, badnet, clean_valid: Dataset, seed: int) -> DefenseResult:
    """The repair a detector wraps: ``repair`` is a registered repair's name (fit here with ``repair_config``,
    None for its defaults) or a :class:`DefenseResult` of kind "repair" already fit on the same B and clean data.
    """
    if isinstance(repair, DefenseResult):
        result = repair
    else:
        defense = get(repair)
        result = defense(repair_config).fit(badnet, clean_valid, seed)
    if result.kind != "repair" or result.model is None:
        raise LabInputError(None, "a repair defense (an N-class model) for this detector to wrap",
                            f"{result.name!r} of kind {result.kind!r}")
    return result
