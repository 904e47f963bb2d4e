"""Checks of argument values that name the argument, what was given and what is accepted."""

from __future__ import annotations

import numbers


def positive_int(name: str, value, meaning: str = "") -> int:
    """Returns ``value`` as a Python int once it is a positive integer (a Python or NumPy integer, never a bool).

    meaning: what the number is, said in the error (``"the pointwise layers' width"``).
    Raises ValueError naming ``name`` otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        what = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name} must be a positive int{what}, got {value!r}.")
    return int(value)
