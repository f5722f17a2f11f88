"""The 3D objects of ShapeWorld, described exactly by their signed distance functions.

Every object sits at the origin of its own space, with y pointing up. A *signed distance
function* (SDF) gives, for any point, the distance to the object's surface, negative inside:

    sdf(p) < 0   inside,      sdf(p) = 0   on the surface,      sdf(p) > 0   outside.

The SDFs here are *exact* (not just bounds), which is what the text-to-3D chapter needs to score
a reconstructed shape in 3D, and what the renderer relies on when it marches a ray towards the
torus. Two tricks keep them short:

- A solid of revolution about the y axis (cylinder, cone, torus) is a 2D shape spun around the
  axis, and its nearest surface point always lies in the half-plane through the query point and
  the axis. So its exact 3D SDF is the exact 2D SDF of its cross-section, evaluated at
  ``(rho, y)`` with ``rho = sqrt(x^2 + z^2)`` the distance from the axis.
- Scaling an object by ``s`` scales every distance by ``s``: ``sdf_s(p) = s * sdf_1(p / s)``.
  So the two sizes share one set of dimensions (those of the large object) and a scale.
"""

from __future__ import annotations

import math

import torch

from handbook import checks

from ._threads import one_thread

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
SIZES = ("small", "large")

# Sizes are uniform scales of one set of dimensions. Small is 0.6x large: clearly smaller in a
# 32x32 image, yet still several pixels across so that its shape stays recognisable.
SMALL_SCALE = 0.6
LARGE_SCALE = 1.0
SIZE_SCALE = {"small": SMALL_SCALE, "large": LARGE_SCALE}

# Dimensions of the large objects, in world units. They are chosen so that all five objects look
# about equally big (about 2 units across), which keeps "size" a property of the size word only.
SPHERE_RADIUS = 1.0
CUBE_HALF_SIDE = 0.8            # the cube spans [-0.8, 0.8]^3
CYLINDER_RADIUS = 0.8
CYLINDER_HALF_HEIGHT = 0.8      # upright: the axis is y
CONE_BASE_RADIUS = 1.0
CONE_HALF_HEIGHT = 0.9          # base disc at y = -0.9, apex at y = +0.9 (apex up)
TORUS_MAJOR_RADIUS = 0.8        # from the centre to the middle of the tube
TORUS_MINOR_RADIUS = 0.3        # radius of the tube; the ring lies flat in the xz plane

# Radius of the smallest origin-centred sphere around each large object: a camera must stay
# outside it, and the renderer uses it to skip rays that cannot hit anything.
BOUNDING_RADIUS = {
    "sphere": SPHERE_RADIUS,
    "cube": CUBE_HALF_SIDE * math.sqrt(3.0),
    "cylinder": math.hypot(CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT),
    "cone": max(math.hypot(CONE_BASE_RADIUS, CONE_HALF_HEIGHT), CONE_HALF_HEIGHT),
    "torus": TORUS_MAJOR_RADIUS + TORUS_MINOR_RADIUS,
}


# Half the side of a cube around the origin that holds any large object in any pose (the cube's corners
# reach 0.8 sqrt 3 = 1.39): where 3D grids of ShapeWorld objects (chapters 7 and 8) are laid out.
SCENE_EXTENT = 1.4


def bounding_radius(shape: str, size: str) -> float:
    """Radius of the smallest sphere around the origin that contains the object."""
    checks.choice("shape", shape, SHAPES)
    checks.choice("size", size, SIZES)
    return BOUNDING_RADIUS[shape] * SIZE_SCALE[size]


# ---- exact SDFs of the large objects --------------------------------------------------------
# Written on the coordinates x, y, z (tensors of any one shape) rather than on (..., 3) points,
# so that the renderer can call them on its rays' coordinates without stacking them first.

def _radial(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Distance from the y axis, sqrt(x^2 + z^2)."""
    return torch.sqrt(x * x + z * z)


def _box2d(u: torch.Tensor, v: torch.Tensor, half_u: float, half_v: float) -> torch.Tensor:
    """Exact SDF of the 2D rectangle [-half_u, half_u] x [-half_v, half_v] at the point (u, v).

    Outside, the distance to the nearest corner or edge (the length of the positive part of
    ``q``); inside, minus the distance to the nearest edge (the largest negative component).
    """
    qu, qv = u.abs() - half_u, v.abs() - half_v
    outside = torch.sqrt(qu.clamp_min(0) ** 2 + qv.clamp_min(0) ** 2)
    inside = torch.maximum(qu, qv).clamp_max(0)
    return outside + inside


def _segment_distance(u, v, a: tuple[float, float], b: tuple[float, float]) -> torch.Tensor:
    """Distance from the points (u, v) to the 2D segment from a to b."""
    du, dv = b[0] - a[0], b[1] - a[1]
    # Project onto the segment, clamp to its end points, measure what is left.
    along = (((u - a[0]) * du + (v - a[1]) * dv) / (du * du + dv * dv)).clamp(0.0, 1.0)
    return torch.sqrt((u - a[0] - along * du) ** 2 + (v - a[1] - along * dv) ** 2)


def sphere_sdf(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y + z * z) - SPHERE_RADIUS


def cube_sdf(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # The 3D version of _box2d: positive part for the outside, largest component for the inside.
    qx, qy, qz = x.abs() - CUBE_HALF_SIDE, y.abs() - CUBE_HALF_SIDE, z.abs() - CUBE_HALF_SIDE
    outside = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2 + qz.clamp_min(0) ** 2)
    inside = torch.maximum(torch.maximum(qx, qy), qz).clamp_max(0)
    return outside + inside


def cylinder_sdf(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # Cross-section in (rho, y): the rectangle [-r, r] x [-h, h].
    return _box2d(_radial(x, z), y, CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT)


def cone_sdf(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # Cross-section in (rho, y): the isosceles triangle with apex (0, h) and base from (-R, -h)
    # to (R, -h). For rho >= 0 its boundary is the slanted side (apex to rim) and the base
    # (centre to rim); the y axis itself is not a surface, so it must not count as one.
    rho = _radial(x, z)
    h, radius = CONE_HALF_HEIGHT, CONE_BASE_RADIUS
    apex, rim, base_centre = (0.0, h), (radius, -h), (0.0, -h)
    distance = torch.minimum(_segment_distance(rho, y, apex, rim), _segment_distance(rho, y, base_centre, rim))
    # Inside: above the base and nearer the axis than the slanted side at that height.
    inside = (y >= -h) & (rho <= radius * (h - y) / (2 * h))
    return torch.where(inside, -distance, distance)


def torus_sdf(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # Cross-section in (rho, y): a disc of radius r centred at (R, 0).
    return torch.sqrt((_radial(x, z) - TORUS_MAJOR_RADIUS) ** 2 + y * y) - TORUS_MINOR_RADIUS


UNIT_SDF = {"sphere": sphere_sdf, "cube": cube_sdf, "cylinder": cylinder_sdf, "cone": cone_sdf, "torus": torus_sdf}


def _check_points(points: object) -> torch.Tensor:
    if not isinstance(points, torch.Tensor):
        raise ValueError(f"points: expected a torch.Tensor of shape (..., 3), got {type(points).__name__}")
    if points.ndim == 0 or points.shape[-1] != 3:
        raise ValueError(f"points: expected shape (..., 3), got {tuple(points.shape)}")
    if not points.is_floating_point():
        points = points.to(torch.get_default_dtype())
    return points


def signed_distance(points: torch.Tensor, shape: str, size: str) -> torch.Tensor:
    """Exact signed distance from ``points`` (..., 3) to the object, negative inside -> (...)."""
    checks.choice("shape", shape, SHAPES)
    checks.choice("size", size, SIZES)
    points = _check_points(points)
    scale = SIZE_SCALE[size]
    with one_thread():
        x, y, z = (points / scale).unbind(-1)                                 # (...) each
        return UNIT_SDF[shape](x, y, z) * scale


def occupancy(points: torch.Tensor, shape: str, size: str) -> torch.Tensor:
    """True where a point (..., 3) is inside the object or on its surface -> bool (...)."""
    return signed_distance(points, shape, size) <= 0
