"""Argument checks shared by the ShapeWorld modules.

Every public function of ``handbook.shapeworld`` checks its input and raises a ``ValueError``
that names the argument and says what was expected, so that a typo ("cubee") or a wrong shape
fails at once with a clear message instead of deep inside a tensor operation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_choice(name: str, value: object, choices: Sequence[str]) -> int:
    """The index of ``value`` in ``choices``; ValueError naming ``name`` if it is not one of them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return choices.index(value)


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (bools are refused: ``True`` is not a size)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def check_real(name: str, value: object, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite float in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        # Accept numpy and 0-d torch scalars too: anything float() understands without loss.
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name}: expected a finite number in [{low}, {high}], got {value!r}")
    return value
