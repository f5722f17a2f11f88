"""2D point sets on the outlines of simple shapes, for fast 2D diffusion demos.

A diffusion model on 2D points trains in seconds on a CPU and its samples can be plotted
directly, which makes it the best place to *see* what the forward and reverse processes do.
The data is points on a closed outline: circle, square, triangle, star or heart.

Points are spread uniformly *by arc length*: every piece of the outline of the same length gets
the same share of points. (Spreading them uniformly per edge or per curve parameter would crowd
them on short edges, or where the heart's parametrisation runs slowly.) Each outline except the
circle is a closed polygon; a point is drawn by picking a distance ``u`` along the whole outline
uniformly, finding the edge where that distance falls, and interpolating along that edge.

All outlines fit in the square [-OUTLINE_EXTENT, OUTLINE_EXTENT]^2, so that with a little noise
the points stay roughly within [-1, 1], the range a diffusion model's data is usually scaled to.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from handbook import checks

OUTLINES = ("circle", "square", "triangle", "star", "heart")

OUTLINE_EXTENT = 0.9          # every outline reaches at most this far from the origin along x or y
SQUARE_HALF_SIDE = 0.8        # a bit inside OUTLINE_EXTENT: the square's corners stick out most
STAR_POINTS = 5
STAR_INNER_RATIO = 0.382      # inner/outer radius of a regular five-pointed star: 1 / golden ratio^2
HEART_VERTICES = 1024         # the heart curve as a fine polygon: within 1e-4 of the true curve


def _heart_curve(angle: torch.Tensor) -> torch.Tensor:
    """The classic heart curve x = 16 sin^3 a, y = 13 cos a - 5 cos 2a - 2 cos 3a - cos 4a."""
    x = 16 * angle.sin() ** 3
    y = 13 * angle.cos() - 5 * (2 * angle).cos() - 2 * (3 * angle).cos() - (4 * angle).cos()
    return torch.stack([x, y], dim=-1)


def _regular_polygon(radii: Sequence[float], start_angle: float) -> torch.Tensor:
    """Vertices at the given radii, equally spaced in angle, counter-clockwise."""
    count = len(radii)
    angle = start_angle + 2 * math.pi * torch.arange(count, dtype=torch.float64) / count
    radius = torch.tensor(radii, dtype=torch.float64)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=-1)


@functools.lru_cache(maxsize=None)
def _polygon(outline: str) -> torch.Tensor:
    up = math.pi / 2       # the first vertex points straight up (triangle and star tips)
    if outline == "circle":
        angle = torch.linspace(0, 2 * math.pi, HEART_VERTICES + 1, dtype=torch.float64)[:-1]
        vertices = OUTLINE_EXTENT * torch.stack([angle.cos(), angle.sin()], dim=-1)
    elif outline == "square":
        s = SQUARE_HALF_SIDE
        vertices = torch.tensor([[s, s], [-s, s], [-s, -s], [s, -s]], dtype=torch.float64)
    elif outline == "triangle":
        vertices = _regular_polygon([OUTLINE_EXTENT] * 3, up)
    elif outline == "star":
        vertices = _regular_polygon([OUTLINE_EXTENT, OUTLINE_EXTENT * STAR_INNER_RATIO] * STAR_POINTS, up)
    else:  # heart: centre its bounding box and scale its larger half-extent to OUTLINE_EXTENT
        angle = torch.linspace(0, 2 * math.pi, HEART_VERTICES + 1, dtype=torch.float64)[:-1]
        curve = _heart_curve(angle)                                              # (V, 2)
        low, high = curve.amin(0), curve.amax(0)
        vertices = (curve - (low + high) / 2) * (2 * OUTLINE_EXTENT / (high - low).max())
    return vertices


def outline_polygon(outline: str) -> torch.Tensor:
    """The outline as a closed polygon, vertices (V, 2) float32 (the last joins the first).

    The circle comes as a fine polygon (for plotting); its points are drawn on the exact circle.
    """
    checks.choice("outline", outline, OUTLINES)
    return _polygon(outline).float()


def _on_polygon(vertices: torch.Tensor, n: int, generator) -> torch.Tensor:
    """n points uniform by arc length on the closed polygon ``vertices`` (V, 2) -> (n, 2)."""
    ends = torch.roll(vertices, -1, dims=0)                                      # (V, 2)
    edge_length = torch.linalg.vector_norm(ends - vertices, dim=-1)              # (V,)
    cumulative = torch.cumsum(edge_length, 0)                                    # (V,) distance at each edge's end
    distance = torch.rand(n, generator=generator, dtype=torch.float64) * cumulative[-1]   # (n,)
    edge = torch.searchsorted(cumulative, distance, right=True).clamp_max(len(vertices) - 1)
    along = (distance - (cumulative[edge] - edge_length[edge])) / edge_length[edge]       # (n,) in [0, 1)
    return vertices[edge] + along[:, None] * (ends[edge] - vertices[edge])               # (n, 2)


def outline_points(n: int, outline: str = "circle", noise: float = 0.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` points spread uniformly along an outline, plus gaussian noise of std ``noise`` -> (n, 2).

    Pass a seeded ``generator`` for reproducible points; None draws from PyTorch's global one.
    """
    checks.positive_int("n", n, 0)
    checks.choice("outline", outline, OUTLINES)
    noise = checks.real("noise", noise, low=0.0)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if outline == "circle":
        # Arc length on a circle is proportional to the angle, so a uniform angle is exact.
        angle = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi
        points = OUTLINE_EXTENT * torch.stack([angle.cos(), angle.sin()], dim=-1)       # (n, 2)
    else:
        points = _on_polygon(_polygon(outline), n, generator)                            # (n, 2)
    points = points.float()
    if noise > 0:
        points = points + noise * torch.randn(n, 2, generator=generator)
    return points


def load_points(n: int, outlines: Sequence[str] = OUTLINES, noise: float = 0.0, seed: int = 0):
    """A labelled 2D data set: points (n, 2) and labels (n,) long, indices into OUTLINES.

    Each point's outline is drawn uniformly from ``outlines``; the same arguments always give
    the same tensors.
    """
    checks.positive_int("n", n, 0)
    if isinstance(outlines, str) or not isinstance(outlines, Sequence) or len(outlines) == 0:
        raise ValueError(f"outlines: expected a non-empty sequence of names from {OUTLINES}, got {outlines!r}")
    label_of = torch.tensor([checks.choice("outlines", name, OUTLINES) for name in outlines])
    noise = checks.real("noise", noise, low=0.0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    labels = label_of[torch.randint(len(outlines), (n,), generator=generator)]     # (n,)
    points = torch.empty(n, 2)
    for label in label_of.unique().tolist():      # fixed (sorted) order keeps the draws reproducible
        chosen = labels == label
        points[chosen] = outline_points(int(chosen.sum()), OUTLINES[label], noise, generator)
    return points, labels
