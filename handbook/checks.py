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
from collections.abc import Mapping, Sequence
from typing import Any

import torch

_KINDS = {  # dtype= -> (words in the message, test)
    "float": ("float tensor", lambda t: t.is_floating_point()),
    "int": ("integer tensor", lambda t: not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)),
    "number": ("numeric tensor", lambda t: not (t.is_complex() or t.dtype == torch.bool)),
    "index": ("int64 or int32 tensor", lambda t: t.dtype in (torch.int64, torch.int32)),  # what nn.Embedding takes
    None: ("tensor", lambda t: True),
}


def describe(value: Any) -> str:
    """How a value reads in an error message: a tensor's shape and dtype, else its type."""
    if isinstance(value, torch.Tensor):
        return f"a tensor {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    return f"{type(value).__name__} {value!r}" if isinstance(value, (int, float, str)) else type(value).__name__


def tensor(name: str, value: Any, dims: str, *, dtype: str | None = "float",
           at_least: Mapping[str, int] | None = None, hint: str = "", **sizes: int) -> tuple[int, ...]:
    """The sizes of ``value``'s dimensions, after checking it is a tensor shaped ``dims``.

    ``tensor("x", x, "B C H W", C=3)`` -> (B, 3, H, W) for a float tensor with 3 channels;
    ``dtype`` is "float", "int" (integers, not bools), "number" (not bool or complex), "index"
    (int64 or int32, what ``nn.Embedding`` takes) or None. ``at_least={"N": 2}`` sets a letter's
    smallest size (two samples to estimate a covariance). ``hint`` ends the message: what to do instead.
    """
    letters = dims.split()
    leading = bool(letters) and letters[0] == "..."
    letters = letters[1:] if leading else letters
    at_least = dict(at_least or {})
    want = ", ".join(["..."] * leading + [f"{d}={sizes[d]}" if d in sizes else f"{d}>={at_least[d]}" if d in at_least
                                          else d for d in letters])
    words, test = _KINDS[dtype]
    rank = "" if leading else f"{len(letters)}-D "
    expected = f"{name}: expected a {rank}{words} ({want}{',' if len(letters) == 1 and not leading else ''})"
    if not isinstance(value, torch.Tensor) or not test(value):
        raise ValueError(f"{expected}, got {describe(value)}{'; ' + hint if hint else ''}")
    shape = tuple(value.shape)
    if len(shape) < len(letters) or (not leading and len(shape) != len(letters)):
        raise ValueError(f"{expected}, got {describe(value)}{'; ' + hint if hint else ''}")
    seen = dict(sizes)
    for letter, size in zip(letters, shape[len(shape) - len(letters):]):
        fixed = int(letter) if letter.isdigit() else seen.setdefault(letter, size)
        if size != fixed or size < at_least.get(letter, 0):
            raise ValueError(f"{expected}, got {describe(value)}{'; ' + hint if hint else ''}")
    return shape


def shapes(*, dtype: str | None = "float", sizes: Mapping[str, int] | None = None,
           masks: Mapping[str, tuple[Any, str]] | None = None, **named: tuple[Any, str]) -> dict[str, int]:
    """Several tensors at once, whose letters must agree across them:
    ``shapes(q=(q, "... T D"), k=(k, "... S D"), v=(v, "... S Dv"))`` -> {"T": .., "S": .., "D": .., "Dv": ..}.
    A letter's size is fixed by ``sizes`` or by the first tensor that has it; the ``...`` dimensions
    must be equal too. ``masks={"mask": (mask, "... T S")}``: each is None or a bool tensor that
    broadcasts to that shape (letters and ``...`` as found) without changing it (see ``mask``)."""
    sizes = dict(sizes or {})
    leading: tuple[int, ...] | None = None
    for name, (value, dims) in named.items():
        letters = dims.split()
        shape = tensor(name, value, dims, dtype=dtype, **{k: v for k, v in sizes.items() if k in letters})
        trailing = [d for d in letters if d != "..."]
        if letters and letters[0] == "...":
            if leading is not None and shape[:len(shape) - len(trailing)] != leading:
                raise ValueError(f"{name}: expected the leading dimensions {leading} of {next(iter(named))}, "
                                 f"got {describe(value)}")
            leading = shape[:len(shape) - len(trailing)]
        sizes.update((d, n) for d, n in zip(trailing, shape[len(shape) - len(trailing):]) if not d.isdigit())
    for name, (value, dims) in (masks or {}).items():
        letters = dims.split()
        front = leading or () if letters[:1] == ["..."] else ()
        mask(name, value, (*front, *(int(d) if d.isdigit() else sizes[d] for d in letters if d != "...")))
    return sizes


def mask(name: str, value: Any, shape: Sequence[int]) -> torch.Tensor | None:
    """``value`` if it is None or a bool tensor that broadcasts to ``shape`` without changing it."""
    if value is None:
        return None
    try:
        fits = value.dtype == torch.bool and torch.broadcast_shapes(value.shape, tuple(shape)) == tuple(shape)
    except (AttributeError, RuntimeError):
        fits = False
    if not fits:
        raise ValueError(f"{name}: expected a bool tensor that broadcasts to {tuple(shape)} (True = may attend), "
                         f"got {describe(value)}")
    return value


def positive_int(name: str, value: Any, minimum: int = 1, multiple_of: int = 1, extra: str = "", *,
                 maximum: int | None = None, none_ok: bool = False) -> int | None:
    """``value`` as an int >= ``minimum`` (and <= ``maximum``, a multiple of ``multiple_of``); bools are
    refused (``True`` is not a size); None passes when ``none_ok``. ``extra`` says why, in the message."""
    if value is None and none_ok:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or value % multiple_of \
            or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        multiple = f", a multiple of {multiple_of}" if multiple_of > 1 else ""
        alternative = " or None" if none_ok else ""
        raise ValueError(f"{name}: expected an int {bounds}{multiple}{alternative}{' ' + extra if extra else ''}, "
                         f"got {value!r}")
    return value


def positive_ints(**values: Any) -> None:
    """Several sizes at once, each an int >= 1: ``positive_ints(d_model=d_model, n_heads=n_heads)``."""
    for name, value in values.items():
        positive_int(name, value)


def divisible(name: str, value: Any, divisor_name: str, divisor: Any) -> int:
    """``value`` if it is an int >= 1 that ``divisor``, an int >= 1 too, divides:
    ``divisible("d_model", d_model, "n_heads", n_heads)`` (heads, patches, norm groups)."""
    positive_int(divisor_name, divisor)
    return positive_int(name, value, multiple_of=divisor, extra=f"({divisor_name}={divisor})")


def int_tuple(name: str, value: Any, minimum: int = 1, *, length: int | None = None) -> tuple[int, ...]:
    """``value`` (a tuple, list or torch.Size) as a non-empty tuple of ints >= ``minimum``: a shape;
    of ``length`` ints when given (an image size (Hh, Ww))."""
    items = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else ()
    if not items or not all(isinstance(n, int) and not isinstance(n, bool) and n >= minimum for n in items) \
            or (length is not None and len(items) != length):
        count = "non-empty tuple of" if length is None else f"tuple of {length}"
        raise ValueError(f"{name}: expected a {count} ints >= {minimum}, got {value!r}")
    return items


def divides(name: str, value: Any, what: str, sizes: Sequence[int]) -> int:
    """``value`` if it is an int >= 1 that divides every one of ``sizes`` (ints >= 1 too), named ``what``
    in the message: ``divides("patch_size", p, "the image size", (Hh, Ww))`` -> "patch_size 5 does not
    divide the image size 32x32". The size-side twin of ``divisible`` (one size, one divisor)."""
    positive_int(name, value)
    shown = "x".join(map(str, sizes))
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ValueError(f"{what}: expected ints >= 1, got {shown}")
    if any(n % value for n in sizes):
        raise ValueError(f"{name} {value} does not divide {what} {shown}")
    return value


def batch(name: str, value: Any, size: int | None = None, *, min_size: int = 0, min_dims: int = 1,
          dtype: str | None = None) -> int:
    """The batch size of ``value``: a tensor with ``min_dims`` or more dimensions, the batch first, of
    ``size`` when given (a condition for a batch of images) and at least ``min_size``; any other sizes."""
    words, test = _KINDS[dtype]
    if not isinstance(value, torch.Tensor) or value.dim() < min_dims or not test(value):
        dims = f" and at least {min_dims} dimensions" if min_dims > 1 else ""
        raise ValueError(f"{name}: expected a {words} with a batch dimension first{dims}, got {describe(value)}")
    if (size is not None and len(value) != size) or len(value) < min_size:
        want = f"batch size {size}" if size is not None else f"a batch of at least {min_size}"
        raise ValueError(f"{name}: expected {want} first, got {describe(value)}")
    return len(value)


def same_shape(*, min_dims: int = 1, dtype: str | None = None, **named: Any) -> tuple[int, ...]:
    """The shape of several tensors that must have one: ``same_shape(x0=x0, eps=eps)``. The first is a
    tensor with a batch dimension first (see ``batch``); every other one must have its shape."""
    (first, reference), *others = named.items()
    batch(first, reference, min_dims=min_dims, dtype=dtype)
    words, test = _KINDS[dtype]
    for name, value in others:
        if not isinstance(value, torch.Tensor) or value.shape != reference.shape or not test(value):
            raise ValueError(f"{name}: expected the shape of {first} {tuple(reference.shape)}"
                             f"{'' if dtype is None else ' (a ' + words + ')'}, got {describe(value)}")
    return tuple(reference.shape)


def extremes(value: torch.Tensor) -> str:
    """How the values of a tensor read in an error message: "min 0.1 and max 1" (or "no values")."""
    if not value.numel():
        return "no values"
    return f"min {value.min().item():.4g} and max {value.max().item():.4g}"


def within(name: str, value: torch.Tensor, low: float = -math.inf, high: float = math.inf, *,
           open_low: bool = False, open_high: bool = False, dims: str | None = None,
           at_least: Mapping[str, int] | None = None) -> torch.Tensor:
    """``value`` (a tensor) if its values are finite and lie between ``low`` and ``high`` (closed unless
    told): betas in (0, 1), images in [0, 1], token ids in 0..V-1. An integer tensor's closed range
    reads as ``0..V-1``. With ``dims`` (and ``at_least``) its shape is checked first, as ``tensor``
    does (any dtype): ``within("betas", betas, 0, 1, open_low=True, open_high=True, dims="T")``."""
    if dims is not None:
        tensor(name, value, dims, dtype=None, at_least=at_least)
    inside = (value > low if open_low else value >= low) & (value < high if open_high else value <= high)
    if value.is_floating_point():
        inside &= torch.isfinite(value)  # -inf >= -inf
    if not bool(inside.all()):
        integer = not value.is_floating_point() and not (open_low or open_high) and math.isfinite(low + high)
        if integer:
            want = f"values in {low}..{high}"
        elif math.isinf(low) and math.isinf(high):
            want = "finite values"
        else:
            want = f"finite values in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name}: expected {want}, got {extremes(value)}")
    return value


def indices(name: str, value: Any, low: int, high: int, *, batch: int | None = None) -> torch.Tensor:
    """``value`` as a CPU long tensor: an int (0-D, one for the whole batch) or a (B,) integer tensor
    (``batch`` entries when given), every value in ``low``..``high``: timesteps, class labels."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = torch.tensor(value)
    elif not isinstance(value, torch.Tensor) or value.dim() > 1 or not _KINDS["int"][1](value):
        raise ValueError(f"{name}: expected an int or a 1-D integer tensor, got {describe(value)}")
    value = value.detach().to("cpu", torch.long)
    if value.dim() == 1 and batch is not None and len(value) != batch:
        raise ValueError(f"{name}: expected {batch} values (one per batch element), got {len(value)}")
    return within(name, value, low, high)


def given(name: str, value: Any, why: str) -> Any:
    """``value`` if it is not None: an argument that is optional in general but needed here (``why``)."""
    if value is None:
        raise ValueError(f"{name}: required {why}")
    return value


def item_or_batch(name: str, value: Any, batch_name: str, batch: Any, why: str) -> torch.Tensor:
    """``value`` as a tensor shaped like ``batch`` (a tensor, batch first), given as one item
    (``batch.shape[1:]``) or as a whole batch: the null condition of classifier-free guidance. Both are
    needed here (``why``)."""
    instance(batch_name, batch, torch.Tensor, f"a tensor (batch first) {why}")
    value = torch.as_tensor(given(name, value, why), dtype=batch.dtype, device=batch.device)
    choice(f"{name}'s shape", tuple(value.shape), (tuple(batch.shape[1:]), tuple(batch.shape)))
    return value.expand_as(batch)


def exclusive(why: str = "", **named: Any) -> None:
    """At most one of the ``named`` values is given (not None): ``exclusive(noise=noise, generator=generator)``;
    ``why`` says why, in the message."""
    given = [name for name, value in named.items() if value is not None]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)}: pass at most one of them{' (' + why + ')' if why else ''}")


def choice(name: str, value: Any, choices: Sequence[Any]) -> int:
    """The index of ``value`` in ``choices``; ValueError naming ``name`` if it is not one of them."""
    # Same type and equal: 1 is not True, and a tensor or an array never compares ambiguously.
    found = [i for i, c in enumerate(choices) if type(value) is type(c) and value == c]
    if not found:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return found[0]


def choices(**named: tuple[Any, Sequence[Any]]) -> None:
    """Several choices at once: ``choices(norm=(norm, ("pre", "post")), positional=(positional, POSITIONS))``."""
    for name, (value, options) in named.items():
        choice(name, value, options)


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


def reals(**named: tuple[Any, ...]) -> None:
    """Several numbers at once, each ``(value, low, high)`` or ``(value, low, high, bounds)``, ``bounds``
    one of "[]" (the default), "(]", "[)", "()": ``reals(dropout=(dropout, 0, 1, "[)"), s=(s, 0, math.inf))``.
    In order, so a bound may be an earlier value."""
    for name, (value, low, high, *bounds) in named.items():
        ends = bounds[0] if bounds else "[]"
        choice(f"{name}'s bounds", ends, ("[]", "(]", "[)", "()"))
        real(name, value, low, high, open_low=ends[0] == "(", open_high=ends[1] == ")")


def below(name: str, value: torch.Tensor, other_name: str, other: torch.Tensor) -> torch.Tensor:
    """``value`` if every one of its values is below ``other``'s (broadcast): t_prev < t for a step."""
    if not bool((value < other).all()):
        raise ValueError(f"{name}: expected {name} < {other_name}, got {name}={value.tolist()} and "
                         f"{other_name}={other.tolist()}")
    return value


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


def items(name: str, value: Any, kind: type, length: int | None = None, *, none_ok: bool = False) -> Any:
    """``value`` if it is a list or tuple of ``kind`` (``length`` of them when given), or None when
    ``none_ok``: ``items("titles", titles, str, B)``, one caption per image."""
    if value is None and none_ok:
        return None
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length) \
            or not all(isinstance(item, kind) for item in value):
        count = "" if length is None else f"{length} "
        got = f"{type(value).__name__} of {len(value)}" if isinstance(value, (list, tuple)) else describe(value)
        raise ValueError(f"{name}: expected a list of {count}{kind.__name__}{' or None' if none_ok else ''}, "
                         f"got {got}")
    return value


def generator(name: str, value: Any) -> torch.Generator | None:
    """``value`` if it is a ``torch.Generator`` or None (None: the global random stream)."""
    return instance(name, value, (torch.Generator, type(None)), "a torch.Generator or None")
