"""Defenses against BadNets, one module each, all behind one contract (:mod:`lab.defenses.base`).

- ``lab.defenses.base``             the contract: :class:`Classifier`, :class:`DefenseResult`, :class:`Defense`,
                                    the :data:`REGISTRY` (``@register``) and :func:`get`
- ``lab.defenses.surgery``          weight surgery shared by every defense: clone a model, zero channels
- ``lab.defenses.pruning``          the pruning defense, public API first: sweep, thresholds, saving B'
- ``lab.defenses.pruning_plan``     is the exact shortcut valid for a model, which engine runs the sweep
- ``lab.defenses.pruning_engines``  the three sweep engines ("fast", "masked", "zero-weights")
- ``lab.defenses.goodnet``          the repaired N+1-class network G as one safe-mode Keras file
- ``lab.defenses.holdout``          the per-class split of clean validation data (fit part / held-out part)
- ``lab.defenses.fitting``          the training core: keep the best held-out epoch (``fit_keep_best``),
                                    the compiled training step (``compiled_step``)
- ``lab.defenses.augment``          generic augmentations incl. random erasing (for defenses that train)
- ``lab.defenses.perturbation``     universal adversarial perturbations from clean data (for unlearning)
- ``lab.defenses.finepruning``      fine-tuning and fine-pruning on clean data
- ``lab.defenses.detectors``        run-time detectors: confidence detector, STRIP
- ``lab.defenses.reverse``          where universal perturbations flow; Neural Cleanse trigger reversal; anomaly index
- ``lab.defenses.unlearn``          compiled unlearning / fine-tuning steps shared by the repairs below
- ``lab.defenses.neural_cleanse``   Neural Cleanse (Wang et al. 2019) with a target-first candidate search
- ``lab.defenses.reverse_unlearn``  the lab's iterative reverse-and-unlearn with distillation
- ``lab.defenses.gate``             "does this model look backdoored?" from clean data; ``auto`` = gate + repair
- ``lab.defenses.ibau``             I-BAU (Zeng et al. 2022), implicit-hypergradient adversarial unlearning
- ``lab.defenses.nad``              NAD (Li et al. 2021), neural attention distillation
- ``lab.defenses.ft_sam``           FT-SAM (Zhu et al. 2023), fine-tuning with sharpness-aware minimisation
- ``lab.defenses.repair``           ``python -m lab repair``: run a repair, save it, report what it decided
- ``lab.defenses.oracle``           attack-aware pruning with poisoned data: a labelled comparison, NOT a
                                    defense (kept out of the registry)

Importing this package imports every module in it (:func:`lab.defenses.base.discover`),
which registers every defense: ``lab.defenses.REGISTRY`` maps a name to its
:class:`Defense` class, ordered by each class's ``table_order`` (07's table
order). To add one, see :mod:`lab.defenses.base` and the README's "Adding a
defense / an attack".
"""

from lab.defenses.base import (KINDS, REGISTRY, Classifier, Defense, DefenseResult, build, get,  # noqa: F401
                               names, register)
from lab.defenses.base import discover as _discover

_discover()
