"""Backdoor attacks: triggers, the attack spec, poisoning, BadNet training and building.

- ``lab.attacks.triggers``   the trigger registry (name -> draw function) and :func:`apply_trigger`
- ``lab.attacks.blended``, ``lab.attacks.wanet``   the whole-image triggers on float32 (n, H, W, 3) arrays
- ``lab.attacks.spec``       :class:`Attack` and :class:`TriggerSpec`: all-to-one, all-to-all, multi-trigger
- ``lab.attacks.poisoning``  triggered copies and the attacker's labels (numpy, course format)
- ``lab.attacks.training``   :func:`train_badnet`: clean, plainly poisoned or pruning-aware DeepID BadNets
- ``lab.attacks.building``   :func:`make_badnet`: a BadNet and its files in the Lab 3 layout; clean data sets

Adding a trigger: one ``@register_trigger("name")`` draw function in
``lab/attacks/triggers.py`` (and a case in ``tests/test_triggers.py``); every
list of triggers (``--trigger``, the challenge) reads the registry.
The names below are re-exported so ``from lab import attacks`` keeps one namespace.
"""

from lab.attacks.building import (MIN_ATTACK_SUCCESS, MIN_CLEAN_ACCURACY, TRAIN_FILES, WeakBadNet,  # noqa: F401
                                  check_strength, find_training_file, load_poisoned, make_badnet, make_clean_data,
                                  output_files)
from lab.attacks.poisoning import (ALL_TO_ALL_POISON_FRACTION, DEFAULT_POISON_FRACTION, attacked_rows,  # noqa: F401
                                   attacker_labels, check_noise_fraction, default_poison_fraction, poison,
                                   poisoned_sets, to_nchw_uint8, training_poison, warp_triggers)
from lab.attacks.spec import ATTACKS, TRIGGER_SYNTAX, Attack, TriggerSpec, parse_trigger, parse_triggers  # noqa: F401
from lab.attacks.training import TrainingConfig, check_epochs, train_badnet  # noqa: F401
from lab.attacks.triggers import REGISTRY as TRIGGER_REGISTRY, TRIGGERS, apply_trigger  # noqa: F401
from lab.constants import MODEL_FILE  # noqa: F401
from lab.evaluation.loop import trigger_table  # noqa: F401
