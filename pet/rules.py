"""Typed checks of configuration values: each :class:`Rule` says in words what a key accepts and
turns an accepted value into the value used (pet-train's config, :data:`pet.train.SECTION_RULES`)."""

import math
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

from .arguments import integers_from


class Rule(NamedTuple):
    """What one config key accepts: ``allowed`` says it in words (for the error message), ``check``
    turns a value into the value used and raises ValueError or TypeError for any other."""

    allowed: str
    check: Callable[[Any], Any]


EXPONENT_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")
"""Numbers such as 1e-3 or 1.0e3, which PyYAML (YAML 1.1) reads as strings."""


def as_number(value) -> float:
    """``value`` as a finite float: an int, a float, or a string such as "1e-3" that PyYAML reads
    as text; ValueError for anything else (a bool, any other string)."""
    if isinstance(value, str) and EXPONENT_NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def as_integer(value) -> int:
    """``value`` if it is an int (not a bool, a float or a string), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return value


def number(allowed: str, accepts: Callable[[float], bool]) -> Rule:
    """A number (see :func:`as_number`) for which ``accepts`` is true."""
    def check(value):
        value = as_number(value)
        if not accepts(value):
            raise ValueError(f"out of range: {value}")
        return value
    return Rule(allowed, check)


def integer(minimum: int) -> Rule:
    """An integer of at least ``minimum``."""
    def check(value):
        if as_integer(value) < minimum:
            raise ValueError(f"below {minimum}: {value}")
        return value
    return Rule(integers_from(minimum), check)


def nullable(rule: Rule, meaning: str) -> Rule:
    """``rule``, or null (None), which means ``meaning``."""
    return Rule(f"null ({meaning}) or {rule.allowed}",
                lambda value: None if value is None else rule.check(value))


def choice(*names: str) -> Rule:
    """One of ``names``."""
    def check(value):
        if value not in names:
            raise ValueError(f"not one of {names}: {value!r}")
        return value
    return Rule(" or ".join(names), check)


def _path(value) -> str:
    """``value`` (a non-empty string or a Path) as text."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a path: {value!r}")
    return value


def _boolean(value) -> bool:
    """``value`` if it is a bool: YAML's true/false (a string such as "no" is not)."""
    if not isinstance(value, bool):
        raise ValueError(f"not a bool: {value!r}")
    return value


PATH = Rule("a path (a string)", _path)
BOOLEAN = Rule("true or false", _boolean)
POSITIVE_INTEGER = integer(1)
POSITIVE_NUMBER = number("a positive number", lambda x: x > 0)
NON_NEGATIVE_NUMBER = number("a number >= 0", lambda x: x >= 0)
