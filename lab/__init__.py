"""BadNet Pruning Lab: helpers the notebooks, the CLI and the tests share.

Packages, one layer each (a layer imports only the layers above it in this list, except
``lab.synthetic.default``, which builds the default BadNet with ``lab.attacks``):

- ``lab.errors``, ``lab.constants``, ``lab.seed``, ``lab.paths``, ``lab.cache``, ``lab._quiet``
                      one-line input errors; shared defaults (layer, measure, seed, batch size);
                      one seed call for Python, numpy and TensorFlow; where data, models and build outputs are;
                      results reused by the SHA-256 of their inputs; TensorFlow's C++ start-up lines kept out
- ``lab.io``          files: course h5 data (``data``), models with input scale and SHA-256 (``models``),
                      SHA-256 manifests (``manifest``), face image files (``images``)
- ``lab.evaluation``  measuring: rates and the CSR/CFR/ATR/DTR breakdown (``metrics``), the one evaluation
                      loop every table is built on (``loop``), activations (``activations``),
                      target/per-class/confidence analysis (``analysis``), every figure (``plots``)
- ``lab.synthetic``   the embedded default: drawing primitives, SynthFaces, the default builder
- ``lab.attacks``     the trigger registry (``triggers``), the attack spec (``spec``), poisoning
                      (``poisoning``), BadNet training (``training``), building BadNet folders (``building``)
- ``lab.defenses``    the defense contract and registry (``base``), weight surgery (``surgery``), pruning
                      (``pruning`` public API, ``pruning_plan``, ``pruning_engines``), ``goodnet``,
                      fine-tuning parts (``holdout``, ``augment``, ``perturbation``), ``finepruning``,
                      ``detectors`` (confidence, STRIP), ``oracle`` (uses poisoned data: not a defense)
- ``lab.course``      the course around it: hidden-trigger ``challenge``, ``student`` copies (nbgrader),
                      the exercises' ``checks``, the nbgrader ``autograde``r, the ``notebooks`` runner,
                      the ``bench``mark
- ``lab.setup``       the lab pip-installed (Colab, any Jupyter): ``describe`` for the notebooks' setup cell,
                      ``ensure_default`` builds the default (the explicit call; path lookups never build)
- ``lab.cli``         ``python -m lab ...``: one command line, students' and instructors' commands

Short names for notebooks. ``from lab import pruning, data, plots, ...`` gives
the module itself (``lab.pruning is lab.defenses.pruning``): :data:`SHORT_NAMES`
maps each name to its module, imported on first use (PEP 562 ``__getattr__``)
so ``import lab`` stays light (no TensorFlow). They are attributes, not module
paths: ``import lab.pruning`` fails; code in ``lab/``, the tests and the tools
import the real paths.
"""

__version__ = "0.1.0"

import importlib as _importlib

# First, before anything imports TensorFlow: its C++ start-up lines (absl, oneDNN) are filtered out of
# stderr and its later C++ logging is turned down (lab._quiet says why and how; oneDNN stays on).
from lab import _quiet  # noqa: E402

_quiet.install()

from lab.seed import set_seed  # noqa: E402,F401  (the one call every notebook makes)

# Short name -> the module it is (what notebooks import with ``from lab import NAME``).
SHORT_NAMES = {
    "data": "lab.io.data", "models": "lab.io.models", "manifest": "lab.io.manifest", "classify": "lab.io.images",
    "triggers": "lab.attacks.triggers", "training": "lab.attacks.training",
    "pruning": "lab.defenses.pruning", "goodnet": "lab.defenses.goodnet", "finepruning": "lab.defenses.finepruning",
    "detectors": "lab.defenses.detectors", "oracle": "lab.defenses.oracle",
    "metrics": "lab.evaluation.metrics", "activations": "lab.evaluation.activations",
    "analysis": "lab.evaluation.analysis", "plots": "lab.evaluation.plots",
    "challenge": "lab.course.challenge", "checks": "lab.course.checks",
}


def __getattr__(name: str):
    """``lab.pruning`` etc. (and ``from lab import pruning``): the module of :data:`SHORT_NAMES`, on first use."""
    if name in SHORT_NAMES:
        module = _importlib.import_module(SHORT_NAMES[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SHORT_NAMES))


def check_environment() -> dict:
    """Versions the notebooks were written for; raises with what to install when they differ.

    Returns ``{package: version}`` so the Setup cell can print it.
    """
    import sys

    import keras
    import numpy
    import tensorflow

    versions = {"python": sys.version.split()[0], "tensorflow": tensorflow.__version__, "keras": keras.__version__,
                "numpy": numpy.__version__, "lab": __version__}
    if not (3, 11) <= sys.version_info[:2] <= (3, 13) or not keras.__version__.startswith("3."):
        raise RuntimeError(f"this lab needs Python 3.11-3.13 and Keras 3 (found {versions}); "
                           "run `make lab` to create .venv")
    if not tensorflow.config.list_physical_devices("GPU"):
        versions["device"] = "CPU (no GPU needed: every notebook runs in minutes on a laptop CPU)"
    return versions
