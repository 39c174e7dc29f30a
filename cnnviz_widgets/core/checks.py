"""Argument checks that the core functions and the widgets share: one mistake, one message.

Each check returns the value in the type the caller computes with, or raises a
:class:`CnnvizError` that says what the argument is and what it must be.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError, InputTypeError


def _is_number(value) -> bool:
    """An int or float, numpy's included; a bool is a flag, not a number."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def count(name: str, value, meaning: str, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``; floats (even 2.0), bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} is {meaning} and must be an int >= {minimum}, got {value!r}.")
    return int(value)


def positive_number(name: str, value, meaning: str) -> float:
    """``value`` as a finite float > 0."""
    if not (_is_number(value) and np.isfinite(value) and value > 0):
        raise InputError(f"{name} is {meaning} and must be a finite number > 0, got {value!r}.")
    return float(value)


def value_range(name: str, value) -> tuple[float, float]:
    """``value`` as (low, high): two finite numbers, low < high."""
    pair = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else ()
    if not (len(pair) == 2 and all(_is_number(v) and np.isfinite(v) for v in pair) and pair[0] < pair[1]):
        raise InputError(
            f"{name} is the pixel range of the model's inputs and must be (low, high), two finite "
            f"numbers with low < high, e.g. (0, 255) or (0, 1); got {value!r}."
        )
    return float(pair[0]), float(pair[1])


def function_or_none(name: str, value, meaning: str):
    """``value`` if it is None or can be called."""
    if value is not None and not callable(value):
        raise InputTypeError(f"{name} must be None or a function ({meaning}); got {type(value).__name__} {value!r}.")
    return value


def index(name: str, value, count: int, why: str, problem: str = "is out of range") -> int:
    """``value`` as an int in 0..count-1; a bool (an int to Python) is refused like any non-index.

    The message reads "{name} {value} {problem}: {why}, so use 0..{count - 1}.", e.g.
    "channel 8 is out of range: layer 'conv1' has 8 channels, so use 0..7."
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < count:
        raise InputError(f"{name} {value} {problem}: {why}, so use 0..{count - 1}.")
    return int(value)
