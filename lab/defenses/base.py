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
07's comparison loops over :data:`REGISTRY`. Adding a defense: one module in
``lab/defenses/`` with a ``@register`` subclass of :class:`Defense` (its
``Config`` a frozen dataclass of documented hyperparameters, its
``table_order``, and :meth:`Defense.quick` where its schedule can be
shortened) and one test file. Importing :mod:`lab.defenses` imports every
module of the package, so the registry, the command line (``repair
--method``, ``detect --method`` and their ``--help``) and
``tests/test_defenses_contract.py`` (which checks every registered defense
against this contract: no poisoned data in any signature) find it; deleting
the file removes it from all of them.
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

    What the defense decided, filled the same way by every defense:
    backdoored: True / False when it judged the model from clean data, None
    when it repairs (or detects) without judging; targets: the suspected
    target classes it named (``[]`` when it named none); method: what
    actually ran (``auto`` says "reverse-unlearn" or "none ..."), None for
    the defense's own name (see :attr:`method_run`).
    """

    name: str
    kind: str
    classifier: Any
    seconds: float
    details: dict = dataclasses.field(default_factory=dict)
    model: Any = None
    backdoored: bool | None = None
    targets: list = dataclasses.field(default_factory=list)
    method: str | None = None

    @property
    def method_run(self) -> str:
        """``method`` where the defense set it, else its name."""
        return self.name if self.method is None else self.method


class Defense(abc.ABC):
    """A defense with the hyperparameters of its ``Config``; :meth:`fit` builds it for one BadNet.

    Class attributes: ``name`` (registry key), ``kind`` (``"repair"`` or
    ``"detector"``), ``paper`` (citation), ``Config`` (a frozen dataclass
    whose defaults are documented), ``table_order`` (its place in
    :data:`REGISTRY`, hence in 07's table and every listing: smaller first),
    ``decides`` (True when its result names ``backdoored`` / ``targets``
    from clean data), ``oracle`` (True only for the labelled attack-aware
    comparison that uses poisoned data; never registered). The first line
    of the class docstring is its one-line description in ``--help``.

    Detectors also say how ``python -m lab detect`` runs them:
    ``wraps_repair`` (needs ``--repaired``), ``takes_targets`` (accepts
    ``--targets``), ``default_budget`` (``--budget``'s default, percent),
    ``threshold_unit`` (how its threshold is printed) and
    :meth:`detect_config`.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    paper: ClassVar[str]
    Config: ClassVar[type]
    table_order: ClassVar[int]
    decides: ClassVar[bool] = False
    oracle: ClassVar[bool] = False
    wraps_repair: ClassVar[bool] = False
    takes_targets: ClassVar[bool] = False
    default_budget: ClassVar[float] = 0.0
    threshold_unit: ClassVar[str] = ""
    quick_epochs: ClassVar[str | None] = None  # the Config field that quick(epochs=...) sets, if that is all it does

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

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring (what ``--help`` says about it), without pointers or final period."""
        line = (cls.__doc__ or cls.name).strip().splitlines()[0].strip()
        return line.replace(" (see the module docstring)", "").replace("; see the module docstring", "").rstrip(".")

    @classmethod
    def quick(cls, epochs: int | None = None, reverse_epochs: int | None = None, flow_restarts: int | None = None,
              holdout_fraction: float = 1 / 3) -> dict:
        """``Config`` overrides with its schedule scaled, for quick runs (notebooks' tests, 07's table).

        ``epochs``: training epochs; ``reverse_epochs``: trigger-reversal
        schedule epochs; ``flow_restarts``: universal-perturbation searches;
        None keeps the default. Here: ``holdout_fraction`` (when its
        ``Config`` has that field) and ``epochs`` into the field named by
        ``quick_epochs``; a defense with other schedules overrides this.
        Returns ``{field: value}`` for :func:`build`.
        """
        names = {field.name for field in dataclasses.fields(cls.Config)}
        settings = {"holdout_fraction": holdout_fraction} if "holdout_fraction" in names else {}
        if epochs is not None and cls.quick_epochs is not None:
            settings[cls.quick_epochs] = epochs
        return settings

    @classmethod
    def detect_config(cls, options: dict):
        """A detector's ``Config`` from ``python -m lab detect``'s options.

        options: ``repair`` (a :class:`DefenseResult` of the given ``--repaired``
        model, or None), ``budget`` (percent), ``holdout_fraction``,
        ``n_overlays``, ``alpha``, ``targets`` (list or None). Here: the
        options whose names are fields of its ``Config``.
        """
        names = {field.name for field in dataclasses.fields(cls.Config)}
        return cls.Config(**{key: value for key, value in options.items() if key in names})


REGISTRY: dict[str, type[Defense]] = {}  # name -> Defense subclass, ordered by (table_order, name)


def register(cls: type[Defense]) -> type[Defense]:
    """Class decorator: add a :class:`Defense` subclass to :data:`REGISTRY` under ``cls.name``."""
    if cls.kind not in KINDS:
        raise ValueError(f"defense {cls.__name__}: kind must be one of {KINDS}, not {cls.kind!r}")
    if not (dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen):
        raise ValueError(f"defense {cls.__name__}: Config must be a frozen dataclass")
    if cls.oracle:
        raise ValueError(f"defense {cls.__name__} uses poisoned data (oracle): keep it out of the registry")
    if not isinstance(getattr(cls, "table_order", None), int):
        raise ValueError(f"defense {cls.__name__}: table_order must be an int (its place in the registry)")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"two defenses named {cls.name!r}: {REGISTRY[cls.name].__name__} and {cls.__name__}")
    REGISTRY[cls.name] = cls
    ordered = sorted(REGISTRY.values(), key=lambda defense: (defense.table_order, defense.name))
    REGISTRY.clear()  # the order is the field's, whatever order the modules were imported in
    REGISTRY.update((defense.name, defense) for defense in ordered)
    return cls


def names(kind: str | None = None) -> list[str]:
    """The registered names in table order, only those of ``kind`` ("repair" or "detector") when given."""
    return [name for name, defense in REGISTRY.items() if kind is None or defense.kind == kind]


def discover() -> None:
    """Import every module of :mod:`lab.defenses`: each ``@register`` in them adds its defense.

    No hand-kept list: a new module is found, a deleted one is gone.
    Modules whose name starts with ``_`` are skipped.
    """
    import importlib
    import pkgutil

    import lab.defenses as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


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
