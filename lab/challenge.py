"""Flat alias of :mod:`lab.course.challenge` (``from lab import challenge`` keeps working)."""

import sys as _sys

from lab.course import challenge as _challenge

_sys.modules[__name__] = _challenge
