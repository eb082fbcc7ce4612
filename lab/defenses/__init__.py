"""Defenses on one contract (:mod:`lab.defenses.base`): each takes the BadNet and clean validation data only."""

from lab.defenses.base import REGISTRY, Defense, DefenseResult, get, register  # noqa: F401
from lab.defenses import neural_cleanse, reverse_unlearn, gate, nad, ft_sam, ibau  # noqa: F401,E402  (fill the registry)
