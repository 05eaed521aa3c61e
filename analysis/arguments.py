"""argparse types of the analyses' options: numbers checked when the command line is parsed.

Each raises :class:`argparse.ArgumentTypeError`, which ``pet-analyze`` prints as one line
("argument --bins-cos: must be a positive integer, got '0'") with exit status 2.
"""

import argparse
import math


def _number(text: str, kind, description: str):
    """``kind(text)`` (int or float), or an ArgumentTypeError saying it must be ``description``."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {description}, got '{text}'") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {description}, got '{text}'")
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1 (bins, blocks, segments, molecules, chunk sizes)."""
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got '{text}'")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (time steps, distances, temperatures, viscosities, charges)."""
    value = _number(text, float, "a finite positive number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got '{text}'")
    return value


def non_negative_float(text: str) -> float:
    """A finite number ≥ 0 (the start of a fit window)."""
    value = _number(text, float, "a finite number ≥ 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got '{text}'")
    return value
