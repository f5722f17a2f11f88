"""Where tensors live: CPU by default, CUDA or Apple MPS when present.

The course runs on a CPU laptop; an accelerator only makes it faster. Results agree up to float
tolerance across devices when the random numbers are drawn by a CPU generator (``make_generator``)
and then moved to the device, as the samplers and the loss of ``handbook.diffusion`` do.
"""

from __future__ import annotations

import os

import torch

_CHOICES = ("auto", "cpu", "cuda", "mps")


def default_device(prefer: str | None = None) -> torch.device:
    """The device to use: ``prefer``, else $HANDBOOK_DEVICE, else CUDA, then MPS, then CPU.

    ``"auto"`` (the default) picks the fastest device present.
    """
    choice = (prefer or os.environ.get("HANDBOOK_DEVICE") or "auto").lower()
    if choice not in _CHOICES:
        raise ValueError(f"device: expected one of {_CHOICES}, got {choice!r}")
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch.cuda.is_available() is False")
    if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device: 'mps' was asked for but it is not available on this machine")
    return torch.device(choice)


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (the library never seeds globally).

    Random draws happen on the CPU and are then moved, so a seed gives the same numbers on every
    device.
    """
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"seed: expected an int or None, got {seed!r}")
    g = torch.Generator(device="cpu")
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g
