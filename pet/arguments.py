"""argparse types of every pet-ipi command line: numbers checked when the command line is read.

A bad value raises :class:`argparse.ArgumentTypeError`, which :class:`OneLineParser` (the parser
of every command) prints as ``PROG: error: argument --X: must be ..., got '...'`` with exit status
2, saying what is allowed.
"""

import argparse
import math
from typing import Callable


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, ``PROG: error: MESSAGE (see
    PROG --help)``, with exit status 2 (argparse's default prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def integers_from(minimum: int) -> str:
    """The words for "an integer ≥ ``minimum``" in the errors of options and of config values."""
    return {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")


def integer(minimum: int) -> Callable[[str], int]:
    """The argparse type of an integer ≥ ``minimum``."""
    allowed = integers_from(minimum)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    return parse


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


positive_int = integer(1)
"""Counts: bins, blocks, segments, molecules, frames, chunk sizes."""
non_negative_int = integer(0)
"""Random seeds."""
positive_float = finite_float(0.0, low_allowed=False)
"""Time steps, distances, temperatures, viscosities, charges."""
non_negative_float = finite_float(0.0)
"""The start of a fit window."""
