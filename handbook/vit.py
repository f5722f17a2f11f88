"""The Vision Transformer of handbook section 3 (Dosovitskiy et al. 2021, "An image is worth 16x16 words").

An image becomes a sentence of patches, and from there on it is the Transformer of chapter 2::

    images (B, C, Hh, Ww) -> cut into N = (Hh/p)(Ww/p) patches of p x p x C pixels, each flattened
                        -> one linear map W_p x + b_p per patch           (B, N, D)   (eq. 3.1)
                        -> prepend a learned class token                  (B, 1 + N, D)
                        -> add a position embedding (learned or 2D sin-cos)
                        -> n_layer pre-LN TransformerBlocks (chapter 2's, unchanged)
                        -> LayerNorm -> pool (the class token, or the mean of the patches)
                        -> linear head -> logits (B, num_classes)

The patch embedding is written as a convolution with kernel = stride = p: each output pixel of
that convolution sees exactly one patch, so it *is* "flatten, then one linear map" (a test shows
it with ``patchify``). Conventions follow the reference code (../shared/REFERENCES.md): patches in
row-major order, each flattened in (row, column, channel) order; LayerNorm eps 1e-6; exact GELU.

Attention has no notion of where a patch is: without positions the model sees a bag of patches.
Two ways to tell it, compared in the chapter: a learned table (ViT), or the fixed 2D sin-cos code
of MAE (He et al. 2022) and DiT, whose first D/2 channels encode the patch's column and last D/2
its row. The class token gets a position too: learned, or a zero row for sin-cos, as in MAE.

Unlike a CNN, nothing here says that neighbouring pixels belong together beyond the patch: a ViT
must learn locality from data (reading question 3.1). ``stem="conv"`` puts two 3x3 convolutions
before the patch embedding (Xiao et al. 2021, "Early convolutions help transformers see better")
for reading question 3.4; ``handbook.classification`` holds the convolutional baseline of
similar size and the training recipe of both.

Inputs: float images (B, C, Hh, Ww), as ``handbook.shapeworld.load_images`` returns them: RGB in
[0, 1]. The model does not normalise them; the first LayerNorm sees patch embeddings, not pixels.
Their size must be ``config.image_size`` (a ValueError otherwise): the learned positions are a
table for that grid. ``dynamic_image_size=True`` accepts any size the patch size divides and
resamples the positions, as timm's ``dynamic_img_size`` and fine-tuning at a new resolution do.
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
from handbook.embeddings import sincos_2d_positional_embedding
from handbook.initialisation import fan_in_uniform_
from handbook.transformer import TransformerBlock, collect_attention

LN_EPS = 1e-6            # LayerNorm epsilon of the ViT/MAE/DiT reference code (torch's default is 1e-5)
INIT_STD = 0.02          # std of the class token and of learned positions (ViT, MAE)
SIZE_HINT = "Hh, Ww: the config's image_size (other sizes need dynamic_image_size=True)"

# ---- patches ---------------------------------------------------------------------------------

def _grid(patch_size: int, height: int, width: int) -> tuple[int, int]:
    """(Hh/p, Ww/p), or a ValueError naming both numbers if p does not divide the image."""
    checks.divides("patch_size", patch_size, "the image size", (height, width))
    return height // patch_size, width // patch_size


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """images (B, C, Hh, Ww) -> patches (B, N, p*p*C), N = (Hh/p)(Ww/p).

    Patch n = i * (Ww/p) + j is the one at grid row i, column j (row-major, like reading a page);
    its vector lists the pixels row by row, column by column, and the C channels of each pixel last.
    """
    B, C, Hh, Ww = checks.tensor("images", images, "B C Hh Ww")
    gh, gw = _grid(patch_size, Hh, Ww)
    p = patch_size
    x = images.reshape(B, C, gh, p, gw, p)          # (B, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 3, 5, 1)                  # (B, gh, gw, p, p, C)
    return x.reshape(B, gh * gw, p * p * C)          # (B, N, p*p*C)


def unpatchify(tokens: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """The exact inverse of ``patchify``: (B, N, p*p*C) -> images (B, C, height, width)."""
    gh, gw = _grid(patch_size, height, width)
    B, N, P = checks.tensor("tokens", tokens, "B N p*p*C", dtype=None, N=gh * gw)
    p = patch_size
    C = checks.positive_int("tokens' last dimension p*p*C", P, multiple_of=p * p) // (p * p)
    x = tokens.reshape(B, gh, gw, p, p, C)           # (B, gh, gw, p, p, C)
    x = x.permute(0, 5, 1, 3, 2, 4)                  # (B, C, gh, p, gw, p)
    return x.reshape(B, C, height, width)            # (B, C, Hh, Ww)


class PatchEmbed(nn.Module):
    """images (B, C, Hh, Ww) -> patch embeddings (B, N, D): z_ij = W_p flatten(x_ij) + b_p (eq. 3.1).

    A convolution with kernel = stride = p is that linear map applied to every patch at once; its
    weight (D, C, p, p), permuted to (D, p, p, C) and flattened, is W_p for ``patchify``'s order.
    """

    def __init__(self, in_channels: int, d_model: int, patch_size: int):
        super().__init__()
        checks.positive_ints(in_channels=in_channels, d_model=d_model, patch_size=patch_size)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, _, Hh, Ww = checks.tensor("images", images, "B C Hh Ww", C=self.proj.in_channels)
        _grid(self.patch_size, Hh, Ww)               # a conv would silently drop a partial patch
        x = self.proj(images)                        # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2)          # (B, N, D)


class ConvStem(nn.Module):
    """Two 3x3 convolutions (with GELU) before the patch embedding (Xiao et al. 2021, scaled down).

    Each patch token then also sees a 2-pixel border of its neighbours: overlapping, local
    features, the inductive bias a CNN has and a plain ViT must learn.
    """

    def __init__(self, in_channels: int, d_model: int, patch_size: int, channels: int):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.GELU(),
                                   nn.Conv2d(channels, channels, 3, padding=1), nn.GELU())
        self.patch = PatchEmbed(channels, d_model, patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # A part of the ViT only: ViT.tokens has checked the images, and the patch embedding checks
        # that p divides their size (the convolutions keep it).
        return self.patch(self.convs(images))        # (B, N, D)


# ---- positions -------------------------------------------------------------------------------

def resample_positions(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Learned patch positions (1, gh*gw, D) of one grid -> (1, gh'*gw', D) for another, by bicubic
    interpolation of the table seen as a D-channel image (as timm and the ViT paper, section 3.2)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    D = pos.shape[-1]
    grid = pos.reshape(1, *old_grid, D).permute(0, 3, 1, 2)                    # (1, D, gh, gw)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False,
                         antialias=new_grid[0] < old_grid[0] or new_grid[1] < old_grid[1])
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], D)  # (1, N', D)


# ---- the model -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ViTConfig:
    """Everything that defines a ViT's shape. Frozen: a config never changes after a model uses it."""

    image_size: int | tuple[int, int] = 32   # the size the model is built for; (Hh, Ww) if not square
    patch_size: int = 4
    in_channels: int = 3
    num_classes: int = 30                    # ShapeWorld shape x colour = 5 x 6
    d_model: int = 64
    n_layer: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    positional: str = "learned"              # "learned" (ViT) | "sincos" (MAE, DiT)
    pool: str = "cls"                        # "cls": the class token | "mean": mean of the patch tokens
    stem: str = "patch"                      # "patch" | "conv": convolutions first (reading question 3.4)
    stem_channels: int = 16                  # width of the conv stem
    dynamic_image_size: bool = False         # True: any size p divides, positions resampled (timm)

    def __post_init__(self):
        if isinstance(self.image_size, list):  # e.g. read back from JSON; keep the config hashable
            object.__setattr__(self, "image_size", tuple(self.image_size))
        for name in ("patch_size", "in_channels", "num_classes", "d_model", "n_layer", "n_heads", "stem_channels"):
            checks.positive_int(name, getattr(self, name))
        for name, choices in (("positional", ("learned", "sincos")), ("pool", ("cls", "mean")),
                              ("stem", ("patch", "conv"))):
            checks.choice(name, getattr(self, name), choices)
        hw = checks.int_tuple("image_size", self.image_hw, length=2)  # an int is (Hh, Ww) = (size, size)
        checks.divides("patch_size", self.patch_size, "the image size", hw)  # the patches must tile the image
        # Each head gets d_model / n_heads channels; sin-cos positions need 4 (sin and cos, rows and columns).
        multiple = math.lcm(self.n_heads, 4 if self.positional == "sincos" else 1)
        why = f"(n_heads={self.n_heads}{', and 4 for sin-cos positions' if self.positional == 'sincos' else ''})"
        checks.positive_int("d_model", self.d_model, multiple_of=multiple, extra=why)
        # The MLP gets int(mlp_ratio * d_model) >= 1 channels.
        checks.reals(mlp_ratio=(self.mlp_ratio, 1 / self.d_model, math.inf), dropout=(self.dropout, 0.0, 1.0, "[)"))
        checks.boolean("dynamic_image_size", self.dynamic_image_size)

    @property
    def image_hw(self) -> tuple[int, int]:
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else self.image_size

    @property
    def grid_size(self) -> tuple[int, int]:
        """(Hh/p, Ww/p): the patch grid of the image size the model is built for."""
        return self.image_hw[0] // self.patch_size, self.image_hw[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @classmethod
    def shapeworld(cls, **overrides) -> "ViTConfig":
        """The chapter's model for 32x32 RGB ShapeWorld, 30 classes: patch 4 (64 tokens), width 64,
        4 layers of 4 heads (~0.2M parameters)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> "ViTConfig":
        """16x16 images, patch 4, width 32, 2 layers of 2 heads (~29k parameters): for tests."""
        return cls(**{"image_size": 16, "d_model": 32, "n_layer": 2, "n_heads": 2, **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ViTConfig":
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ViT(nn.Module):
    """A Vision Transformer classifier: ``forward(images (B, C, Hh, Ww)) -> logits (B, num_classes)``.

    Built for ``config.image_size``, it takes images of that size only (a ValueError names both
    sizes). With ``config.dynamic_image_size`` it accepts any size the patch size divides: sin-cos
    positions are recomputed for the new grid; learned ones are interpolated bicubically
    (``resample_positions``), which is how ViTs are fine-tuned at a higher resolution than they
    were trained at.
    """

    def __init__(self, config: ViTConfig, generator: torch.Generator | None = None):
        super().__init__()
        checks.instance("config", config, ViTConfig)
        self.config = c = config
        with torch.random.fork_rng(devices=[]):  # layers draw a default init; reset_parameters redraws it
            if c.stem == "patch":
                self.patch_embed = PatchEmbed(c.in_channels, c.d_model, c.patch_size)
            else:
                self.patch_embed = ConvStem(c.in_channels, c.d_model, c.patch_size, c.stem_channels)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model))
            if c.positional == "learned":
                self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.num_patches, c.d_model))  # (1, 1 + N, D)
            else:
                # A buffer: fixed, moved with .to(device), not saved (it is recomputed from the config).
                self.register_buffer("pos_embed", self._sincos(c.grid_size), persistent=False)
            self.drop = nn.Dropout(c.dropout)
            self.blocks = nn.ModuleList(
                TransformerBlock(c.d_model, c.n_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout, norm="pre",
                                 ln_eps=LN_EPS) for _ in range(c.n_layer))
            self.norm = nn.LayerNorm(c.d_model, eps=LN_EPS)
            self.head = nn.Linear(c.d_model, c.num_classes)
        self.reset_parameters(generator)

    def _sincos(self, grid: tuple[int, int]) -> torch.Tensor:
        # MAE: the class token's position is a row of zeros, the patches' the 2D sin-cos code.
        pos = sincos_2d_positional_embedding(self.config.d_model, grid)            # (N, D)
        return torch.cat([torch.zeros(1, self.config.d_model), pos])[None]        # (1, 1 + N, D)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The MAE/DiT init, drawn from ``generator``: Xavier-uniform for every linear map (the patch
        embedding seen as one too), zero biases, LayerNorm at identity, class token and learned
        positions N(0, 0.02^2) (truncated at 2 std). Conv stem: PyTorch's default U(+-1/sqrt(fan_in))."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
            elif isinstance(m, PatchEmbed):  # its weight (D, C, p, p) is a linear map (D, C*p*p)
                nn.init.xavier_uniform_(m.proj.weight.view(m.proj.out_channels, -1), generator=generator)
            elif isinstance(m, nn.Conv2d) and m.kernel_size != m.stride:  # the conv stem, not a patch conv
                fan_in_uniform_(m, generator, bias=False)  # its bias is zeroed below, as every bias
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm)) and m.bias is not None:
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls_token, std=INIT_STD, generator=generator)
        if self.config.positional == "learned":
            nn.init.trunc_normal_(self.pos_embed, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD, generator=generator)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Positions (1, 1 + gh*gw, D) for a patch grid (gh, gw): the stored ones, recomputed
        (sin-cos) or interpolated (learned) when the grid is not the one the model was built for."""
        if tuple(grid) == self.config.grid_size:
            return self.pos_embed
        if self.config.positional == "sincos":
            return self._sincos(grid).to(self.pos_embed)
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        return torch.cat([cls_pos, resample_positions(patch_pos, self.config.grid_size, grid)], dim=1)

    def tokens(self, images: torch.Tensor, return_weights: bool = False) -> torch.Tensor:
        """images (B, C, Hh, Ww) -> the final normalised tokens (B, 1 + N, D), class token first."""
        c = self.config
        B, _, Hh, Ww = checks.tensor("images", images, "B C Hh Ww", C=c.in_channels)
        if not c.dynamic_image_size:  # the learned positions are a table for one grid
            checks.tensor("images", images, "B C Hh Ww", Hh=c.image_hw[0], Ww=c.image_hw[1], hint=SIZE_HINT)
        x = self.patch_embed(images)                                     # (B, N, D)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)      # (B, 1 + N, D)
        grid = (Hh // c.patch_size, Ww // c.patch_size)                  # (gh, gw): patch_embed checked p divides
        x = self.drop(x + self.position_embedding(grid))                 # (B, 1 + N, D)
        for block in self.blocks:
            x = block(x, return_weights=return_weights)                  # (B, 1 + N, D)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.tokens(images)                                          # (B, 1 + N, D)
        pooled = x[:, 0] if self.config.pool == "cls" else x[:, 1:].mean(dim=1)   # (B, D)
        return self.head(pooled)                                         # (B, num_classes)

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer (in eval mode): a list of n_layer (B, H, 1 + N, 1 + N)."""
        return collect_attention(self, self.blocks, lambda: self.tokens(images, return_weights=True))

    def cls_attention(self, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """How much the class token attends to each patch, per head: (B, H, gh, gw)."""
        checks.choice("layer", layer, range(-self.config.n_layer, self.config.n_layer))
        weights = self.attention_maps(images)[layer]                     # (B, H, 1 + N, 1 + N)
        gh, gw = (size // self.config.patch_size for size in images.shape[-2:])
        return weights[:, :, 0, 1:].reshape(*weights.shape[:2], gh, gw)  # (B, H, gh, gw)
