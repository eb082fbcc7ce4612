"""Command-line argument checks shared by every ``python -m lab`` command.

argparse checks types and ranges before a command starts any work, and
:class:`OneLineParser` reports a bad argument the way the lab reports a bad
file: one line ``error: argument --X: expected ..., found ...`` on stderr and
exit status 2 (argparse's default prints the whole usage block first).
"""

from __future__ import annotations

import argparse
import math
import sys

SEED_MAX = 2**31 - 1  # numpy's global seed takes < 2**32; commands derive further seeds by adding to it


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (subcommand parsers inherit the class)."""

    def error(self, message: str):
        message = " ".join(str(message).split())
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _number(text: str, kind: type, expected: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
    return value


def int_at_least(minimum: int, why: str = ""):
    """An argparse ``type``: an integer >= ``minimum`` (``why`` is said in the error)."""
    expected = ("a positive integer" if minimum == 1 else f"an integer >= {minimum}") + (f" ({why})" if why else "")

    def parse(text: str) -> int:
        value = _number(text, int, expected)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (seconds, fractions)."""
    value = _number(text, float, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text!r}")
    return value


def seed(text: str) -> int:
    """An argparse ``type``: a seed in 0..:data:`SEED_MAX`."""
    expected = f"a seed in 0..{SEED_MAX}"
    value = _number(text, int, expected)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
    return value


def percentage_points(text: str) -> float:
    """An argparse ``type``: an accuracy drop threshold, a finite number strictly between 0 and 100."""
    expected = "a number strictly between 0 and 100 (percentage points)"
    value = _number(text, float, expected)
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
    return value


def float_between(low: float, high: float, what: str, low_open: bool = True, high_open: bool = True):
    """An argparse ``type``: a finite number in (low, high) (``*_open=False``: that end included)."""
    expected = (f"{what}: a number {'>' if low_open else '>='} {low:g} and {'<' if high_open else '<='} {high:g}")

    def parse(text: str) -> float:
        value = _number(text, float, expected)
        if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
        return value

    parse.__name__ = f"float_between_{low:g}_{high:g}"
    return parse


fraction = float_between(0.0, 1.0, "a fraction")


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr (newlines in ``message`` folded into spaces)."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
