"""The U-Net denoiser of handbook section 4: an encoder-decoder CNN with skip connections.

Ronneberger et al. (2015) built the U-Net for segmentation; Ho et al. (2020, appendix B) made it
the noise predictor of diffusion models by feeding it the noise level; Dhariwal & Nichol (2021)
added class conditioning and adaptive GroupNorm. This module follows their conventions
(../shared/REFERENCES.md, "U-Net") at a size that trains on a CPU::

    x (B, C_in, Hh, Ww) -> conv_in                                      (B, C_0, Hh, Ww)
    encoder level i = 0..L-1:  blocks_per_level x [ResBlock (+ AttentionBlock)] -> e_i,
                               then Downsample (stride-2 conv) except after the last level
    bottleneck:                ResBlock, AttentionBlock (optional), ResBlock at Hh / 2^(L-1)
    decoder level i = L-1..0:  concat [h, e_i] on channels (the skip connection),
                               blocks_per_level x [ResBlock (+ AttentionBlock)],
                               then Upsample (nearest x2 + conv) except after level 0
    GroupNorm -> SiLU -> conv_out                                      (B, C_out, Hh, Ww)

which is the handbook's y = D_1([E_1(x), D_2([E_2(x), ... D_n(e_n) ...])]) with one skip per
level (the openai code keeps one per block; one per level is the handbook's equation and enough).
Level i has C_i = base_channels * channel_mults[i] channels at resolution Hh / 2^i x Ww / 2^i.

Conditioning. The noise level t becomes a sinusoidal vector (``timestep_embedding``), then an MLP
(Linear -> SiLU -> Linear, time_embed_mult x base_channels wide); a class label adds its own
learned vector. Every ResBlock projects that embedding to its channels and either adds it to the
feature map before its second GroupNorm ("add", Ho et al. 2020) or uses it as a per-channel scale
and shift after that GroupNorm ("film": FiLM, Perez et al. 2018; AdaGN in Dhariwal & Nichol
2021). A caption (or any sequence of vectors) enters through cross-attention in the attention
blocks, as in Stable Diffusion.

Zero initialisation. The last conv of every ResBlock, the output projection of every attention
and the output conv start at zero: each block starts as its skip path, and a new network outputs
exactly 0, which is the mean of the noise it learns to predict (Ho et al.'s code; Dhariwal &
Nichol 2021). The gradient still reaches conv_out at once; the layers behind it get one as soon
as conv_out has moved from zero, after the first step.

Two switches exist for the chapter's experiments: ``skip_connections=False`` (the decoder gets no
encoder features; reading question 4.1) and ``time_conditioning=False`` (the network is not told
the noise level; question 4.3).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from handbook import checks
from handbook.attention import MultiHeadAttention
from handbook.embeddings import TimestepEmbedder
from handbook.initialisation import fan_in_uniform_


@dataclass(frozen=True)
class UNetConfig:
    """Everything that defines a U-Net's shape. Frozen: a config never changes after a model uses it.

    attention_levels: indices of the levels (0 = full resolution, L-1 = the lowest) whose blocks
    are followed by attention, in the encoder and the decoder. Levels, not pixel resolutions, so
    the config does not depend on the image size: level i works at Hh / 2^i (openai's
    ``attention_resolutions=(ds,)`` is our level log2(ds)).
    """

    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one level per entry; C_i = base_channels * mult
    blocks_per_level: int = 1
    attention_levels: tuple[int, ...] = (2,)
    bottleneck_attention: bool = True
    n_heads: int = 1               # must divide the channels of every level with attention
    groups: int = 8                  # GroupNorm groups; must divide every level's channels
    dropout: float = 0.0
    time_embed_mult: int = 4         # embedding width = time_embed_mult * base_channels
    conditioning: str = "add"        # "add" | "film": how the embedding enters a ResBlock
    num_classes: int | None = None   # class labels 0..num_classes-1, plus num_classes = "null"
    context_dim: int | None = None   # width of a context sequence for cross-attention
    skip_connections: bool = True    # False only for the experiment of reading question 4.1
    time_conditioning: bool = True   # False only for the experiment of reading question 4.3

    def __post_init__(self):
        for name in ("channel_mults", "attention_levels"):  # accept lists (JSON), keep the config hashable
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("in_channels", "out_channels", "base_channels", "blocks_per_level", "n_heads", "groups",
                     "time_embed_mult"):
            checks.positive_int(name, getattr(self, name))
        for name in ("num_classes", "context_dim"):
            if getattr(self, name) is not None:
                checks.positive_int(name, getattr(self, name), extra="or None")
        for name in ("bottleneck_attention", "skip_connections", "time_conditioning"):
            checks.boolean(name, getattr(self, name))
        checks.real("dropout", self.dropout, 0.0, 1.0, open_high=True)
        checks.choice("conditioning", self.conditioning, ("add", "film"))
        mults, levels = self.channel_mults, self.attention_levels
        if not (isinstance(mults, tuple) and mults and all(type(m) is int and m > 0 for m in mults)):
            raise ValueError(f"channel_mults: expected a non-empty tuple of positive ints, got {mults!r}")
        if not (isinstance(levels, tuple) and all(type(i) is int and 0 <= i < len(mults) for i in levels)
                and len(set(levels)) == len(levels)):
            raise ValueError(f"attention_levels: expected level indices in 0..{len(mults) - 1} once each, got {levels}")
        attention = [self.channels[i] for i in levels] + ([self.channels[-1]] if self.bottleneck_attention else [])
        for name, divisor, channels, where in (("groups", self.groups, self.channels, "level"),
                                              ("n_heads", self.n_heads, tuple(attention), "attention block")):
            if any(ch % divisor for ch in channels):
                raise ValueError(f"{name}: {divisor} must divide the channels of every {where} {channels}")
        if self.context_dim is not None and not attention:
            raise ValueError("context_dim: cross-attention needs attention_levels or bottleneck_attention=True")

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of each level, C_i = base_channels * channel_mults[i]."""
        return tuple(self.base_channels * m for m in self.channel_mults)

    @property
    def size_multiple(self) -> int:
        """Hh and Ww must be multiples of this: 2 ** (levels - 1), one halving per downsampling."""
        return 2 ** (self.levels - 1)

    @property
    def embed_dim(self) -> int | None:
        """Width of the time (+ class) embedding, or None when the network has neither."""
        if not self.time_conditioning and self.num_classes is None:
            return None
        return self.time_embed_mult * self.base_channels

    @classmethod
    def tiny(cls, **overrides) -> "UNetConfig":
        """Two levels of 8 and 16 channels (~35k parameters): for tests, not for images."""
        return cls(**{"base_channels": 8, "channel_mults": (1, 2), "attention_levels": (1,), "groups": 4,
                      **overrides})

    @classmethod
    def small(cls, **overrides) -> "UNetConfig":
        """The chapter's model for 32x32 RGB ShapeWorld: levels 32/16/8 px with 32/64/64 channels,
        attention at 8x8 and in the bottleneck (~0.83M parameters; ~0.2 s forward for a
        batch of 64 on two CPU cores)."""
        return cls(**overrides)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        """Rebuild a config from its ``to_dict`` (e.g. read back from a JSON manifest)."""
        return cls(**d)  # lists from JSON become tuples in __post_init__

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _zero_(layer: nn.Module) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, inject the embedding, GroupNorm -> SiLU -> dropout -> conv3x3,
    plus the skip path (a 1x1 conv when the channel count changes).

    "add":  h = norm2(h + proj(emb))                      (Ho et al. 2020)
    "film": h = norm2(h) * (1 + scale) + shift,  [scale, shift] = proj(emb)
            (Perez et al. 2018; AdaGN of Dhariwal & Nichol 2021). The "1 +" makes a zero
            projection the plain GroupNorm.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int | None, groups: int,
                 dropout: float = 0.0, conditioning: str = "add", eps: float = 1e-5):
        super().__init__()
        self.conditioning = conditioning
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)  # eps: PyTorch's 1e-5; chapter 7's VAE 1e-6
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        factor = 2 if conditioning == "film" else 1
        self.embed_proj = None if embed_dim is None else nn.Sequential(
            nn.SiLU(), nn.Linear(embed_dim, factor * out_channels))
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)  # zero-initialised
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.zero_residual_()

    def zero_residual_(self) -> None:
        """Zero the last conv: the block starts as its skip path."""
        _zero_(self.conv2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                  # (B, C_out, Hh, Ww)
        if self.embed_proj is None:
            h = self.norm2(h)
        else:
            e = self.embed_proj(emb)[:, :, None, None]         # (B, C_out or 2 C_out, 1, 1)
            if self.conditioning == "film":
                scale, shift = e.chunk(2, dim=1)               # (B, C_out, 1, 1) each
                h = self.norm2(h) * (1 + scale) + shift
            else:
                h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))                # (B, C_out, Hh, Ww)
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the Hh*Ww positions of a feature map, then (with ``context_dim``)
    cross-attention from those positions to a context sequence; each GroupNorm first, residual,
    output projection zero-initialised. The q/k/v Linears on (B, Hh*Ww, C) tokens are the 1x1
    convs of the reference; with one head the scale is C^-1/2. Attention itself is
    ``handbook.attention.MultiHeadAttention``, the same as in every chapter."""

    def __init__(self, channels: int, n_heads: int, groups: int, context_dim: int | None = None, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.attn = MultiHeadAttention(channels, n_heads)
        self.cross_norm = None if context_dim is None else nn.GroupNorm(groups, channels, eps=eps)
        self.cross_attn = (None if context_dim is None
                           else MultiHeadAttention(channels, n_heads, d_context=context_dim))
        self.zero_residual_()

    def zero_residual_(self) -> None:
        """Zero the output projections: the block starts as the identity."""
        for attn in (self.attn, self.cross_attn):
            if attn is not None:
                _zero_(attn.out_proj)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, C, Hh, Ww = x.shape
        h = x.reshape(B, C, Hh * Ww)                                  # (B, C, Hh*Ww)
        h = h + self.attn(self.norm(h).transpose(1, 2)).transpose(1, 2)  # (B, C, Hh*Ww)
        if self.cross_attn is not None:
            q = self.cross_norm(h).transpose(1, 2)                    # (B, Hh*Ww, C): the queries
            h = h + self.cross_attn(q, context).transpose(1, 2)       # (B, C, Hh*Ww)
        return h.reshape(B, C, Hh, Ww)                                # (B, C, Hh, Ww)


class Downsample(nn.Module):
    """Halve Hh and Ww with a stride-2 3x3 conv (learned, unlike pooling; Ho et al. 2020)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, C, Hh/2, Ww/2)


class Upsample(nn.Module):
    """Double Hh and Ww: nearest-neighbour copy, then a 3x3 conv (no checkerboard artefacts of a
    transposed conv; Odena et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2Hh, 2Ww)


class Level(nn.Module):
    """One level of the encoder or decoder: ResBlocks (each followed by attention when asked),
    then an optional Downsample or Upsample. Returns the features before resampling, and after."""

    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, attention: bool,
                 resample: nn.Module | None, config: UNetConfig):
        super().__init__()
        c = config
        self.blocks = nn.ModuleList(
            ResBlock(in_channels if j == 0 else out_channels, out_channels, c.embed_dim, c.groups, c.dropout,
                     c.conditioning) for j in range(n_blocks))
        n_attention = n_blocks if attention else 0
        self.attns = nn.ModuleList(
            AttentionBlock(out_channels, c.n_heads, c.groups, c.context_dim) for _ in range(n_attention))
        self.resample = resample if resample is not None else nn.Identity()

    def forward(self, h, emb, context):
        for j, block in enumerate(self.blocks):
            h = block(h, emb)
            if self.attns:
                h = self.attns[j](h, context)
        return h, self.resample(h)


class Bottleneck(nn.Module):
    """ResBlock, AttentionBlock, ResBlock at the lowest resolution: the bottom of the U."""

    def __init__(self, channels: int, config: UNetConfig):
        super().__init__()
        c = config
        self.res1 = ResBlock(channels, channels, c.embed_dim, c.groups, c.dropout, c.conditioning)
        self.attn = (AttentionBlock(channels, c.n_heads, c.groups, c.context_dim)
                     if c.bottleneck_attention else None)
        self.res2 = ResBlock(channels, channels, c.embed_dim, c.groups, c.dropout, c.conditioning)

    def forward(self, h, emb, context):
        h = self.res1(h, emb)
        if self.attn is not None:
            h = self.attn(h, context)
        return self.res2(h, emb)


class UNet(nn.Module):
    """The denoiser eps_theta(x_t, t, cond) of chapters 4 to 8. ``forward(x, t, cond)`` -> (B, C_out, Hh, Ww).

    ``generator`` fixes the initial weights (building never touches the global random stream).
    """

    def __init__(self, config: UNetConfig | None = None, generator: torch.Generator | None = None):
        super().__init__()
        checks.instance("config", config, (UNetConfig, type(None)), "a UNetConfig or None")
        self.config = c = config or UNetConfig.small()
        with torch.random.fork_rng(devices=[]):  # layers draw a default init; reset_parameters redraws it
            ch = c.channels
            self.time_embed = TimestepEmbedder(c.base_channels, c.embed_dim) if c.time_conditioning else None
            # One extra row, index num_classes, is the "null" label of classifier-free guidance.
            self.class_embed = None if c.num_classes is None else nn.Embedding(c.num_classes + 1, c.embed_dim)
            self.conv_in = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
            self.encoder = nn.ModuleList(
                Level(ch[i - 1] if i else ch[0], ch[i], c.blocks_per_level, i in c.attention_levels,
                      Downsample(ch[i]) if i < c.levels - 1 else None, c) for i in range(c.levels))
            self.bottleneck = Bottleneck(ch[-1], c)
            # Decoder level i receives level i+1's output (or the bottleneck's), plus e_i on the skip.
            self.decoder = nn.ModuleList(
                Level((ch[i + 1] if i < c.levels - 1 else ch[-1]) + (ch[i] if c.skip_connections else 0), ch[i],
                      c.blocks_per_level, i in c.attention_levels, Upsample(ch[i]) if i > 0 else None, c)
                for i in range(c.levels))
            self.norm_out = nn.GroupNorm(c.groups, ch[0])
            self.conv_out = nn.Conv2d(ch[0], c.out_channels, 3, padding=1)
        self.reset_parameters(generator)

    @property
    def null_label(self) -> int:
        """The class index that means "no class" (classifier-free guidance): num_classes."""
        if self.config.num_classes is None:
            raise ValueError("null_label: this model is not class-conditional (num_classes=None)")
        return self.config.num_classes

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's default init drawn from ``generator`` (weights and biases U(+-1/sqrt(fan_in)),
        embeddings N(0, 1), norms identity), then zero the layers that write into a residual path
        and the output conv (see the module docstring)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in_uniform_(m, generator)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, generator=generator)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (ResBlock, AttentionBlock)):
                m.zero_residual_()
        _zero_(self.conv_out)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None, cond: Any = None,
                return_features: bool = False):
        """x (B, in_channels, Hh, Ww), Hh and Ww multiples of 2**(levels-1) -> (B, out_channels, Hh, Ww).

        t: the noise level, a number or a tensor () or (B,), integer timesteps or continuous values
        (e.g. 1000 * sigma); it goes to ``timestep_embedding`` unscaled (as float32, one per image).
        Ignored (may be None) when ``time_conditioning=False``.
        cond: None for an unconditional model; class labels (B,) long in 0..num_classes
        (num_classes = null) when only ``num_classes`` is set; a context (B, S, context_dim) when only
        ``context_dim`` is set; ``{"y": labels, "context": context}`` (always accepted) when both.
        return_features: also return a dict of activations "encoder.i" (the skip e_i), "bottleneck"
        and "decoder.i" (before upsampling), in the order they are computed.
        """
        t, labels, context = self._split_inputs(x, t, cond)          # t (B,) or None, labels (B,) or None
        emb = None
        if self.time_embed is not None:
            emb = self.time_embed(t)                                  # (B, embed_dim)
        if self.class_embed is not None:
            y = self.class_embed(labels)                              # (B, embed_dim)
            emb = y if emb is None else emb + y
        features: dict[str, torch.Tensor] = {}
        skips = []
        h = self.conv_in(x)                                           # (B, C_0, Hh, Ww)
        for i, level in enumerate(self.encoder):
            e, h = level(h, emb, context)                             # e_i: (B, C_i, Hh/2^i, Ww/2^i)
            skips.append(e)
            features[f"encoder.{i}"] = e
        h = self.bottleneck(h, emb, context)                          # (B, C_{L-1}, Hh/2^(L-1), Ww/2^(L-1))
        features["bottleneck"] = h
        for i in reversed(range(len(self.decoder))):
            if self.config.skip_connections:
                h = torch.cat([h, skips[i]], dim=1)                   # (B, C_{i+1} + C_i, Hh/2^i, Ww/2^i)
            d, h = self.decoder[i](h, emb, context)                   # h: upsampled for level i-1
            features[f"decoder.{i}"] = d
        out = self.conv_out(F.silu(self.norm_out(h)))                 # (B, out_channels, Hh, Ww)
        return (out, features) if return_features else out

    def _split_inputs(self, x: torch.Tensor, t: Any, cond: Any):
        """Check ``forward``'s inputs -> t (B,) float32 (None without time conditioning), labels (B,)
        or None, context (B, S, context_dim) or None."""
        c = self.config
        B, _, Hh, Ww = checks.tensor("x", x, "B in_channels Hh Ww", in_channels=c.in_channels)
        if Hh % c.size_multiple or Ww % c.size_multiple:
            raise ValueError(f"x: height {Hh} and width {Ww} must be multiples of 2**(levels - 1) = {c.size_multiple}")
        if not c.time_conditioning:
            t = None  # the network is not told the noise level (question 4.3): t is ignored
        else:
            t = torch.tensor(float(t)) if isinstance(t, (int, float)) and not isinstance(t, bool) else t
            if not isinstance(t, torch.Tensor) or t.dtype == torch.bool or t.shape not in ((), (B,)):
                raise ValueError(f"t: expected a number or a tensor shaped () or (B={B},), got {checks.describe(t)}")
            t = t.to(x.device, torch.float32).expand(B)                       # (B,)
        labels, context = self._split_cond(cond)
        if labels is not None:
            checks.tensor("cond (class labels)", labels, "B", dtype="int", B=B)
            if labels.numel() and not 0 <= labels.min() <= labels.max() <= c.num_classes:
                raise ValueError(f"cond: class labels must lie in 0..{c.num_classes} ({c.num_classes} = null "
                                 f"class), got values in {labels.min().item()}..{labels.max().item()}")
        if context is not None:
            checks.tensor("cond (context)", context, "B S context_dim", B=B, context_dim=c.context_dim)
        return t, labels, context

    def _split_cond(self, cond: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """cond -> (labels or None, context or None), by the conventions of ``forward``."""
        c = self.config
        takes = [key for key, size in (("y", c.num_classes), ("context", c.context_dim)) if size is not None]
        if cond is None or isinstance(cond, dict):
            given = {key: value for key, value in (cond or {}).items() if value is not None}
        else:  # a bare tensor is whichever of the two the model takes
            given = {takes[0] if len(takes) == 1 else "a bare tensor": cond}
        if set(given) != set(takes):
            got = f"; got the keys {sorted(map(str, cond))}" if isinstance(cond, dict) else ""
            raise ValueError(f"cond: this model {self._cond_usage()}{got}")
        return given.get("y"), given.get("context")

    def _cond_usage(self) -> str:
        """What ``cond`` this model takes, in words (for the error message of a wrong one)."""
        c = self.config
        if c.num_classes is None and c.context_dim is None:
            return "is unconditional (num_classes=None, context_dim=None); pass cond=None"
        if c.num_classes is None:
            return "needs a 'context'"
        both = " and a 'context'; pass {'y': labels, 'context': context}" if c.context_dim is not None else ""
        return f"needs class labels 'y'{both}; the unconditional prediction takes the null label {c.num_classes}"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameters_per_level(self) -> dict[str, int]:
        """Parameter counts: "embeddings", "input", "encoder.i", "bottleneck", "decoder.i" (i from the
        bottom up, as the data flows), "output". They sum to ``num_parameters()``."""
        def count(*modules):
            return sum(p.numel() for m in modules if m is not None for p in m.parameters())

        out = {"embeddings": count(self.time_embed, self.class_embed), "input": count(self.conv_in)}
        out.update({f"encoder.{i}": count(level) for i, level in enumerate(self.encoder)})
        out["bottleneck"] = count(self.bottleneck)
        out.update({f"decoder.{i}": count(self.decoder[i]) for i in reversed(range(len(self.decoder)))})
        out["output"] = count(self.norm_out, self.conv_out)
        return out
