"""Chapter 7's lab: what the notebook measures with, beside the shipped models.

- ``peak_memory(fn)``: the most bytes of tensors alive at once while ``fn()`` runs, counted on the
  CPU as ``torch.cuda.max_memory_allocated`` counts on a GPU, so that a pixel model and a latent
  model can be compared by memory as well as by time.
- ``occupancy_grids``: ShapeWorld's objects as 3D occupancy grids, in random orientations, from
  their exact signed distances (``shapeworld.occupancy``): a second domain to compress and then
  generate in (reading question 7.5).
- ``LabAutoencoder``: the KL autoencoder of ``handbook.vae`` with its interface, cut down to a few
  plain convolutions so that the lab can train many in seconds, for images (2D) or grids (3D);
  ``voxel_vae_loss``: its loss for occupancy grids (binary cross-entropy + beta KL).
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from handbook import checks
from handbook.initialisation import fan_in_uniform_
from handbook.shapeworld import SHAPES, SIZES, occupancy
from handbook.shapeworld.geometry import SCENE_EXTENT
from handbook.vae import DiagonalGaussian

EXTENT = SCENE_EXTENT   # the grids span [-EXTENT, EXTENT]^3


class _LiveTensors(TorchDispatchMode):
    """Counts the bytes of the storages that operations create, until the last tensor on them is freed."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}       # storage address -> bytes
        self.refs: dict[int, int] = {}       # storage address -> tensors seen on it that are still alive
        self.now = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.now -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if key not in self.live:
                if size == 0 or key in inputs:           # nothing, or a view of a tensor made before the call
                    continue
                self.live[key], self.refs[key] = size, 0
                self.now += size
                self.peak = max(self.peak, self.now)
            self.refs[key] += 1                          # a view keeps its storage alive too
            weakref.finalize(t, self._release, key)
        return out


def peak_memory(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), the peak bytes of the tensors that fn's operations created and held at once).

    Tensors that existed before the call (weights, inputs) are not counted: this is the working
    memory of the computation, what grows with the batch and the number of tokens."""
    if not callable(fn):
        raise ValueError(f"fn: expected a callable without arguments, got {type(fn).__name__}")
    mode = _LiveTensors()
    with mode:
        result = fn()
    return result, mode.peak


def rotation_matrices(yaw: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3): a turn by ``yaw`` about the vertical y axis after a tilt by ``tilt`` about x (radians)."""
    cy, sy, ct, st = yaw.cos(), yaw.sin(), tilt.cos(), tilt.sin()
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    R_yaw = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    R_tilt = torch.stack([one, zero, zero, zero, ct, -st, zero, st, ct], -1).reshape(-1, 3, 3)
    return R_yaw @ R_tilt


def grid_points(resolution: int) -> torch.Tensor:
    """The centres of a resolution^3 grid over [-EXTENT, EXTENT]^3: (R, R, R, 3), indexed (x, y, z)."""
    checks.positive_int("resolution", resolution)
    side = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 * EXTENT - EXTENT
    return torch.stack(torch.meshgrid(side, side, side, indexing="ij"), dim=-1)


def occupancy_grids(n: int, resolution: int = 16, seed: int = 0, max_tilt_degrees: float = 60.0
                    ) -> dict[str, torch.Tensor]:
    """n ShapeWorld objects as occupancy grids in random poses: {"grids": (n, 1, R, R, R) float in {0, 1},
    "shape": (n,), "size": (n,)} (indices into SHAPES and SIZES). Each object is turned about the
    vertical by a uniform angle and tilted by up to ``max_tilt_degrees``; a cell is occupied when its
    centre is inside the object (exact signed distance)."""
    checks.positive_int("n", n)
    checks.real("max_tilt_degrees", max_tilt_degrees, 0, 180)
    g = torch.Generator().manual_seed(seed)
    shape = torch.randint(len(SHAPES), (n,), generator=g)
    size = torch.randint(len(SIZES), (n,), generator=g)
    yaw = torch.rand(n, generator=g) * 2 * math.pi
    tilt = torch.rand(n, generator=g) * math.radians(max_tilt_degrees)
    R = rotation_matrices(yaw, tilt)                                            # (n, 3, 3)
    points = grid_points(resolution).reshape(-1, 3)                             # (R^3, 3) in the world
    grids = torch.empty(n, resolution ** 3, dtype=torch.bool)
    for i in range(n):
        local = points @ R[i]                                                   # world -> object space (R orthogonal)
        grids[i] = occupancy(local, SHAPES[shape[i]], SIZES[size[i]])
    return {"grids": grids.float().reshape(n, 1, resolution, resolution, resolution), "shape": shape, "size": size}


class LabAutoencoder(nn.Module):
    """A small KL autoencoder for the lab, of images (dims = 2) or occupancy grids (dims = 3):
    x (B, C, R, ...) -> q(z | x) over (B, L, R/f, ...) -> x_hat (B, C, R, ...), f = 2^levels.

    It has ``handbook.vae.Autoencoder``'s interface (``encode`` -> ``DiagonalGaussian``, ``decode``,
    ``forward(x, generator)`` -> (x_hat, posterior), so ``vae.vae_loss`` trains it) without its
    ResBlocks, GroupNorms and attention: one 3x3 convolution (the stem), then one stride-2 4x4
    convolution per level (SiLU between), 1x1 convolutions to the moments and back from the latent,
    and transposed convolutions up. Ten times faster a step than the shipped architecture at 16x16, which is what a
    lab of many autoencoders trained in seconds needs. ``DiagonalGaussian`` works on 2D maps, so a 3D
    latent travels flattened to (B, L, r, r^2); ``encode`` flattens it and ``decode`` takes either."""

    def __init__(self, in_channels: int = 3, latent_channels: int = 4, levels: int = 2, width: int = 16,
                 dims: int = 2, stem: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        checks.positive_ints(in_channels=in_channels, latent_channels=latent_channels, levels=levels, width=width)
        checks.choice("dims", dims, (2, 3))
        self.in_channels, self.latent_channels, self.levels, self.dims = in_channels, latent_channels, levels, dims
        self.register_buffer("scale_factor", torch.tensor(1.0))
        Conv, ConvT = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        widths = [width * 2 ** min(i, 2) for i in range(levels + 1)]          # at most 4 x width
        # stem: a 3x3 convolution at full resolution on the way in and out. Without it (stem=False, what 3D
        # grids want: a full-resolution 3D convolution costs most of a step) the first and last layers are
        # the stride-2 ones, straight from and to the input's channels.
        down = [Conv(in_channels, widths[0], 3, padding=1), nn.SiLU()] if stem else []
        for i in range(levels):
            down += [Conv(widths[i] if (stem or i) else in_channels, widths[i + 1], 4, stride=2, padding=1), nn.SiLU()]
        self.encoder = nn.Sequential(*down, Conv(widths[-1], 2 * latent_channels, 1))      # [mean, log-variance]
        up = [Conv(latent_channels, widths[-1], 1), nn.SiLU()]
        for i in reversed(range(levels)):
            last = i == 0 and not stem
            up += [ConvT(widths[i + 1], in_channels if last else widths[i], 4, stride=2, padding=1)]  # double each side
            up += [] if last else [nn.SiLU()]
        self.decoder = nn.Sequential(*up, *([Conv(widths[0], in_channels, 3, padding=1)] if stem else []))
        if generator is not None:
            with torch.no_grad():
                for m in self.modules():
                    if isinstance(m, (Conv, ConvT)):
                        fan_in_uniform_(m, generator)

    @property
    def downsampling(self) -> int:
        """f: how many cells of a side one latent position stands for."""
        return 2 ** self.levels

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        dims = "B C " + " ".join(f"R{i}" for i in range(self.dims))
        sides = checks.tensor("x", x, dims, C=self.in_channels)[2:]
        for side in sides:
            checks.divisible("the side of x", side, "f = 2^levels", self.downsampling)
        moments = self.encoder(x)                                              # (B, 2L, R/f, ...)
        B, C2 = moments.shape[:2]
        return DiagonalGaussian(moments.reshape(B, C2, moments.shape[2], -1))  # 3D: (B, 2L, r, r^2)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, L, r, r) in 2D; (B, L, r, r, r) or flattened (B, L, r, r^2) in 3D -> x_hat (B, C, f r, ...)."""
        B, L, r = z.shape[:3]
        return self.decoder(z.reshape(B, L, *[r] * self.dims))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior


def voxel_vae_loss(model: LabAutoencoder, x: torch.Tensor, beta: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary cross-entropy of the occupancy, summed over the cells of each grid, + beta KL: (7.1)
    with the likelihood of a binary grid in place of the pixel error; averaged over the batch."""
    checks.real("beta", beta, 0)
    logits, posterior = model(x, generator)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)   # (B,)
    return (bce + beta * posterior.kl()).mean()
