"""Measuring models: rates, the breakdown, the one evaluation loop, activations, analysis, figures.

- ``lab.evaluation.metrics``      accuracy, attack success, detection, CSR/CFR/ATR/DTR breakdown (pure numpy)
- ``lab.evaluation.loop``         the one evaluation loop; ``evaluate`` (the course's eval.py),
                                  ``comparison_table``, ``trigger_table``
- ``lab.evaluation.activations``  batched activations, per-channel means, Keract-ready dicts
- ``lab.evaluation.analysis``     target label, per-class accuracy, confidence, self-checks
- ``lab.evaluation.plots``        every figure of the lab (one place sets the seaborn theme)

The rates and tables are re-exported here, so ``lab.evaluation.evaluate``
and ``lab.evaluation.comparison_table`` work (``from lab import metrics`` is
``lab.evaluation.metrics``, the rates alone).
"""

from lab.evaluation.loop import (POOLED, backdoor_class_of, comparison_table, evaluate,  # noqa: F401
                                 model_breakdowns, trigger_table)
from lab.evaluation.metrics import (BREAKDOWN_COLUMNS, SHORT_NAMES, attack_success_rate, breakdown,  # noqa: F401
                                    clean_accuracy, clean_false_positive_rate, detection_rate, percent)
