"""Radiance fields for chapter 8 (text-to-3D): ShapeWorld's camera, volume rendering, a voxel field.

A radiance field gives every point x of space a density sigma(x) >= 0 and an albedo a(x) in [0, 1]^3.
A camera ray r(t) = o + t d sees, with N samples t_1 < ... < t_N spaced delta_i apart (8.1):

    alpha_i = 1 - exp(-sigma_i delta_i)                 how much of the light the i-th slab stops
    T_i     = exp(-sum_{j<i} sigma_j delta_j)           how much light reaches it (transmittance)
    w_i     = T_i alpha_i                               its share of the pixel
    C       = sum_i w_i c_i + (1 - sum_i w_i) background

with c_i the shaded colour of sample i: ShapeWorld's own shading, albedo * (ambient + diffuse *
max(0, n . l)), the light fixed in the camera's frame, and the normal n = -grad sigma / |grad sigma|
(density rises into the object). DreamFusion also renders "albedo" (no shading) and "textureless"
(a white albedo, shading only: the shape without its colour).

The field here is a grid of G^3 voxels read by trilinear interpolation: the fast representation the
Magic3D paper argues for in its coarse stage (it uses a hash grid), and one that a CPU trains in
seconds. ``camera_rays`` is ShapeWorld's camera, so a field built from an object's exact signed
distance renders as ``shapeworld.render`` draws it (tests/test_nerf.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from handbook import checks, shapeworld
from handbook.shapeworld.geometry import SCENE_EXTENT
from handbook.shapeworld.render import (AMBIENT, BACKGROUND, COLOUR_RGB, DEFAULT_DISTANCE, DIFFUSE, LIGHT_DIRECTION,
                                        camera_frames)

EXTENT = SCENE_EXTENT   # the field lives in [-EXTENT, EXTENT]^3
SHADINGS = ("shaded", "albedo", "textureless")


@dataclass(frozen=True)
class Rays:
    """The rays of one camera: ``origin`` (3,), unit ``directions`` (H, W, 3) and the camera's
    ``light`` direction in world coordinates (3,) (ShapeWorld's light moves with the camera)."""

    origin: torch.Tensor
    directions: torch.Tensor
    light: torch.Tensor


def camera_rays(azimuth: float, elevation: float, distance: float = DEFAULT_DISTANCE, resolution: int = 32) -> Rays:
    """ShapeWorld's pinhole camera (same field of view, pose convention and light), as ``Rays``."""
    origin, directions = shapeworld.camera_rays(azimuth, elevation, distance, resolution)
    _, rotation = camera_frames(torch.tensor([float(azimuth)]), torch.tensor([float(elevation)]),
                                torch.tensor([float(distance)]))
    light = rotation[0] @ F.normalize(torch.tensor(LIGHT_DIRECTION), dim=0)     # camera frame -> world
    return Rays(origin, directions, light)


def compositing_weights(sigma: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """w_i = T_i alpha_i (8.1) along the last dimension: sigma, delta (..., N) -> weights (..., N)."""
    optical = sigma * delta                                                      # (..., N)
    alpha = 1.0 - torch.exp(-optical)
    # T_i = exp(-sum_{j<i} sigma_j delta_j): an exclusive cumulative sum
    transmittance = torch.exp(-(torch.cumsum(optical, dim=-1) - optical))
    return transmittance * alpha


def _box_interval(origin: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each ray (directions (R, 3)) enters and leaves the cube [-EXTENT, EXTENT]^3 (the slab
    method) -> near, far (R,); far <= near for a ray that misses."""
    inverse = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (-EXTENT - origin) * inverse                                            # (R, 3)
    t1 = (EXTENT - origin) * inverse
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


@dataclass(frozen=True)
class Rendered:
    """A volume-rendered view: image (3, H, W), opacity (H, W) = sum of the weights, depth (H, W) (the
    weights' mean distance, where opacity > 0), weights (H, W, N)."""

    image: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    weights: torch.Tensor


def volume_render(field: "VoxelField", rays: Rays, samples: int = 48, shading: str = "shaded",
                  generator: torch.Generator | None = None,
                  background: tuple[float, float, float] = BACKGROUND) -> Rendered:
    """Render ``field`` along ``rays`` with ``samples`` points per ray inside the field's cube: at the
    middle of each of ``samples`` equal bins, or at a random point of each (stratified sampling) when a
    ``generator`` is given, as NeRF trains. Differentiable with respect to the field."""
    checks.positive_int("samples", samples)
    checks.choice("shading", shading, SHADINGS)
    H, W, _ = rays.directions.shape
    directions = rays.directions.reshape(-1, 3)                                  # (R, 3)
    near, far = _box_interval(rays.origin, directions)                           # (R,)
    length = (far - near).clamp_min(0.0)                                         # 0 for a ray that misses
    offsets = (torch.rand(len(directions), samples, generator=generator) if generator is not None
               else torch.full((len(directions), samples), 0.5))                 # (R, N) in [0, 1)
    bins = torch.arange(samples, dtype=torch.float32)
    t = near[:, None] + (bins + offsets) / samples * length[:, None]             # (R, N)
    delta = (length / samples)[:, None].expand_as(t)                             # (R, N) the bin width
    points = rays.origin + t[..., None] * directions[:, None, :]                 # (R, N, 3)

    sigma, albedo, normal = field(points)                                        # (R, N), (R, N, 3) x 2
    weights = compositing_weights(sigma, delta)                                  # (R, N)
    colour = shade(albedo, normal, rays.light, shading)                          # (R, N, 3)
    opacity = weights.sum(-1)                                                    # (R,)
    back = torch.tensor(background, dtype=colour.dtype)
    image = (weights[..., None] * colour).sum(-2) + (1.0 - opacity)[:, None] * back      # (R, 3)
    depth = (weights * t).sum(-1) / opacity.clamp_min(1e-8)
    return Rendered(image=image.T.reshape(3, H, W), opacity=opacity.reshape(H, W), depth=depth.reshape(H, W),
                    weights=weights.reshape(H, W, samples))


def shade(albedo: torch.Tensor, normal: torch.Tensor, light: torch.Tensor, shading: str = "shaded") -> torch.Tensor:
    """Colours (..., 3): ShapeWorld's albedo * (AMBIENT + DIFFUSE * max(0, n . l)) ("shaded"), the albedo
    alone ("albedo"), or a white albedo shaded ("textureless", DreamFusion's shape-only render)."""
    if shading == "albedo":
        return albedo
    lambert = (normal * light).sum(-1, keepdim=True).clamp_min(0.0)               # (..., 1) cos(n, l)
    light_received = AMBIENT + DIFFUSE * lambert
    return light_received.expand_as(albedo) if shading == "textureless" else albedo * light_received


class ExactField:
    """The field of a ShapeWorld object from its exact geometry: density ``density`` inside the object
    and 0 outside (its occupancy), its colour, and the normal of its signed distance (autograd of the
    exact SDF). The reference a learned field is measured against; ``forward`` as ``VoxelField``'s."""

    def __init__(self, shape: str, colour: str, size: str, density: float = 1000.0):
        checks.choice("shape", shape, shapeworld.SHAPES)
        checks.choice("colour", colour, shapeworld.COLOURS)
        checks.choice("size", size, shapeworld.SIZES)
        self.shape, self.size, self.density = shape, size, float(density)
        self.rgb = torch.tensor(COLOUR_RGB[colour])

    def __call__(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        checks.tensor("points", points, "... 3")
        with torch.enable_grad():
            where = points.detach().requires_grad_(True)
            sdf = shapeworld.signed_distance(where, self.shape, self.size)          # (...)
            (gradient,) = torch.autograd.grad(sdf.sum(), where)                      # (..., 3) outward
        sigma = self.density * (sdf.detach() <= 0).float()
        return sigma, self.rgb.expand_as(points), F.normalize(gradient, dim=-1, eps=1e-6)


class VoxelField(nn.Module):
    """Density and albedo on a G^3 grid over [-EXTENT, EXTENT]^3, read by trilinear interpolation.

    Parameters are unconstrained: density = softplus(raw), albedo = sigmoid(raw). ``forward(points
    (..., 3))`` -> sigma (...), albedo (..., 3), normal (..., 3), the normal from the density's
    gradient on the grid (central differences), interpolated like the rest.
    """

    def __init__(self, grid: int = 32, initial_density: float = 0.1):
        super().__init__()
        checks.positive_int("grid", grid, 2)
        self.grid = grid
        raw = math.log(math.expm1(initial_density))                              # softplus^-1
        self.density = nn.Parameter(torch.full((grid, grid, grid), raw))         # (G, G, G) indexed [z, y, x]
        self.albedo = nn.Parameter(torch.zeros(3, grid, grid, grid))             # sigmoid(0) = 0.5 grey

    @staticmethod
    def coordinates(grid: int) -> torch.Tensor:
        """The voxel centres' positions (G, G, G, 3) as (x, y, z), indexed [z, y, x] like the grids."""
        c = torch.linspace(-EXTENT, EXTENT, grid)
        z, y, x = torch.meshgrid(c, c, c, indexing="ij")
        return torch.stack([x, y, z], dim=-1)

    @classmethod
    def from_object(cls, shape: str, colour: str, size: str, grid: int = 128, sharpness: float = 300.0,
                    density: float = 1000.0, inset: float | None = None) -> "VoxelField":
        """The field of a ShapeWorld object: density ``density * sigmoid(-sharpness * (sdf + inset))``
        from its exact signed distance (a steep but smooth step, so that the gradient gives the normal)
        and its colour everywhere. Trilinear reading spreads the step over a voxel, so a ray turns opaque
        about half a voxel before the true surface; ``inset`` (default 0.75 voxel) moves the step inwards
        by that much."""
        field = cls(grid)
        inset = 0.75 * 2 * EXTENT / (grid - 1) if inset is None else inset
        sdf = shapeworld.signed_distance(cls.coordinates(grid), shape, size)          # (G, G, G)
        sigma = density * torch.sigmoid(-sharpness * (sdf + inset))
        rgb = torch.tensor(COLOUR_RGB[colour]).clamp(1e-4, 1 - 1e-4)                  # (3,)
        with torch.no_grad():
            field.density.copy_(torch.where(sigma > 20, sigma, torch.log(torch.expm1(sigma.clamp_min(1e-6)))))
            field.albedo.copy_(torch.logit(rgb)[:, None, None, None].expand(3, grid, grid, grid))
        return field

    def grids(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The activated grids: sigma (G, G, G), albedo (3, G, G, G), normals (3, G, G, G)."""
        sigma = F.softplus(self.density)
        spacing = 2 * EXTENT / (self.grid - 1)
        dz, dy, dx = torch.gradient(sigma, spacing=spacing)                       # d sigma / d(z, y, x)
        normal = -F.normalize(torch.stack([dx, dy, dz]), dim=0, eps=1e-6)         # (3, G, G, G) outward
        return sigma, torch.sigmoid(self.albedo), normal

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        checks.tensor("points", points, "... 3")
        sigma, albedo, normal = self.grids()
        channels = torch.cat([sigma[None], albedo, normal])[None]                 # (1, 7, G, G, G)
        where = (points / EXTENT).reshape(1, -1, 1, 1, 3)                          # grid_sample's (x, y, z)
        values = F.grid_sample(channels, where, mode="bilinear", padding_mode="zeros", align_corners=True)
        values = values.reshape(7, *points.shape[:-1]).movedim(0, -1)             # (..., 7)
        return values[..., 0].clamp_min(0.0), values[..., 1:4], F.normalize(values[..., 4:], dim=-1, eps=1e-6)
