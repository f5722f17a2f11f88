"""Where does a ray first hit a ShapeWorld object, and which way does the surface face there?

A ray is ``origin + t * direction`` with a unit direction, so ``t`` is the distance travelled.
The renderer needs, for every pixel's ray, the smallest ``t > 0`` at which the ray meets the
object (``+inf`` if it never does) and the surface normal at that point (for shading).

Four of the five objects have closed-form answers, which are much faster than marching:

- sphere: ``|o + t d|^2 = R^2`` is a quadratic in ``t``;
- cube: the "slab" method: the ray is inside the cube where it is inside all three slabs
  ``-a <= x, y, z <= a`` at once, i.e. between the largest entry and the smallest exit;
- cylinder: the same idea with two pieces: the slab ``-h <= y <= h`` and the infinite tube
  ``x^2 + z^2 <= r^2`` (a quadratic);
- cone: the side is a quadratic (``x^2 + z^2 = k^2 (h - y)^2``), the base a plane; the nearest
  valid candidate wins.

The torus is a quartic, which is fiddly in float32, so it is *sphere traced*: starting where
the ray enters a cylinder around the ring, step forward by the exact signed distance (a step
that long can never jump through the surface) a fixed number of times, then pin the crossing
down by bisection.

Everything here works on the large object (``geometry`` dimensions); the renderer scales rays
for the small size. Vectors are passed as their three coordinates ``(x, y, z)``, each a tensor:
``origin`` coordinates (S, 1) broadcast against ``direction`` coordinates (S, P) for S scenes of
P pixels, so per-scene terms are computed once per scene, and every operation runs on plain
contiguous tensors (``v[..., 0]`` of a (S, P, 3) tensor would be a slow strided view).
"""

from __future__ import annotations

import math

import torch

from . import geometry as geo

INF = math.inf
# A direction component smaller than this is treated as this (with its sign), so that dividing
# by it gives a huge number rather than inf or nan (0 / 0) for rays parallel to a face.
TINY_COMPONENT = 1e-12
# Relative size of float32 rounding error in a discriminant b^2 - ac (a few ulps of b^2).
ROUNDING_SLACK = 1e-6
# Below this, a ray's horizontal part is so small that the ray counts as vertical (parallel to a
# cylinder's axis), where the tube quadratic has no roots.
VERTICAL_RAY = 1e-12
# Sphere tracing of the torus (world units of the large object, which is 2.2 units across).
# Search steps are at least TORUS_MIN_STEP long: a ray can then skip only a sliver of the tube
# as deep as MIN_STEP^2 / (8 * minor radius) ~ 0.001, far below a pixel. 24 of them reach the
# far side of the ring on every ray we tried (seen from anywhere, at both sizes). Bisection then
# shrinks the last step to TORUS_MIN_STEP / 2**TORUS_REFINE_STEPS < 0.001.
TORUS_SEARCH_STEPS = 24
TORUS_MIN_STEP = 0.05
TORUS_REFINE_STEPS = 6
TORUS_COMPACT_EVERY = 4        # steps between removing the rays that are done from the marching set


def _nearest_positive(*candidates: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The smallest ``t > 0`` among (t, valid) candidates, +inf where none is valid."""
    best = None
    for t, valid in candidates:
        t = torch.where(valid & (t > 0), t, INF)
        best = t if best is None else torch.minimum(best, t)
    return best


def _quadratic_roots(a, half_b, c):
    """Both roots of ``a t^2 + 2 half_b t + c = 0`` and whether they are real.

    The textbook formula loses all precision when ``b^2 >> 4ac`` (it subtracts two nearly equal
    numbers); this form computes one root from the sum and the other from ``c / q``, which also
    gives the single root of the linear case ``a = 0``.
    """
    discriminant = half_b * half_b - a * c
    root = torch.sqrt(discriminant.clamp_min(0))
    q = -(half_b + torch.copysign(root, half_b))
    # A ray that touches the surface (a double root, e.g. down the cone's axis onto its apex)
    # has a discriminant of 0 that rounding can make slightly negative: accept it.
    real = discriminant >= -ROUNDING_SLACK * half_b * half_b
    return q / a, c / q, real


def _slab_interval(o, d, half_width):
    """Entry and exit ``t`` of the ray in the slab ``-half_width <= coordinate <= half_width``.

    ``o`` and ``d`` hold one coordinate each; the ray is inside the slab between the two plane
    crossings, whichever order they come in.
    """
    inverse = 1.0 / torch.where(d.abs() < TINY_COMPONENT, torch.copysign(torch.full_like(d, TINY_COMPONENT), d), d)
    t0, t1 = (-half_width - o) * inverse, (half_width - o) * inverse
    return torch.minimum(t0, t1), torch.maximum(t0, t1)


def _cylinder_interval(o, d, radius, half_height):
    """Entry and exit ``t`` of the ray in the solid upright cylinder (entry > exit on a miss)."""
    (ox, oy, oz), (dx, dy, dz) = o, d
    slab_in, slab_out = _slab_interval(oy, dy, half_height)
    a = dx * dx + dz * dz
    half_b = ox * dx + oz * dz
    c = ox * ox + oz * oz - radius**2
    t1, t2, real = _quadratic_roots(a, half_b, c)
    tube_in = torch.where(real, torch.minimum(t1, t2), INF)
    tube_out = torch.where(real, torch.maximum(t1, t2), -INF)
    # A vertical ray is inside the tube everywhere (if it starts inside) or nowhere.
    vertical = a < VERTICAL_RAY
    tube_in = torch.where(vertical, torch.where(c <= 0, -INF, INF), tube_in)
    tube_out = torch.where(vertical, torch.where(c <= 0, INF, -INF), tube_out)
    return torch.maximum(slab_in, tube_in), torch.minimum(slab_out, tube_out)


def intersect_sphere(o, d) -> torch.Tensor:
    (ox, oy, oz), (dx, dy, dz) = o, d
    half_b = ox * dx + oy * dy + oz * dz                       # (S, P)
    c = ox * ox + oy * oy + oz * oz - geo.SPHERE_RADIUS**2     # (S, 1)
    discriminant = half_b * half_b - c
    # The camera is outside the sphere, so the nearer root is where the ray enters.
    t = -half_b - torch.sqrt(discriminant.clamp_min(0))
    return torch.where((discriminant >= 0) & (t > 0), t, INF)


def intersect_cube(o, d) -> torch.Tensor:
    t_in, t_out = None, None
    for o_axis, d_axis in zip(o, d):
        slab_in, slab_out = _slab_interval(o_axis, d_axis, geo.CUBE_HALF_SIDE)     # (S, P) each
        t_in = slab_in if t_in is None else torch.maximum(t_in, slab_in)
        t_out = slab_out if t_out is None else torch.minimum(t_out, slab_out)
    return torch.where((t_in <= t_out) & (t_in > 0), t_in, INF)


def intersect_cylinder(o, d) -> torch.Tensor:
    t_in, t_out = _cylinder_interval(o, d, geo.CYLINDER_RADIUS, geo.CYLINDER_HALF_HEIGHT)
    return torch.where((t_in <= t_out) & (t_in > 0), t_in, INF)


def intersect_cone(o, d) -> torch.Tensor:
    (ox, oy, oz), (dx, dy, dz) = o, d
    h, radius = geo.CONE_HALF_HEIGHT, geo.CONE_BASE_RADIUS
    k2 = (radius / (2 * h)) ** 2             # the side is rho = k (h - y): radius shrinks linearly
    below_apex = h - oy                                            # (S, 1)
    # Side: x^2 + z^2 - k^2 (h - y)^2 = 0 along the ray (this is a double cone; the height check
    # below keeps the lower nappe between base and apex).
    a = dx * dx + dz * dz - k2 * dy * dy
    half_b = ox * dx + oz * dz + k2 * below_apex * dy
    c = ox * ox + oz * oz - k2 * below_apex**2
    t1, t2, real = _quadratic_roots(a, half_b, c)

    def on_side(t):
        y = oy + t * dy
        return real & (y >= -h) & (y <= h)

    # Base: the plane y = -h, inside the rim.
    t_base = (-h - oy) / dy
    x, z = ox + t_base * dx, oz + t_base * dz
    on_base = x * x + z * z <= radius**2
    return _nearest_positive((t1, on_side(t1)), (t2, on_side(t2)), (t_base, on_base))


def _torus_distance(origin, direction, t):
    """Signed distance to the torus at ``origin + t * direction`` (coordinates of N rays)."""
    return geo.torus_sdf(*(o + t * d for o, d in zip(origin, direction)))


def _trace_torus(origin, direction, t, t_exit):
    """Sphere trace N rays (coordinates (N,) each) from ``t`` to ``t_exit`` -> hit ``t`` (N,), inf on a miss."""
    N = t.shape[0]
    # Where each ray crossed the surface: between t_outside (outside) and t_inside (inside).
    t_inside, t_outside = torch.full((N,), INF), torch.zeros(N)
    ray = torch.arange(N)                  # which of the N rays each row of the marching set is
    o, d = origin, direction               # the marching set shrinks; origin, direction stay whole
    t_before = t.clone()                   # last position known to be outside, per row
    crossed = torch.zeros(N, dtype=torch.bool)

    # 1. Search: sphere trace, but never step less than TORUS_MIN_STEP. Plain sphere tracing
    #    crawls along a ray that grazes the tube and may run out of steps before it reaches the
    #    far side; the minimum step lets it cross the surface instead, seen as a distance <= 0.
    for step in range(1, TORUS_SEARCH_STEPS + 1):
        distance = _torus_distance(o, d, t)
        crossed = crossed | (distance <= 0)
        t_before = torch.where(crossed, t_before, t)
        t = torch.where(crossed, t, t + distance.clamp_min(TORUS_MIN_STEP))
        if step % TORUS_COMPACT_EVERY == 0 or step == TORUS_SEARCH_STEPS:
            # Most rays are done after a few steps: set the crossed ones aside with their
            # bracket, drop those that left the bounding cylinder, and march on with the rest.
            done = crossed.nonzero().squeeze(1)
            t_inside[ray[done]], t_outside[ray[done]] = t[done], t_before[done]
            keep = (~crossed & (t <= t_exit)).nonzero().squeeze(1)
            ray, t, t_before, t_exit = ray[keep], t[keep], t_before[keep], t_exit[keep]
            o, d = [c[keep] for c in o], [c[keep] for c in d]
            crossed = torch.zeros_like(keep, dtype=torch.bool)
    # Rays still marching after the last step count as misses (grazing rays at the silhouette).

    # 2. Refine: halve the bracket of every ray that crossed the surface.
    hits = torch.isfinite(t_inside).nonzero().squeeze(1)                      # (M,)
    o, d = [c[hits] for c in origin], [c[hits] for c in direction]
    inside, outside = t_inside[hits], t_outside[hits]
    for _ in range(TORUS_REFINE_STEPS):
        middle = (inside + outside) / 2
        is_inside = _torus_distance(o, d, middle) <= 0
        inside = torch.where(is_inside, middle, inside)
        outside = torch.where(is_inside, outside, middle)
    t_hit = torch.full((N,), INF)
    t_hit[hits] = inside
    return t_hit


def intersect_torus(o, d) -> torch.Tensor:
    bound_radius = geo.TORUS_MAJOR_RADIUS + geo.TORUS_MINOR_RADIUS
    t_in, t_out = _cylinder_interval(o, d, bound_radius, geo.TORUS_MINOR_RADIUS)  # (S, P)
    S, P = t_in.shape
    # Trace only the rays that enter the bounding cylinder (about a fifth of them), as a flat
    # list of N rays; ray r belongs to scene r // P.
    rays = ((t_in <= t_out) & (t_out > 0)).flatten().nonzero().squeeze(1)       # (N,)
    scene = rays // P
    origin = [coordinate.reshape(S)[scene] for coordinate in o]               # (N,) each
    direction = [coordinate.reshape(S * P)[rays] for coordinate in d]         # (N,) each
    depth = torch.full((S * P,), INF)
    depth[rays] = _trace_torus(origin, direction, t_in.flatten()[rays].clamp_min(0), t_out.flatten()[rays])
    return depth.reshape(S, P)


INTERSECT = {
    "sphere": intersect_sphere,
    "cube": intersect_cube,
    "cylinder": intersect_cylinder,
    "cone": intersect_cone,
    "torus": intersect_torus,
}


# ---- surface normals at hit points (coordinates x, y, z on the large object -> unit normal) ------

def _horizontal(x, z):
    """The unit vector pointing away from the y axis, (x, 0, z) / rho, as (ux, uz), and rho."""
    rho = torch.sqrt(x * x + z * z).clamp_min(TINY_COMPONENT)
    return x / rho, z / rho, rho


def sphere_normal(x, y, z):
    length = torch.sqrt(x * x + y * y + z * z).clamp_min(TINY_COMPONENT)
    return x / length, y / length, z / length


def cube_normal(x, y, z):
    # The face that was hit is the one whose coordinate is largest in size.
    ax, ay, az = x.abs(), y.abs(), z.abs()
    on_x = (ax >= ay) & (ax >= az)
    on_y = ~on_x & (ay >= az)
    on_z = ~on_x & ~on_y
    return on_x * x.sign(), on_y * y.sign(), on_z * z.sign()


def cylinder_normal(x, y, z):
    ux, uz, rho = _horizontal(x, z)
    # On the surface one of the two signed distances is ~0 and the other negative: pick the ~0 one.
    on_cap = (y.abs() - geo.CYLINDER_HALF_HEIGHT) > (rho - geo.CYLINDER_RADIUS)
    zero = torch.zeros_like(x)
    return torch.where(on_cap, zero, ux), torch.where(on_cap, y.sign(), zero), torch.where(on_cap, zero, uz)


def cone_normal(x, y, z):
    h = geo.CONE_HALF_HEIGHT
    k = geo.CONE_BASE_RADIUS / (2 * h)
    ux, uz, rho = _horizontal(x, z)
    slant = math.sqrt(1 + k * k)
    side_distance = (rho - k * (h - y)) / slant
    on_base = -(y + h) > side_distance
    # The side's outward normal tilts up by the cone's half-angle: the gradient of rho + k y.
    zero = torch.zeros_like(x)
    return (torch.where(on_base, zero, ux / slant), torch.where(on_base, -1.0, k / slant),
            torch.where(on_base, zero, uz / slant))


def torus_normal(x, y, z):
    # Away from the nearest point of the tube's centre circle: (x, y, z) - R (ux, 0, uz).
    ux, uz, _ = _horizontal(x, z)
    nx, nz = x - geo.TORUS_MAJOR_RADIUS * ux, z - geo.TORUS_MAJOR_RADIUS * uz
    length = torch.sqrt(nx * nx + y * y + nz * nz).clamp_min(TINY_COMPONENT)
    return nx / length, y / length, nz / length


NORMAL = {
    "sphere": sphere_normal,
    "cube": cube_normal,
    "cylinder": cylinder_normal,
    "cone": cone_normal,
    "torus": torus_normal,
}
