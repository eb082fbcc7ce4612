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
                      ``ensure_default`` builds the default on first use (called by ``lab.paths.lab_root``)
- ``lab.cli``         ``python -m lab ...``: one command line, students' and instructors' commands

Flat names. Notebooks, tests and scripts written before the packages import
``from lab import pruning, data, ...``; every such name below is an alias of
its module's new home (the same module object, so ``lab.pruning is
lab.defenses.pruning``), imported on first use so ``import lab`` stays light
(no TensorFlow). ``lab.metrics`` is the whole ``lab.evaluation`` package
(rates plus the comparison tables that used to live in ``metrics``).
"""

__version__ = "0.1.0"

import importlib as _importlib
import importlib.abc as _importlib_abc
import importlib.util as _importlib_util
import sys as _sys

# First, before anything imports TensorFlow: its C++ start-up lines (absl, oneDNN) are filtered out of
# stderr and its later C++ logging is turned down (lab._quiet says why and how; oneDNN stays on).
from lab import _quiet  # noqa: E402

_quiet.install()

from lab.seed import set_seed  # noqa: E402,F401  (the one call every notebook makes)

# Old flat module name -> its home.
FLAT_NAMES = {
    "data": "lab.io.data", "models": "lab.io.models", "manifest": "lab.io.manifest", "classify": "lab.io.images",
    "drawing": "lab.synthetic.drawing", "synthfaces": "lab.synthetic.synthfaces", "default": "lab.synthetic.default",
    "triggers": "lab.attacks.triggers", "training": "lab.attacks.training",
    "pruning": "lab.defenses.pruning", "goodnet": "lab.defenses.goodnet", "finepruning": "lab.defenses.finepruning",
    "detectors": "lab.defenses.detectors", "oracle": "lab.defenses.oracle",
    "metrics": "lab.evaluation", "activations": "lab.evaluation.activations",
    "analysis": "lab.evaluation.analysis", "plots": "lab.evaluation.plots",
    "challenge": "lab.course.challenge", "student": "lab.course.student", "notebooks": "lab.course.notebooks",
    "checks": "lab.course.checks", "autograde": "lab.course.autograde",
    "bench": "lab.course.bench", "instructor_cli": "lab.cli.instructors",
}


class _FlatNameFinder(_importlib_abc.MetaPathFinder, _importlib_abc.Loader):
    """Makes ``import lab.pruning`` (and ``python -m lab.notebooks``) give the module's new home.

    The alias and the module are one object in ``sys.modules``, so state,
    monkeypatching and ``isinstance`` checks agree whichever name is used.
    """

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != __name__ or name not in FLAT_NAMES:
            return None
        return _importlib_util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return _importlib.import_module(FLAT_NAMES[spec.name.partition(".")[2]])

    def exec_module(self, module):
        pass  # already executed under its real name

    def get_code(self, fullname):
        """``python -m lab.<flat name>`` runs the real module's code as ``__main__``."""
        real = FLAT_NAMES[fullname.partition(".")[2]]
        return _importlib_util.find_spec(real).loader.get_code(real)


if not any(isinstance(finder, _FlatNameFinder) for finder in _sys.meta_path):
    _sys.meta_path.insert(0, _FlatNameFinder())


def __getattr__(name: str):
    """``lab.pruning`` etc. after a bare ``import lab``: imported on first use."""
    if name in FLAT_NAMES:
        module = _importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
