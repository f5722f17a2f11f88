"""Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"), handbook section 6.

Chapter 5's denoiser was a U-Net. A DiT is a Vision Transformer in its place, with the same
contract, ``model(x_t, t, cond) -> eps`` of x_t's shape, so ``handbook.diffusion``'s loss and
samplers run unchanged:

    x_t (B, C, Hh, Ww) -> patches -> PatchEmbed + fixed 2D sin-cos positions -> tokens (B, N, D)
    t (B,) -> TimestepEmbedder -> (B, D);  cond -> class or caption embedding
    tokens -> depth x DiTBlock(tokens, c) -> FinalLayer -> (B, N, p*p*C_out) -> unpatchify

The paper (section 3.2) compares four ways for the condition to enter a block, built here as
options of one block skeleton (``DiTConfig.conditioning``):

- ``"in_context"``: t and the condition become extra tokens of the sequence, dropped after the
  last block; the blocks are plain ViT blocks.
- ``"cross_attention"``: t and the condition form a separate sequence that each block reads through
  an extra cross-attention after its self-attention (``cross_attn``), as Stable Diffusion reads text.
- ``"adaln"``: the LayerNorms have no parameters of their own; their scale and shift are regressed
  from c = t_emb + y_emb (one vector per image) by ``adaLN_modulation``.
- ``"adaln_zero"``: adaLN plus a gate (alpha) on each residual branch, all regressed from c and
  initialised to zero, so every block starts as the identity and a new model outputs exactly 0.
  The paper's best (FID 19.5 against 25.2, 26.1 and 35.2), and the one it scales.

The names follow DiT's ``models.py`` (``norm1``, ``attn``, ``norm2``, ``mlp``, ``adaLN_modulation``;
``modulate``; the chunk order shift, scale, gate), so the reference code reads side by side.
The condition is a class label (chapter 5's classes, with a null label for guidance) or a
caption (``handbook.caption_encoder``: its tokens for in-context and cross-attention, its pooled
vector for adaLN; the empty caption is the null condition).

Note for readers of diffusers: its DiT port embeds timesteps with ``downscale_freq_shift=1``; the
original (and ``handbook.embeddings.timestep_embedding``) uses 0. The blocks agree exactly (a test
maps weights into diffusers' ``BasicTransformerBlock(norm_type="ada_norm_zero")``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from handbook import checks
from handbook.attention import MultiHeadAttention
from handbook.caption_encoder import CaptionEncoder
from handbook.embeddings import TimestepEmbedder, sincos_2d_positional_embedding
from handbook.initialisation import xavier_uniform_linears_
from handbook.shapeworld.captions import MAX_CAPTION_TOKENS, NULL_CAPTION, encode_prompts
from handbook.transformer import MLP
from handbook.vit import PatchEmbed, unpatchify

CONDITIONINGS = ("adaln_zero", "adaln", "cross_attention", "in_context")
CONDITIONS = ("class", "caption")
ADAPTIVE = ("adaln_zero", "adaln")
DEFAULT_GUIDANCE = 3.0  # classifier-free guidance scale of ``generate`` (chapter 6 measures others)
# The paper's model sizes (Table 1): depth, hidden size, heads. Their Gflops table is at 256x256
# images, i.e. 32x32x4 VAE latents, with 1000 classes and a learned variance (8 output channels).
PAPER_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
PAPER_NAMES = tuple(f"{size}/{patch}" for size in PAPER_SIZES for patch in (2, 4, 8))  # "S/2" ... "XL/8"


@dataclass(frozen=True)
class DiTConfig:
    input_size: int = 32            # Hh = Ww of the images (or latents) it denoises
    patch_size: int = 4             # p: N = (input_size / p)^2 tokens
    in_channels: int = 3
    out_channels: int = 3           # C_out: eps only (the paper's 8 = eps and a learned variance)
    hidden_size: int = 192          # D
    depth: int = 6                  # number of DiTBlocks
    n_heads: int = 4
    mlp_ratio: float = 4.0
    conditioning: str = "adaln_zero"
    condition: str = "caption"      # "class" (labels 0..num_classes-1, num_classes = null) or "caption"
    num_classes: int = 0            # for condition="class"
    caption_layers: int = 2         # depth of the caption encoder, for condition="caption"
    caption_length: int = MAX_CAPTION_TOKENS
    p_uncond: float = 0.1           # share of training conditions replaced by the null one (guidance)
    frequency_dim: int = 256        # sinusoidal timestep features before the MLP (DiT: 256)

    def __post_init__(self):
        checks.positive_ints(in_channels=self.in_channels, out_channels=self.out_channels, depth=self.depth,
                             caption_layers=self.caption_layers, caption_length=self.caption_length)
        checks.divisible("input_size", self.input_size, "patch_size", self.patch_size)  # both ints >= 1 too
        checks.divisible("hidden_size", self.hidden_size, "n_heads", self.n_heads)
        checks.positive_int("frequency_dim", self.frequency_dim, 2, multiple_of=2)
        checks.choices(conditioning=(self.conditioning, CONDITIONINGS), condition=(self.condition, CONDITIONS))
        checks.reals(mlp_ratio=(self.mlp_ratio, 0, float("inf"), "(]"), p_uncond=(self.p_uncond, 0, 1, "[)"))
        checks.positive_int("num_classes", self.num_classes, 1 if self.condition == "class" else 0)

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    @classmethod
    def shapeworld(cls, **overrides) -> DiTConfig:
        """The shipped model: captions with views at 32x32, patches of 4 (64 tokens), width 128, 4 blocks,
        adaLN-Zero (1.7 M parameters, about 0.4 s per training step of 64 on one core: 10,000 steps took
        67 minutes, within the 90-minute budget; width 192 and 6 blocks would be 1.3 s a step)."""
        return cls(**{"input_size": 32, "patch_size": 4, "hidden_size": 128, "depth": 4, "n_heads": 4,
                      "conditioning": "adaln_zero", "condition": "caption", **overrides})

    @classmethod
    def tiny(cls, **overrides) -> DiTConfig:
        """A model of a few thousand parameters for tests: 8x8 images, patches of 2, width 32."""
        return cls(**{"input_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 2, "n_heads": 2,
                      "caption_layers": 1, "frequency_dim": 16, **overrides})

    @classmethod
    def paper(cls, name: str, **overrides) -> DiTConfig:
        """The paper's "S/8" ... "XL/2": class-conditional on 32x32x4 latents, for the Gflops table."""
        checks.choice("name", name, PAPER_NAMES)
        size, _, patch = name.partition("/")
        depth, hidden, heads = PAPER_SIZES[size]
        return cls(**{"input_size": 32, "patch_size": int(patch), "in_channels": 4, "out_channels": 8,
                      "hidden_size": hidden, "depth": depth, "n_heads": heads, "condition": "class",
                      "num_classes": 1000, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiTConfig:
        return cls(**d)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift: tokens x (B, T, D), one shift and scale (B, D) per image, the same for
    every token. Scale enters as 1 + scale so that zeros leave x as it is (adaLN-Zero's start)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """One DiT block: self-attention then an MLP, each in a pre-LayerNorm residual branch, with the
    condition entering as ``conditioning`` says (module docstring). For adaLN(-Zero):

        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaLN_modulation(c)
        x = x + gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp))

    (adaLN has no gates: 4 chunks, gates 1). LayerNorm eps 1e-6, without its own affine parameters
    when adaLN supplies them; the MLP's GELU is the tanh approximation, as in DiT.
    """

    def __init__(self, hidden_size: int, n_heads: int, mlp_ratio: float = 4.0, conditioning: str = "adaln_zero"):
        super().__init__()
        checks.choice("conditioning", conditioning, CONDITIONINGS)
        self.conditioning = conditioning
        adaptive = conditioning in ADAPTIVE
        D = hidden_size
        self.norm1 = nn.LayerNorm(D, elementwise_affine=not adaptive, eps=1e-6)
        self.attn = MultiHeadAttention(D, n_heads)
        if conditioning == "cross_attention":
            self.norm_cross = nn.LayerNorm(D, eps=1e-6)
            self.cross_attn = MultiHeadAttention(D, n_heads)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=not adaptive, eps=1e-6)
        self.mlp = MLP(D, int(D * mlp_ratio), approximate="tanh")
        if adaptive:
            chunks = 6 if conditioning == "adaln_zero" else 4
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, chunks * D))
        self.last_attention = None  # (B, H, T, T) or, for cross-attention, (B, H, T, S), with return_weights

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                return_weights: bool = False) -> torch.Tensor:
        """x (B, T, D); c (B, D) for adaLN; context (B, S, D) and its mask (B, 1, S) for cross-attention;
        mask (B, 1, T) for in-context tokens (True = may be attended). Returns (B, T, D)."""
        if self.conditioning not in ADAPTIVE:  # a plain pre-LN block; the condition is in the tokens
            a, weights = self.attn(self.norm1(x), mask=mask, return_weights=True)
            x = x + a
            if self.conditioning == "cross_attention":
                a, weights = self.cross_attn(self.norm_cross(x), context, mask=context_mask, return_weights=True)
                x = x + a
            self.last_attention = weights.detach() if return_weights else None
            return x + self.mlp(self.norm2(x))
        modulation = self.adaLN_modulation(c)                                     # (B, 6D) or (B, 4D)
        if self.conditioning == "adaln_zero":
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)
            gate_msa, gate_mlp = gate_msa[:, None], gate_mlp[:, None]              # (B, 1, D)
        else:
            shift_msa, scale_msa, shift_mlp, scale_mlp = modulation.chunk(4, dim=1)
            gate_msa = gate_mlp = 1.0
        a, weights = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), return_weights=True)
        self.last_attention = weights.detach() if return_weights else None
        x = x + gate_msa * a
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """tokens (B, N, D) -> (B, N, p*p*C_out): a LayerNorm (adaptive for adaLN models) then a Linear."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, adaptive: bool):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=not adaptive, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size)) if adaptive else None

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.norm_final(x)
        if self.adaLN_modulation is not None:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)               # (B, D) each
            x = modulate(x, shift, scale)
        return self.linear(x)


class DiT(nn.Module):
    """The Diffusion Transformer (module docstring): ``forward(x, t, cond=None) -> (B, C_out, Hh, Ww)``.

    ``cond`` is (B,) class labels in 0..num_classes (num_classes: the null label) or (B, L) caption
    token ids (``shapeworld.encode_prompts``); None means the null condition for the batch.
    """

    def __init__(self, config: DiTConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = c = checks.instance("config", config, DiTConfig)
        D = c.hidden_size
        # With a generator, PyTorch's default init runs on a copy of the global stream (left where it
        # was) and every weight is redrawn from the generator; without one, from the global stream.
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self.x_embedder = PatchEmbed(c.in_channels, D, c.patch_size)
            self.t_embedder = TimestepEmbedder(c.frequency_dim, D)
            if c.condition == "class":
                self.y_embedder = nn.Embedding(c.num_classes + 1, D)                   # + 1: the null label
            else:
                self.y_embedder = CaptionEncoder(D, c.caption_layers, c.n_heads, c.caption_length)
            self.blocks = nn.ModuleList(DiTBlock(D, c.n_heads, c.mlp_ratio, c.conditioning) for _ in range(c.depth))
            self.final_layer = FinalLayer(D, c.patch_size, c.out_channels, c.conditioning in ADAPTIVE)
        # Fixed, not learned (DiT): computed from the config, not saved with the weights.
        grid = c.input_size // c.patch_size
        self.register_buffer("pos_embed", sincos_2d_positional_embedding(D, grid), persistent=False)  # (N, D)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """DiT's init, drawn from ``generator``: Xavier-uniform linear maps (the patch embedding too, as
        the linear map it is), zero biases, N(0, 0.02^2) for the label table and the timestep MLP, and
        zeros for every adaLN modulation and the final Linear: a new model outputs exactly 0, and with
        adaLN-Zero every block starts as the identity. The caption encoder keeps its own init
        (``CaptionEncoder.reset_parameters``: word embeddings that weigh as much as positions)."""
        xavier_uniform_linears_(self, generator)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1), generator=generator)
        nn.init.zeros_(self.x_embedder.proj.bias)
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02, generator=generator)
        zero = [self.final_layer.linear] + [m.adaLN_modulation[-1] for m in (*self.blocks, self.final_layer)
                                            if getattr(m, "adaLN_modulation", None) is not None]
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if isinstance(self.y_embedder, CaptionEncoder):  # its words weigh as much as its positions
            self.y_embedder.reset_parameters(generator)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def null_condition(self, batch: int | None = None) -> torch.Tensor:
        """The null condition: the null label (0-D) or the empty caption's ids (L,); with ``batch``, B of them."""
        if self.config.condition == "class":
            null = torch.tensor(self.config.num_classes)
        else:
            null = encode_prompts([NULL_CAPTION], self.config.caption_length)[0]  # (L,)
        return null if batch is None else null.expand(batch, *null.shape).clone()

    def _condition(self, cond: Any, B: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """cond -> (vector (B, D) for adaLN, tokens (B, S, D), keep (B, S)) of the condition."""
        c = self.config
        if cond is None:
            cond = self.null_condition(B)
        if c.condition == "class":
            labels = checks.indices("cond", cond, 0, c.num_classes, batch=B).expand(B).to(device)  # (B,)
            vector = self.y_embedder(labels)                                      # (B, D)
            return vector, vector[:, None], torch.ones(B, 1, dtype=torch.bool, device=device)
        checks.tensor("cond", cond, "B L", dtype="index", B=B, L=c.caption_length,
                      hint="caption token ids from shapeworld.encode_prompts, one row per image")
        tokens, keep, pooled = self.y_embedder(cond.to(device))                   # (B, L, D), (B, L), (B, D)
        return pooled, tokens, keep

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None,
                return_weights: bool = False) -> torch.Tensor:
        """x_t (B, C, Hh, Ww), t (B,) integer or real timesteps, cond (see the class) -> (B, C_out, Hh, Ww).
        With ``return_weights`` each block keeps its attention weights in ``last_attention``."""
        c = self.config
        B = checks.tensor("x", x, "B C Hh Ww", C=c.in_channels, Hh=c.input_size, Ww=c.input_size)[0]
        checks.tensor("t", t, "B", dtype="number", B=B)
        tokens = self.x_embedder(x) + self.pos_embed                              # (B, N, D)
        t_emb = self.t_embedder(t)                                                # (B, D)
        y_vector, y_tokens, y_keep = self._condition(cond, B, x.device)
        vector = t_emb + y_vector                                                 # c = t_emb + y_emb, (B, D)
        N = tokens.shape[1]
        context = context_mask = mask = None
        if c.conditioning == "in_context":  # t and the condition as extra tokens of the sequence
            tokens = torch.cat([tokens, t_emb[:, None], y_tokens], dim=1)         # (B, N + 1 + S, D)
            keep = torch.cat([torch.ones(B, N + 1, dtype=torch.bool, device=x.device), y_keep], dim=1)
            mask = keep[:, None]                                                  # (B, 1, N + 1 + S)
        elif c.conditioning == "cross_attention":  # t and the condition as a sequence of their own
            context = torch.cat([t_emb[:, None], y_tokens], dim=1)                # (B, 1 + S, D)
            context_mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), y_keep], dim=1)[:, None]
        for block in self.blocks:
            tokens = block(tokens, vector, context=context, context_mask=context_mask, mask=mask,
                           return_weights=return_weights)
        out = self.final_layer(tokens[:, :N], vector)                             # (B, N, p*p*C_out)
        return unpatchify(out, c.patch_size, c.input_size, c.input_size)          # (B, C_out, Hh, Ww)


# --- Cost -------------------------------------------------------------------------------------


def gflops(config: DiTConfig) -> float:
    """Forward Gflops of one image: 2 per multiply-add of every matrix product and convolution, the
    count of ``torch.utils.flop_counter`` (norms, activations and softmax are not counted). The
    paper counts multiply-adds, so its "Gflops" are half of these (DiT-XL/2: 118.6)."""
    c = checks.instance("config", config, DiTConfig)
    D, N, p = c.hidden_size, c.num_patches, c.patch_size
    H = int(D * c.mlp_ratio)
    S = 1 if c.condition == "class" else c.caption_length      # condition tokens
    macs = N * D * c.in_channels * p * p                         # patch embedding
    macs += c.frequency_dim * D + D * D                          # timestep MLP
    if c.condition == "caption":                                 # the caption encoder: 4 D^2 + 8 D^2 per token,
        macs += c.caption_layers * (S * 12 * D * D + 2 * S * S * D)  # and attention over its S tokens
    T = N + 1 + S if c.conditioning == "in_context" else N       # tokens through each block
    block = T * 4 * D * D + 2 * T * T * D + T * 2 * D * H        # q, k, v, out; attention; MLP
    if c.conditioning in ADAPTIVE:
        block += D * (6 if c.conditioning == "adaln_zero" else 4) * D
    if c.conditioning == "cross_attention":                      # q, out over T; k, v over the 1 + S context
        block += T * 2 * D * D + (1 + S) * 2 * D * D + 2 * T * (1 + S) * D
    macs += c.depth * block
    macs += (2 * D * D if c.conditioning in ADAPTIVE else 0) + N * D * p * p * c.out_channels  # final layer
    return 2 * macs / 1e9


# --- Sampling from captions -------------------------------------------------------------------


@torch.no_grad()
def generate(prompts: Sequence[str], model: DiT, schedule=None, steps: int = 50,
             guidance_scale: float | None = DEFAULT_GUIDANCE, generator: torch.Generator | None = None,
             progress: bool = False, clip_x0: bool = True, decode: Callable | None = None) -> torch.Tensor:
    """Images (B, 3, Hh, Ww) in [0, 1] for caption prompts, by DDIM (eta 0, x0 clipped) with
    classifier-free guidance against the empty caption (``guidance_scale`` None: no guidance).

    Every prompt is checked against the caption grammar first (``shapeworld.check_prompt``).
    ``schedule`` defaults to DiT's linear schedule with T = 1000. For a DiT of latents (chapter 7):
    ``clip_x0=False`` (latents have no range to clip to) and ``decode`` maps the final latents to
    pixels in [-1, 1].
    """
    from handbook import diffusion

    model = checks.instance("model", model, DiT)
    if model.config.condition != "caption":
        raise ValueError(f"model: expected a caption-conditioned DiT, got condition={model.config.condition!r}")
    cond = encode_prompts(prompts, model.config.caption_length)                   # (B, L), checked
    schedule = diffusion.NoiseSchedule.linear(1000) if schedule is None else schedule
    c = model.config
    was_training = model.training
    model.eval()
    try:
        x = diffusion.ddim_sample(model, schedule, (len(prompts), c.in_channels, c.input_size, c.input_size),
                                  steps=steps, cond=cond, generator=generator, clip_x0=clip_x0,
                                  guidance_scale=guidance_scale, null_cond=model.null_condition(), progress=progress)
        x = x if decode is None else decode(x)                                     # latents -> pixels
    finally:
        model.train(was_training)
    return ((x + 1) / 2).clamp(0, 1)                                               # [-1, 1] -> [0, 1]
