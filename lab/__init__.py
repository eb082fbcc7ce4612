"""BadNet Pruning Lab: helpers the notebooks, the CLI and the tests share.

Modules, one job each:

- ``lab.errors``      one-line errors for bad input
- ``lab.seed``        one call seeds Python, numpy and TensorFlow
- ``lab.data``        CSAW-HackML h5 files: read, check, write, find layouts
- ``lab.models``      DeepID architecture, loading/saving models with their input scale
- ``lab.synthfaces``  the embedded default data set (procedural faces)
- ``lab.triggers``    backdoor triggers drawn onto images
- ``lab.training``    training clean and pruning-aware BadNets
- ``lab.default``     building the embedded default into the Lab 3 layout
- ``lab.manifest``    SHA-256 manifests
- ``lab.metrics``     accuracy, attack success, detection
- ``lab.cli``         ``python -m lab ...``
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow prints harmless oneDNN/grappler messages for this network; keep
# students' output readable. Users who want them set the variable themselves.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from lab.seed import set_seed  # noqa: E402,F401  (the one call every notebook makes)
