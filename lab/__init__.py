"""BadNet Pruning Lab: helpers the notebooks, the CLI and the tests share.

Modules, one job each:

- ``lab.errors``        one-line errors for bad input
- ``lab.seed``          one call seeds Python, numpy and TensorFlow
- ``lab.paths``         where data, models and build outputs are, from any working directory
- ``lab.data``          CSAW-HackML h5 files: read, check, write, find layouts
- ``lab.models``        DeepID architecture; loading/saving models with their input scale and SHA-256
- ``lab.manifest``      SHA-256 manifests of what a build wrote
- ``lab.drawing``       anti-aliased shapes shared by the face renderer and the triggers
- ``lab.synthfaces``    the embedded default data set (procedural faces)
- ``lab.triggers``      backdoor triggers drawn onto images
- ``lab.training``      training clean and pruning-aware BadNets
- ``lab.default``       building the embedded default into the Lab 3 layout
- ``lab.attacks``       all-to-one, all-to-all and multi-trigger BadNets on any course data
- ``lab.activations``   batched activations, per-channel means, Keract-ready dicts
- ``lab.pruning``       the exact cached pruning sweep, threshold rules, pruned models
- ``lab.goodnet``       the repaired N+1-class network G as one safe-mode Keras file
- ``lab.metrics``       accuracy, attack success, detection, CSR/CFR/ATR/DTR breakdown
- ``lab.evaluation``    evaluate a model on course files (the course's eval.py)
- ``lab.analysis``      target label, per-class accuracy, confidence, self-checks
- ``lab.classify``      image files in, classes out (the submission contract)
- ``lab.plots``         every figure of the lab (one place sets the seaborn theme)
- ``lab.challenge``     hidden-trigger challenge: make, package, grade
- ``lab.student``       student copies of the notebooks (solutions taken out)
- ``lab.notebooks``     execute the notebooks (parameters injected, nbclient)
- ``lab.bench``         benchmark: sweep vs forward pass vs naive sweep, default build time
- ``lab.cli``           ``python -m lab ...``
"""

__version__ = "0.1.0"

# First, before anything imports TensorFlow: its C++ start-up lines (absl, oneDNN) are filtered out of
# stderr and its later C++ logging is turned down (lab._quiet says why and how; oneDNN stays on).
from lab import _quiet

_quiet.install()

from lab.seed import set_seed  # noqa: E402,F401  (the one call every notebook makes)


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
