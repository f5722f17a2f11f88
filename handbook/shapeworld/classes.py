"""The 30 classes of ShapeWorld images: one per (shape, colour) pair, numbered shape-major.

class = shape * NUM_COLOURS + colour, so class 7 is (cube, green): the judge, the classifiers and
the class-conditional models of chapters 3-5 all use this numbering; these functions turn a class
back into its parts and its name without writing the arithmetic by hand.
"""

from __future__ import annotations

import torch

from handbook import checks

from .geometry import SHAPES
from .render import COLOURS

NUM_SHAPES = len(SHAPES)                   # 5
NUM_COLOURS = len(COLOURS)                 # 6
NUM_CLASSES = NUM_SHAPES * NUM_COLOURS     # 30


def class_of(shape, colour):
    """The class of a shape and a colour: names ("cube", "green") or indices (ints or tensors)."""
    if isinstance(shape, str):
        shape = checks.choice("shape", shape, SHAPES)
    if isinstance(colour, str):
        colour = checks.choice("colour", colour, COLOURS)
    return shape * NUM_COLOURS + colour


def shape_and_colour(classes):
    """(shape index, colour index) of classes (an int or an integer tensor): the inverse of class_of."""
    if isinstance(classes, torch.Tensor) and (classes.is_floating_point() or classes.dtype == torch.bool):
        raise ValueError(f"classes: expected integer class indices, got a {classes.dtype} tensor")
    return classes // NUM_COLOURS, classes % NUM_COLOURS


def class_name(c: int) -> str:
    """The words of one class, colour first as in a caption: class_name(7) == "green cube"."""
    if isinstance(c, torch.Tensor):
        c = int(c)
    if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < NUM_CLASSES:
        raise ValueError(f"c: expected a class index in 0..{NUM_CLASSES - 1}, got {c!r}")
    shape, colour = shape_and_colour(c)
    return f"{COLOURS[colour]} {SHAPES[shape]}"
