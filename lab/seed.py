"""One seed call for Python, numpy and TensorFlow."""

from __future__ import annotations

import os
import random

from lab.constants import DEFAULT_SEED


def set_seed(seed: int = DEFAULT_SEED) -> int:
    """Seed Python's ``random``, numpy's global generator and TensorFlow.

    Also asks TensorFlow for deterministic kernels, so a rerun on the same
    machine gives the same numbers. Returns the seed so notebooks can print it.
    """
    import numpy as np  # imported here, as keras below, so `import lab` needs nothing but the standard library
    import keras        # (the setup cell imports lab.setup before the lab's requirements are installed)

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)

    keras.utils.set_random_seed(seed)  # Python, numpy and the TF backend
    import tensorflow as tf

    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF without the switch
        pass
    return seed
