"""The embedded data sets the default can be built from: SynthFaces (the course's domain) and SynthSigns.

A data set here is what :func:`lab.synthetic.default.make_default` needs to
know about a generator: how many classes it has (or may have), how to draw
the classes and render images of them, which trigger its default BadNet
carries, and how many images a class gets per split. Both render the course
h5 layout, uint8 ``(n, 3, 55, 47)``, with landmarks for their triggers.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from lab.synthetic import synthfaces, synthsigns


@dataclasses.dataclass(frozen=True)
class DataSet:
    """A generator behind ``make-default --dataset NAME``.

    ``make_classes(n, seed)`` draws the ``n`` classes (SynthFaces'
    identities; SynthSigns' signs are fixed: ``n`` of them spread over its
    catalogue);
    ``render(classes, labels, seed, nuisance, progress)`` returns an object
    with ``images`` and ``landmarks()``. ``max_classes``: the most classes
    it can draw (None: no limit). The ``*_per_class`` counts and
    ``trigger`` are the default's.
    """

    name: str
    title: str
    unit: str  # what a class is, in words ("identity", "sign class")
    default_classes: int
    max_classes: int | None
    trigger: str
    train_per_class: int
    valid_per_class: int
    test_per_class: int
    nuisance: float
    make_classes: Callable[[int, int], object]
    render: Callable[..., object]


def _render_faces(identities, labels, seed, nuisance, progress):
    return synthfaces.render(identities, labels, seed=seed, nuisance=nuisance, progress=progress)


def _render_signs(classes, labels, seed, nuisance, progress):
    return synthsigns.render(labels, seed=seed, nuisance=nuisance, progress=progress, classes=classes)


DATASETS = {
    "faces": DataSet("faces", "SynthFaces", "identity", 100, None, "sunglasses", 50, 9, 9,
                     synthfaces.DEFAULT_NUISANCE, lambda n, seed: synthfaces.make_identities(n, seed=seed),
                     _render_faces),
    # GTSRB's 43 classes; more images a class than the faces (a road-sign camera sees many of each sign)
    "signs": DataSet("signs", "SynthSigns", "sign class", synthsigns.N_CLASSES, synthsigns.N_CLASSES, "sticker",
                     120, 20, 20, 1.0, lambda n, seed: synthsigns.class_subset(n), _render_signs),
}
DEFAULT_DATASET = "faces"


def get(name: str) -> DataSet:
    """The data set ``name``; ValueError naming the ones there are."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def class_names(name: str, n_classes: int) -> list[str]:
    """Readable names of the first ``n_classes`` classes (SynthSigns' sign names; faces: ``identity k``)."""
    if name == "signs":
        return [synthsigns.CLASSES[k].name for k in synthsigns.class_subset(n_classes)]
    return [f"identity {k}" for k in range(n_classes)]


