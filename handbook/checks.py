"""Input checks shared by every module: one line at the top of a function, a clear error if not.

Every public function of the package checks what it is given and raises a ``ValueError`` that
names the argument and says what was expected, so that a wrong shape or a typo fails at once
with a message a student can act on, instead of deep inside a matrix product. The checks live
here, once, so that a model's ``forward`` reads as the model::

    B, C, H, W = checks.tensor("x", x, "B C H W", C=self.config.in_channels)   # (B, C, H, W)

Shapes are written as in the shape comments of the code: one letter (or word) per dimension;
a keyword fixes a letter's size, a number in the string fixes that dimension, and a letter used
twice must have the same size both times. ``...`` at the front allows any leading dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

_KINDS = {  # dtype= -> (words in the message, test)
    "float": ("float tensor", lambda t: t.is_floating_point()),
    "int": ("integer tensor", lambda t: not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)),
    "number": ("numeric tensor", lambda t: not (t.is_complex() or t.dtype == torch.bool)),
    None: ("tensor", lambda t: True),
}


def describe(value: Any) -> str:
    """How a value reads in an error message: a tensor's shape and dtype, else its type."""
    if isinstance(value, torch.Tensor):
        return f"a tensor {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    return f"{type(value).__name__} {value!r}" if isinstance(value, (int, float, str)) else type(value).__name__


def tensor(name: str, value: Any, dims: str, *, dtype: str | None = "float", **sizes: int) -> tuple[int, ...]:
    """The sizes of ``value``'s dimensions, after checking it is a tensor shaped ``dims``.

    ``tensor("x", x, "B C H W", C=3)`` -> (B, 3, H, W) for a float tensor with 3 channels;
    ``dtype`` is "float", "int" (integers, not bools), "number" (not bool or complex) or None.
    """
    letters = dims.split()
    leading = bool(letters) and letters[0] == "..."
    letters = letters[1:] if leading else letters
    want = ", ".join(["..."] * leading + [f"{d}={sizes[d]}" if d in sizes else d for d in letters])
    words, test = _KINDS[dtype]
    rank = "" if leading else f"{len(letters)}-D "
    expected = f"{name}: expected a {rank}{words} ({want}{',' if len(letters) == 1 and not leading else ''})"
    if not isinstance(value, torch.Tensor) or not test(value):
        raise ValueError(f"{expected}, got {describe(value)}")
    shape = tuple(value.shape)
    if len(shape) < len(letters) or (not leading and len(shape) != len(letters)):
        raise ValueError(f"{expected}, got {describe(value)}")
    seen = dict(sizes)
    for letter, size in zip(letters, shape[len(shape) - len(letters):]):
        fixed = int(letter) if letter.isdigit() else seen.setdefault(letter, size)
        if size != fixed:
            raise ValueError(f"{expected}, got {describe(value)}")
    return shape


def positive_int(name: str, value: Any, minimum: int = 1, multiple_of: int = 1, extra: str = "") -> int:
    """``value`` as an int >= ``minimum`` (and a multiple of ``multiple_of``); bools are refused
    (``True`` is not a size). ``extra`` says why, in the message."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or value % multiple_of:
        multiple = f", a multiple of {multiple_of}" if multiple_of > 1 else ""
        raise ValueError(f"{name}: expected an int >= {minimum}{multiple}{' ' + extra if extra else ''}, got {value!r}")
    return value


def choice(name: str, value: Any, choices: Sequence[Any]) -> int:
    """The index of ``value`` in ``choices``; ValueError naming ``name`` if it is not one of them."""
    # Same type and equal: 1 is not True, and a tensor or an array never compares ambiguously.
    found = [i for i, c in enumerate(choices) if type(value) is type(c) and value == c]
    if not found:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return found[0]


def real(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
         open_low: bool = False, open_high: bool = False) -> float:
    """``value`` as a finite float in the interval from ``low`` to ``high`` (closed unless told)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    try:  # numpy and 0-d torch scalars too: anything float() reads without loss
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {describe(value)}") from None
    inside = (low < number if open_low else low <= number) and (number < high if open_high else number <= high)
    if not math.isfinite(number) or not inside:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name}: expected a finite number in {interval}, got {value!r}")
    return number


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is True or False (not 0, 1 or "yes")."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def instance(name: str, value: Any, kind: type | tuple[type, ...], what: str | None = None) -> Any:
    """``value`` if it is a ``kind``; else ValueError saying what was expected (``what``, or the type)."""
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{name}: expected {what or 'a ' + names}, got {describe(value)}")
    return value


def generator(name: str, value: Any) -> torch.Generator | None:
    """``value`` if it is a ``torch.Generator`` or None (None: the global random stream)."""
    return instance(name, value, (torch.Generator, type(None)), "a torch.Generator or None")
