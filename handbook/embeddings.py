"""Fixed sinusoidal codes shared by the models: where a token is, and how noisy an image is.

- ``sinusoidal_positional_encoding``: positions 0..T-1 of a sequence (the Transformer, ch. 2);
- ``sincos_2d_positional_embedding``: the patches of an image grid (MAE, DiT; ch. 3 and 6);
- ``timestep_embedding`` and ``TimestepEmbedder``: the noise level t of a diffusion model, as a
  sinusoid and then a small MLP (the U-Net of ch. 4, the DDPMs of ch. 5, the DiT of ch. 6).

All three use the Transformer paper's frequencies, from one turn per 2 pi units down to one per
10000 * 2 pi units (section 3.5), so every position or noise level gets a distinct, smooth code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from handbook import checks

MAX_PERIOD = 10000.0   # the longest wavelength, in positions or timesteps (Transformer paper, 3.5)


def sinusoidal_positional_encoding(T: int, d_model: int) -> torch.Tensor:
    """(T, d_model) fixed positional encoding of the Transformer paper (section 3.5), interleaved:

    PE[pos, 2i] = sin(pos / 10000^(2i/d)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/d)).

    Each pair of channels is a rotation at its own frequency, so PE[pos + k] is a fixed linear
    function of PE[pos] for every k: relative offsets are easy to read out, and any position has
    an encoding, even unseen ones.
    """
    checks.positive_int("T", T)
    checks.positive_int("d_model", d_model, 2, multiple_of=2, extra="(sin and cos pairs)")
    position = torch.arange(T, dtype=torch.float64)[:, None]                 # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)                  # (d/2,)
    angle = position / (MAX_PERIOD ** (two_i / d_model))                      # (T, d/2)
    pe = torch.zeros(T, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.float()                                                          # (T, d_model)


def sincos_2d_positional_embedding(d_model: int, grid_size: int | tuple[int, int]) -> torch.Tensor:
    """Fixed 2D sin-cos positions of MAE and DiT -> (gh * gw, d_model), patches in row-major order.

    Channels [0, D/2) encode the patch's column j, channels [D/2, D) its row i; each half is
    [sin(pos * omega), cos(pos * omega)] with omega_k = 1 / 10000^(k / (D/4)), k = 0 .. D/4 - 1.
    Equal to diffusers ``get_2d_sincos_pos_embed(D, grid, base_size=grid)`` for square grids.
    """
    checks.positive_int("d_model", d_model, 4, multiple_of=4, extra="(sin and cos for rows and columns)")
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    for size in (gh, gw):
        checks.positive_int("grid_size", size)
    k = torch.arange(d_model // 4, dtype=torch.float64)
    omega = 1.0 / MAX_PERIOD ** (k / (d_model // 4))                           # (D/4,)
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64),
                                torch.arange(gw, dtype=torch.float64), indexing="ij")  # (gh, gw) each

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angle = pos.reshape(-1, 1) * omega                                     # (N, D/4)
        return torch.cat([angle.sin(), angle.cos()], dim=1)                    # (N, D/2)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()              # (N, D)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = MAX_PERIOD) -> torch.Tensor:
    """Sinusoidal embedding of noise levels t (B,) -> (B, dim), in the [cos, sin] order of DiT/GLIDE.

    freqs_i = exp(-ln(max_period) * i / half) for i = 0..half-1 (half = dim // 2), and
    emb = [cos(t * freqs), sin(t * freqs)], with a zero column appended when dim is odd. It equals
    diffusers ``get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)``.
    t may be integer timesteps or continuous values (e.g. 1000 * sigma); fractions are kept.
    """
    checks.tensor("t", t, "B", dtype="number")
    checks.positive_int("dim", dim, 2)
    checks.real("max_period", max_period, 0.0, open_low=True)
    half = dim // 2
    # float32 throughout, as the references do: the same numbers as the code a student meets next.
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]                           # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)       # (B, 2 * half)
    return F.pad(emb, (0, dim % 2))                                   # (B, dim)


class TimestepEmbedder(nn.Module):
    """t (B,) -> sinusoidal (B, frequency_dim) -> Linear -> SiLU -> Linear -> (B, embed_dim).

    The sinusoid gives every noise level a distinct, smooth code; the MLP learns what the network
    needs from it (Ho et al. 2020, appendix B; DiT's ``TimestepEmbedder``)."""

    def __init__(self, frequency_dim: int, embed_dim: int):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = timestep_embedding(t, self.frequency_dim)          # (B, frequency_dim), float32
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))        # (B, embed_dim)
