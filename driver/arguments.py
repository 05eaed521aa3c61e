"""argparse types of pet-driver and pet-run: numbers checked when the command line is read.

A bad value ends the command with argparse's one-line ``PROG: error: argument --X: must be ...``
(exit status 2), saying what is allowed.
"""

import argparse
import math
from typing import Callable


def non_negative_int(text: str) -> int:
    """An integer ≥ 0 (e.g. a random seed)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def finite_float(low: float, high: float = math.inf, low_allowed: bool = True,
                 unit: str = "", why: str = "") -> Callable[[str], float]:
    """The argparse type of a finite number from ``low`` (included if ``low_allowed``) to ``high``;
    ``unit`` and ``why`` (the reason for the bounds) go into the error message."""
    allowed = f"{'>=' if low_allowed else '>'} {low:g}{unit}"
    if math.isfinite(high):
        allowed += f" and <= {high:g}{unit}"
    reason = f" ({why})" if why else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        in_range = (value >= low if low_allowed else value > low) and value <= high
        if not (math.isfinite(value) and in_range):
            raise argparse.ArgumentTypeError(f"must be a finite number {allowed}{reason}, got {text!r}")
        return value

    return parse
