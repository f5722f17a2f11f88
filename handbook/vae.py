"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022), handbook section 7.

Diffusion in pixels spends most of its work on detail the eye barely sees. Latent diffusion first
trains an autoencoder that compresses an image by a factor f per side into a few channels, and then
diffuses in that smaller space. The autoencoder here has the architecture of diffusers'
``AutoencoderKL`` (the VAE of Stable Diffusion), small, built from chapter 4's blocks::

    encode:  x (B, 3, H, W) -> conv_in -> levels: [ResBlock x n, Downsample]  (no Downsample at the last)
             -> middle: ResBlock, self-attention, ResBlock -> GroupNorm, SiLU, conv_out
             -> quant_conv (1x1) -> moments (B, 2 L, H/f, W/f) = [mean, log-variance]
    decode:  z (B, L, H/f, W/f) -> post_quant_conv (1x1) -> conv_in -> middle
             -> levels, deepest first: [ResBlock x (n + 1), Upsample] (no Upsample at the last)
             -> GroupNorm, SiLU, conv_out -> x_hat (B, 3, H, W)

with f = 2^(levels - 1), GroupNorm eps 1e-6 everywhere, and the stride-2 convolutions of the
encoder padded asymmetrically, one zero row and column at the bottom and the right only, then no
padding (a 3x3 kernel at stride 2 then sees rows 0-2, 2-4, ...: exactly H/2 outputs).

**The posterior** q(z | x) is a diagonal Gaussian (``DiagonalGaussian``): the encoder outputs its
mean mu and log-variance, clamped to [-30, 20] so that exp never overflows. Training samples
z = mu + sigma * eps (the reparameterisation of chapter 1) and adds beta times its KL divergence from
N(0, I),

    KL = 1/2 sum (mu^2 + sigma^2 - 1 - log sigma^2)        (summed over channels and positions)

to the reconstruction error. The KL term keeps the latent space smooth and near the origin; a small
beta keeps it from costing detail. Decoding at sampling time uses the latent the diffusion model
made; encoding for training uses the mean (``mode``) or a sample.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from handbook import checks
from handbook.unet import AttentionBlock, ResBlock, Upsample

NORM_EPS = 1e-6     # every GroupNorm of the autoencoder, as in AutoencoderKL
LOGVAR_RANGE = (-30.0, 20.0)


@dataclass(frozen=True)
class AutoencoderConfig:
    """The autoencoder's shape. ``channels`` gives one level each: f = 2^(len(channels) - 1)."""

    in_channels: int = 3
    channels: tuple[int, ...] = (32, 64, 64)   # three levels: f = 4 (64x64 -> 16x16)
    blocks_per_level: int = 1                   # ResBlocks per encoder level (the decoder has one more)
    latent_channels: int = 4
    groups: int = 8                             # GroupNorm groups; must divide every level's channels

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", checks.int_tuple("channels", self.channels))
        checks.positive_ints(in_channels=self.in_channels, blocks_per_level=self.blocks_per_level,
                             latent_channels=self.latent_channels)
        for width in self.channels:
            checks.divisible("channels", width, "groups", self.groups)

    @property
    def downsampling(self) -> int:
        """f: how many pixels of a side one latent position stands for."""
        return 2 ** (len(self.channels) - 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(L, H/f, W/f) for an image of ``height`` x ``width`` (both divisible by f)."""
        checks.divides("the downsampling factor f", self.downsampling, "the image size", (height, width))
        return self.latent_channels, height // self.downsampling, width // self.downsampling

    @classmethod
    def tiny(cls, **overrides: Any) -> AutoencoderConfig:
        """Two levels of 8 and 16 channels (f = 2): for tests."""
        return cls(**{"channels": (8, 16), "groups": 4, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutoencoderConfig:
        return cls(**{**d, "channels": tuple(d["channels"])})


class DiagonalGaussian:
    """q(z | x) = N(mu, diag(sigma^2)) from the encoder's moments (B, 2 L, h, w) = [mu, log sigma^2]."""

    def __init__(self, moments: torch.Tensor):
        B, C2, h, w = checks.tensor("moments", moments, "B C2 h w")
        checks.divisible("the moments' channel count", C2, "2 (mean and log-variance)", 2)
        self.mean, logvar = moments.chunk(2, dim=1)                      # (B, L, h, w) each
        self.logvar = logvar.clamp(*LOGVAR_RANGE)                        # exp() stays finite
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I) drawn from ``generator``: (B, L, h, w)."""
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The most likely latent, mu: what to encode a training image to for diffusion."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per image, (B,): 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2) over (L, h, w)."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class Downsample(nn.Module):
    """Halve H and W with a 3x3 stride-2 conv after one zero row and column at the bottom and right
    (AutoencoderKL's padding; the U-Net's ``Downsample`` pads all four sides instead)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))                         # (B, C, H/2, W/2)


class Middle(nn.Module):
    """ResBlock, single-head self-attention over every position, ResBlock: the one place where the
    whole (small) latent grid is seen at once."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block1 = ResBlock(channels, channels, None, groups, eps=NORM_EPS)
        self.attn = AttentionBlock(channels, 1, groups, eps=NORM_EPS)
        self.block2 = ResBlock(channels, channels, None, groups, eps=NORM_EPS)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block2(self.attn(self.block1(h, None)), None)


class Encoder(nn.Module):
    """x (B, C_in, H, W) -> moments (B, 2 L, H/f, W/f) (module docstring)."""

    def __init__(self, c: AutoencoderConfig):
        super().__init__()
        ch = c.channels
        self.conv_in = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
        self.levels = nn.ModuleList()
        for i, width in enumerate(ch):
            level = nn.Module()
            level.blocks = nn.ModuleList(ResBlock(ch[max(i - 1, 0)] if j == 0 else width, width, None, c.groups,
                                                  eps=NORM_EPS) for j in range(c.blocks_per_level))
            level.down = Downsample(width) if i < len(ch) - 1 else None
            self.levels.append(level)
        self.middle = Middle(ch[-1], c.groups)
        self.norm_out = nn.GroupNorm(c.groups, ch[-1], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(ch[-1], 2 * c.latent_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(2 * c.latent_channels, 2 * c.latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)                                              # (B, ch[0], H, W)
        for level in self.levels:
            for block in level.blocks:
                h = block(h, None)
            if level.down is not None:
                h = level.down(h)                                        # halve the side
        h = self.conv_out(F.silu(self.norm_out(self.middle(h))))        # (B, 2 L, H/f, W/f)
        return self.quant_conv(h)


class Decoder(nn.Module):
    """z (B, L, h, w) -> x_hat (B, C_in, f h, f w) (module docstring)."""

    def __init__(self, c: AutoencoderConfig):
        super().__init__()
        ch = c.channels[::-1]                                            # deepest first
        self.post_quant_conv = nn.Conv2d(c.latent_channels, c.latent_channels, 1)
        self.conv_in = nn.Conv2d(c.latent_channels, ch[0], 3, padding=1)
        self.middle = Middle(ch[0], c.groups)
        self.levels = nn.ModuleList()
        for i, width in enumerate(ch):
            level = nn.Module()
            level.blocks = nn.ModuleList(ResBlock(ch[max(i - 1, 0)] if j == 0 else width, width, None, c.groups,
                                                  eps=NORM_EPS) for j in range(c.blocks_per_level + 1))
            level.up = Upsample(width) if i < len(ch) - 1 else None
            self.levels.append(level)
        self.norm_out = nn.GroupNorm(c.groups, ch[-1], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(ch[-1], c.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.middle(self.conv_in(self.post_quant_conv(z)))           # (B, ch[-1], h, w)
        for level in self.levels:
            for block in level.blocks:
                h = block(h, None)
            if level.up is not None:
                h = level.up(h)                                          # double the side
        return self.conv_out(F.silu(self.norm_out(h)))                   # (B, C_in, H, W)


class Autoencoder(nn.Module):
    """``encode(x) -> DiagonalGaussian``, ``decode(z) -> x_hat``; ``forward(x, generator)`` does both
    with a sampled latent and returns (x_hat, posterior) for the loss (``vae_loss``).

    ``scale_factor`` (a buffer saved with the weights, 1 until ``set_scale_factor``) is 1/std of the
    training latents: diffusion works on ``scale_factor * z``, which has unit variance.
    """

    def __init__(self, config: AutoencoderConfig | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.config = c = checks.instance("config", config or AutoencoderConfig(), AutoencoderConfig)
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self.encoder = Encoder(c)
            self.decoder = Decoder(c)
        self.register_buffer("scale_factor", torch.tensor(1.0))
        if generator is not None:
            self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's default init, redrawn from ``generator`` (the zero-initialised residual branches
        of chapter 4's blocks are kept: every block starts as its skip path)."""
        from handbook.initialisation import fan_in_uniform_

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in_uniform_(m, generator)
        for m in self.modules():
            if isinstance(m, (ResBlock, AttentionBlock)):
                m.zero_residual_()

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x (B, C_in, H, W) in [-1, 1], H and W divisible by f -> q(z | x) over (B, L, H/f, W/f)."""
        c = self.config
        _, _, H, W = checks.tensor("x", x, "B C H W", C=c.in_channels)
        c.latent_shape(H, W)                                             # H, W divisible by f
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, L, h, w), unscaled -> x_hat (B, C_in, f h, f w)."""
        checks.tensor("z", z, "B L h w", L=self.config.latent_channels,
                      hint="a latent of the autoencoder, (B, latent_channels, H/f, W/f)")
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior

    @torch.no_grad()
    def encode_means(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The posterior means (N, L, H/f, W/f) of many images x (N, C_in, H, W) in [-1, 1], a batch at
        a time: the latents to reconstruct from, or to scale and diffuse."""
        return torch.cat([self.encode(x[i:i + batch_size]).mode() for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def set_scale_factor(self, images: torch.Tensor, batch_size: int = 256) -> float:
        """scale_factor = 1 / std of the posterior means of ``images`` (Rombach et al., section G):
        computed from the data, stored with the weights; returns it."""
        means = self.encode_means(images, batch_size)
        self.scale_factor.fill_(1.0 / means.flatten().std().item())
        return self.scale_factor.item()


def vae_loss(model: Autoencoder, x: torch.Tensor, beta: float, generator: torch.Generator | None = None,
             l1_weight: float = 1.0, l2_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """reconstruction + beta * KL, per image and averaged over the batch: the reconstruction is
    ``l1_weight`` |x - x_hat| + ``l2_weight`` (x - x_hat)^2 summed over pixels, the KL summed over
    the latent (``DiagonalGaussian.kl``), so beta weighs nats against the same sum of pixel errors.
    Returns (loss, {"reconstruction": ..., "kl": ...})."""
    checks.reals(beta=(beta, 0, math.inf), l1_weight=(l1_weight, 0, math.inf), l2_weight=(l2_weight, 0, math.inf))
    x_hat, posterior = model(x, generator)
    error = x_hat - x
    reconstruction = (l1_weight * error.abs() + l2_weight * error.pow(2)).sum(dim=(1, 2, 3)).mean()
    kl = posterior.kl().mean()
    return reconstruction + beta * kl, {"reconstruction": reconstruction.item(), "kl": kl.item()}
