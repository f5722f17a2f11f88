"""Render ShapeWorld objects to small RGB images with a ray caster, thousands per second on a CPU.

For each pixel we shoot a ray from a pinhole camera, find where it first hits the object
(``intersect``), and colour the pixel with simple diffuse shading:

    pixel = colour * (AMBIENT + DIFFUSE * max(0, normal . light))        (Lambert's cosine law)

Pixels whose ray misses are the plain light-grey BACKGROUND. Besides the image, a render returns
the object's mask and its depth (distance along the ray, +inf on the background), which the
text-to-3D chapter uses as ground truth.

The camera always looks at the origin. Its position is given in spherical coordinates, in
degrees: *azimuth* turns it around the vertical (y) axis, *elevation* lifts it above (positive)
or below (negative) the horizontal plane, and *distance* is how far it is from the origin.

Speed comes from batching: ``render_batch`` sorts the scenes by shape and intersects the rays
of many scenes of one shape with one set of tensor operations (no Python loop over pixels or
scenes), in chunks so that memory stays bounded at any resolution. It renders 2,048 mixed
32x32 scenes in a fraction of a second on one CPU core (``measure_images_per_second``).
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass

import torch

from handbook import checks

from . import geometry as geo
from ._threads import one_thread
from .intersect import INTERSECT, NORMAL

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
# Saturated and far apart in hue, so that even a dimly lit side keeps its colour name.
COLOUR_RGB = {
    "red": (0.86, 0.10, 0.10),
    "green": (0.12, 0.70, 0.18),
    "blue": (0.12, 0.30, 0.92),
    "yellow": (0.95, 0.84, 0.08),
    "purple": (0.58, 0.18, 0.80),
    "orange": (1.00, 0.50, 0.00),
}
BACKGROUND = (0.85, 0.85, 0.85)   # plain light grey: every colour above stands out against it

# Camera: from DEFAULT_DISTANCE with this field of view, the frame is about 3.6 units wide at the
# origin, so a large object (about 2 units across) fills 50-60% of the image width.
DEFAULT_DISTANCE = 5.0
FIELD_OF_VIEW_DEGREES = 40.0
ELEVATION_LIMIT_DEGREES = 90.0    # straight above or straight below

# Light: a fixed direction in the *camera's* frame (right, up, towards the viewer), i.e. a lamp
# above-left of the camera that moves with it. A light fixed in the world would leave the side
# seen from below in shadow; this way every view shows lit faces and the colour stays readable.
LIGHT_DIRECTION = (-0.35, 0.55, 0.75)
AMBIENT = 0.4                     # light that reaches every face, so shadowed sides are not black
DIFFUSE = 1.0 - AMBIENT           # a face turned straight to the light gets exactly its colour

# Rays intersected at once (64 scenes at 32x32): small enough that the temporary tensors stay in
# the CPU cache, large enough that Python's per-operation overhead stays small.
CHUNK_RAYS = 1 << 16


@dataclass(frozen=True)
class Render:
    """One rendered view: image (3, H, W) in [0, 1], mask (H, W) bool, depth (H, W) (+inf = miss)."""

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor


@dataclass(frozen=True)
class RenderBatch:
    """A batch of views: images (B, 3, H, W), masks (B, 1, H, W) bool, depth (B, 1, H, W)."""

    images: torch.Tensor
    masks: torch.Tensor
    depth: torch.Tensor


# ---- camera ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _pixel_directions(resolution: int) -> torch.Tensor:
    """Unit ray directions through the pixel centres, in the camera frame -> (H * W, 3).

    The camera frame has x to the right, y up and z towards the viewer, so the camera looks
    along -z; row 0 is the top of the image.
    """
    half_width = math.tan(math.radians(FIELD_OF_VIEW_DEGREES) / 2)
    centres = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution * 2 - 1   # (-1, 1)
    y, x = torch.meshgrid(-centres, centres, indexing="ij")                               # (H, W)
    directions = torch.stack([x * half_width, y * half_width, -torch.ones_like(x)], dim=-1)
    directions = directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
    return directions.reshape(-1, 3).float()                                              # (H*W, 3)


def camera_frames(azimuth: torch.Tensor, elevation: torch.Tensor, distance: torch.Tensor):
    """Camera positions (B, 3) and camera-to-world rotations (B, 3, 3) for angles in degrees.

    The rotation's columns are the camera's right, up and backward axes in world coordinates.
    """
    az, el = torch.deg2rad(azimuth.double()), torch.deg2rad(elevation.double())
    distance = distance.double()
    eye = torch.stack([el.cos() * az.sin(), el.sin(), el.cos() * az.cos()], dim=-1) * distance[:, None]
    backward = eye / distance[:, None]                 # from the origin towards the camera
    # "Right" is the direction the camera moves when the azimuth grows: horizontal, and well
    # defined even straight above or below, where right = cross(forward, world_up) is not.
    right = torch.stack([az.cos(), torch.zeros_like(az), -az.sin()], dim=-1)
    up = torch.linalg.cross(backward, right)
    rotation = torch.stack([right, up, backward], dim=-1)                                 # (B, 3, 3)
    return eye.float(), rotation.float()


def _ray_directions(camera_directions: torch.Tensor, rotation: torch.Tensor):
    """Camera-frame directions (P, 3) seen by S cameras (S, 3, 3) -> world x, y, z, each (S, P).

    A direction (a, b, c) in the camera frame is a * right + b * up + c * backward in the world.
    Written out per coordinate rather than as a batched matmul: the same arithmetic, but it gives
    the coordinates as separate contiguous tensors, the form the intersection code works on.
    """
    a, b, c = (v[None, :] for v in camera_directions.unbind(-1))                          # (1, P) each
    right, up, backward = rotation.unbind(-1)                                             # (S, 3) each
    return tuple(a * right[:, i, None] + b * up[:, i, None] + c * backward[:, i, None] for i in range(3))


def camera_rays(azimuth: float = 30.0, elevation: float = 20.0, distance: float = DEFAULT_DISTANCE,
                resolution: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The rays of one camera: origin (3,) and unit directions (H, W, 3), world coordinates.

    A pixel (i, j) sees the point ``origin + depth[i, j] * directions[i, j]``.
    """
    azimuth = checks.real("azimuth", azimuth)
    elevation = checks.real("elevation", elevation, -ELEVATION_LIMIT_DEGREES, ELEVATION_LIMIT_DEGREES)
    distance = checks.real("distance", distance)
    if distance <= 0:
        raise ValueError(f"distance: expected a positive distance from the origin, got {distance}")
    checks.positive_int("resolution", resolution, 1)
    eye, rotation = camera_frames(torch.tensor([azimuth]), torch.tensor([elevation]), torch.tensor([distance]))
    directions = torch.stack(_ray_directions(_pixel_directions(resolution), rotation), dim=-1)  # (1, H*W, 3)
    return eye[0], directions.reshape(resolution, resolution, 3)                          # (H, W, 3)


# ---- argument checks for render_batch ---------------------------------------------------------

def _as_vector(name: str, value, length: int | None, integer: bool) -> torch.Tensor:
    # Rendering runs on the CPU; labels sampled by a model on an accelerator are welcome too.
    tensor = torch.as_tensor(value).cpu()
    if tensor.ndim != 1 or (length is not None and tensor.shape[0] != length):
        expected = "B" if length is None else str(length)
        raise ValueError(f"{name}: expected a 1-D tensor of length {expected}, got shape {tuple(tensor.shape)}")
    if integer and (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool):
        raise ValueError(f"{name}: expected an integer tensor of indices, got dtype {tensor.dtype}")
    if not integer and not torch.isfinite(tensor.double()).all():
        raise ValueError(f"{name}: expected finite values")
    return tensor.long() if integer else tensor.float()


def _check_indices(name: str, indices: torch.Tensor, choices: tuple[str, ...]) -> None:
    if indices.numel() and (indices.min() < 0 or indices.max() >= len(choices)):
        raise ValueError(f"{name}: expected indices in [0, {len(choices)}) into {choices}, "
                         f"got values from {int(indices.min())} to {int(indices.max())}")


# ---- rendering --------------------------------------------------------------------------------

_SCALES = torch.tensor([geo.SIZE_SCALE[s] for s in geo.SIZES])                     # (2,)
_COLOUR_TABLE = torch.tensor([COLOUR_RGB[c] for c in COLOURS])                     # (6, 3)
_BOUNDING = torch.tensor([geo.BOUNDING_RADIUS[s] for s in geo.SHAPES])             # (5,)
_LIGHT_CAMERA = torch.nn.functional.normalize(torch.tensor(LIGHT_DIRECTION), dim=0)  # (3,)


def render_batch(shape_idx, colour_idx, size_idx, azimuth, elevation, distance=None,
                 resolution: int = 32) -> RenderBatch:
    """Render B scenes given as 1-D tensors of length B (indices into SHAPES, COLOURS, SIZES;
    angles in degrees; ``distance`` None for DEFAULT_DISTANCE, a number, or a tensor).
    """
    shape_idx = _as_vector("shape_idx", shape_idx, None, integer=True)
    B = shape_idx.shape[0]
    colour_idx = _as_vector("colour_idx", colour_idx, B, integer=True)
    size_idx = _as_vector("size_idx", size_idx, B, integer=True)
    azimuth = _as_vector("azimuth", azimuth, B, integer=False)
    elevation = _as_vector("elevation", elevation, B, integer=False)
    if distance is None or (isinstance(distance, (int, float)) and not isinstance(distance, bool)):
        distance = torch.full((B,), DEFAULT_DISTANCE if distance is None else float(distance))
    distance = _as_vector("distance", distance, B, integer=False)
    checks.positive_int("resolution", resolution, 1)
    for name, indices, choices in (("shape_idx", shape_idx, geo.SHAPES), ("colour_idx", colour_idx, COLOURS),
                                   ("size_idx", size_idx, geo.SIZES)):
        _check_indices(name, indices, choices)
    if (elevation.abs() > ELEVATION_LIMIT_DEGREES).any():
        raise ValueError(f"elevation: expected degrees in [-90, 90], got {elevation.abs().max().item()}")
    radius = _BOUNDING[shape_idx] * _SCALES[size_idx]                                 # (B,)
    if (distance <= radius).any():
        raise ValueError("distance: the camera must be outside the object, i.e. distance > its bounding "
                         f"radius (up to {radius.max().item():.3f}); got {distance.min().item()}")

    H = W = resolution
    P = H * W
    scenes_per_chunk = max(1, CHUNK_RAYS // P)
    with one_thread():
        # Group the scenes by shape (a stable sort), so that each shape's scenes are one slice.
        order = torch.argsort(shape_idx, stable=True)                                  # (B,)
        shape_counts = torch.bincount(shape_idx, minlength=len(geo.SHAPES)).tolist()
        eye, rotation = camera_frames(azimuth[order], elevation[order], distance[order])  # (B, 3), (B, 3, 3)
        scale = _SCALES[size_idx[order]]                                               # (B,)
        colour = _COLOUR_TABLE[colour_idx[order]]                                      # (B, 3)
        light = (rotation * _LIGHT_CAMERA).sum(-1)                                     # (B, 3) world frame
        # Intersect in the large object's space: shrinking the object by `scale` is the same as
        # moving the camera `1/scale` times further away (directions are unchanged).
        origin = eye / scale[:, None]                                                  # (B, 3)
        pixel_directions = _pixel_directions(resolution)                               # (P, 3)
        images = torch.empty(B, 3, P)
        depth = torch.empty(B, P)

        first = 0
        for shape, count in zip(geo.SHAPES, shape_counts):
            for start in range(first, first + count, scenes_per_chunk):
                chunk = slice(start, min(start + scenes_per_chunk, first + count))     # S scenes
                o = tuple(origin[chunk, i, None] for i in range(3))                    # (S, 1) each
                d = _ray_directions(pixel_directions, rotation[chunk])                 # (S, P) each
                t = INTERSECT[shape](o, d)                                             # (S, P)
                hit = torch.isfinite(t)
                depth[chunk] = t * scale[chunk, None]

                # Lambert shading. Missed rays get t = 0 (a harmless point) and the background.
                t_surface = torch.where(hit, t, 0.0)
                nx, ny, nz = NORMAL[shape](*(o_i + t_surface * d_i for o_i, d_i in zip(o, d)))  # (S, P) each
                lx, ly, lz = (light[chunk, i, None] for i in range(3))                 # (S, 1) each
                lambert = (nx * lx + ny * ly + nz * lz).clamp_min(0)                   # cos(normal, light)
                shade = AMBIENT + DIFFUSE * lambert                                    # (S, P)
                for channel in range(3):
                    images[chunk, channel] = torch.where(hit, colour[chunk, channel, None] * shade,
                                                         BACKGROUND[channel])
            first += count

        # Undo the grouping: scene order[i] was rendered in row i.
        restore = torch.argsort(order)                                                 # (B,)
        images = images.index_select(0, restore).reshape(B, 3, H, W)                   # (B, 3, H, W)
        depth = depth.index_select(0, restore).reshape(B, 1, H, W)                     # (B, 1, H, W)
    return RenderBatch(images=images, masks=torch.isfinite(depth), depth=depth)


def render(shape: str, colour: str, size: str, azimuth: float = 30.0, elevation: float = 20.0,
           distance: float = DEFAULT_DISTANCE, resolution: int = 32) -> Render:
    """Render one object: image (3, H, W), mask (H, W) and depth (H, W)."""
    batch = render_batch(
        torch.tensor([checks.choice("shape", shape, geo.SHAPES)]),
        torch.tensor([checks.choice("colour", colour, COLOURS)]),
        torch.tensor([checks.choice("size", size, geo.SIZES)]),
        torch.tensor([checks.real("azimuth", azimuth)]),
        torch.tensor([checks.real("elevation", elevation, -ELEVATION_LIMIT_DEGREES, ELEVATION_LIMIT_DEGREES)]),
        torch.tensor([checks.real("distance", distance)]),
        resolution=resolution,
    )
    return Render(image=batch.images[0], mask=batch.masks[0, 0], depth=batch.depth[0, 0])


def measure_images_per_second(n: int = 2048, resolution: int = 32, repeats: int = 5) -> float:
    """Median rendering speed of ``render_batch`` over a mixed batch of ``n`` scenes (images/s)."""
    checks.positive_int("n", n, 1)
    checks.positive_int("repeats", repeats, 1)
    generator = torch.Generator().manual_seed(0)
    scenes = (
        torch.arange(n) % len(geo.SHAPES),
        torch.randint(len(COLOURS), (n,), generator=generator),
        torch.randint(len(geo.SIZES), (n,), generator=generator),
        torch.rand(n, generator=generator) * 360,
        torch.rand(n, generator=generator) * 90 - 30,
    )
    render_batch(*(s[: min(n, 64)] for s in scenes), resolution=resolution)   # warm-up, not timed
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        render_batch(*scenes, resolution=resolution)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)
