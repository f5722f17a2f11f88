"""Attention: the one mechanism every model of the course is built around (handbook section 2).

Scaled dot-product attention (Vaswani et al. 2017, eq. 1; handbook eq. 2.1)::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V

Each query row of ``Q`` scores every key row of ``K`` by a dot product, the softmax turns the
scores of one query into weights that sum to one, and the output is the weighted average of the
value rows. ``M`` is a mask: 0 where a query may look, -inf where it may not.

Conventions (../shared/REFERENCES.md):

- Boolean masks mean **True = may attend**, as in ``torch.nn.functional.scaled_dot_product_attention``.
  (``nn.MultiheadAttention`` uses the opposite polarity: True = blocked. Mind the flip.)
- A query that may attend to *nothing* (its mask row is all False) gets all-zero weights and a zero
  output. The softmax of a row of -inf is 0/0 = NaN; a NaN would then spread through every later
  layer, so we define the result instead of letting it happen.
- Shapes are batch-first: queries ``(..., T, D)``, keys and values ``(..., S, D)`` (S = T in
  self-attention); multi-head tensors are ``(B, H, T, Dh)``, Dh = D / H.

``MultiHeadAttention`` is shared by every later chapter: the GPT of chapter 2, the ViT of chapter
3, the U-Net's attention blocks (chapter 4), DiT (chapter 6) and the text-conditioned models of
chapters 7 and 8 (cross-attention, through ``context``). Nothing else in the package re-implements
attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from handbook import checks


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) boolean mask, True on and below the diagonal: token i may attend to tokens 0..i."""
    checks.positive_int("T", T)
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, dropout: float = 0.0,
                                 generator: torch.Generator | None = None,
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(D) + M) v (eq. 2.1), returning ``(out, weights)``.

    q: (..., T, D); k: (..., S, D); v: (..., S, Dv); mask: bool, broadcastable to (..., T, S),
    True = may attend. Returns out (..., T, Dv) and weights (..., T, S), whose rows sum to 1 -
    except rows of queries that may attend to nothing, which are all zeros (and so is their output).
    ``dropout`` zeroes weights after the softmax and scales the rest by 1 / (1 - dropout)
    (attention dropout; ``MultiHeadAttention`` passes it in training mode only).
    """
    checks.shapes(q=(q, "... T D"), k=(k, "... S D"), v=(v, "... S Dv"), masks={"mask": (mask, "... T S")})
    # Dividing by sqrt(D) keeps the variance of a score at about 1 whatever the width: a dot
    # product of D unit-variance terms has variance D, and large scores saturate the softmax.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
        # A row with nothing to attend would be softmax(-inf, ..., -inf) = NaN. Give it finite
        # scores (any will do) and zero its weights after the softmax: no NaN in values or gradients.
        has_any = mask.any(dim=-1, keepdim=True)  # (..., T, 1)
        scores = scores.masked_fill(~has_any, 0.0)
        weights = torch.softmax(scores, dim=-1) * has_any  # (..., T, S)
    else:
        weights = torch.softmax(scores, dim=-1)  # (..., T, S)
    if dropout > 0.0:
        keep = torch.rand(weights.shape, generator=generator, device=weights.device) >= dropout
        weights = weights * keep / (1.0 - dropout)
    return weights @ v, weights  # (..., T, Dv), (..., T, S)


@dataclass
class KVCache:
    """The keys and values one attention layer has already computed, for fast generation.

    A language model generates one token at a time; without a cache, step n recomputes the keys
    and values of all n earlier tokens, which never change (a causal model cannot look ahead).
    With it, each step computes them for the new token only and appends them here.
    """

    k: torch.Tensor | None = None  # (B, H, T_past, Dh)
    v: torch.Tensor | None = None  # (B, H, T_past, Dh)

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new tokens' keys and values; return all of them, old and new."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=-2)  # (B, H, T_past + T_new, Dh)
            self.v = torch.cat([self.v, v], dim=-2)
        return self.k, self.v


class MultiHeadAttention(nn.Module):
    """Multi-head attention (handbook eq. 2.2): H attentions in parallel, each on a Dh = D/H slice.

    ``forward(x)`` is self-attention; ``forward(x, context)`` is cross-attention: the queries come
    from ``x`` (B, T, D), the keys and values from ``context`` (B, S, d_context). This is how
    the text-conditioned models of chapters 7 and 8 read a caption.

    With the same weights, it equals ``nn.MultiheadAttention(d_model, n_heads, batch_first=True)``
    (whose ``in_proj_weight`` is our q, k, v weights stacked): a test checks it.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, dropout: float = 0.0,
                 d_context: int | None = None):
        super().__init__()
        checks.divisible("d_model", d_model, "n_heads", n_heads)
        self.dropout = checks.real("dropout", dropout, 0.0, 1.0, open_high=True)  # kept weights grow by 1 / (1 - p)
        self.d_context = checks.positive_int("d_context", d_context, none_ok=True)
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        kv_in = d_context or d_model
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(kv_in, d_model, bias=bias)
        self.v_proj = nn.Linear(kv_in, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, return_weights: bool = False,
                cache: KVCache | None = None):
        """x: (B, T, D); context: (B, S, d_context), or None for self-attention (S = T).

        mask: bool, (T, S), (B, T, S) or broadcastable to (B, H, T, S); True = may attend.
        cache: a ``KVCache`` (self-attention only) to which this call's keys and values are
        appended; the queries then attend to every cached token too, and ``mask`` must cover them.
        Returns y (B, T, D), or (y, weights (B, H, T, S)) when ``return_weights``.
        """
        checks.exclusive("a key-value cache is for self-attention only", context=context, cache=cache)
        if context is None and self.d_context is None:
            context = x  # self-attention: S = T
        sizes = {"D": self.d_model, "d_context": self.d_context or self.d_model}
        checks.shapes(x=(x, "B T D"), context=(context, "B S d_context"), sizes=sizes)
        B, T, D = x.shape
        q = self._split_heads(self.q_proj(x))        # (B, H, T, Dh)
        k = self._split_heads(self.k_proj(context))  # (B, H, S, Dh)
        v = self._split_heads(self.v_proj(context))  # (B, H, S, Dh)
        if cache is not None:
            k, v = cache.append(k, v)                # (B, H, T_past + T, Dh)
        if isinstance(mask, torch.Tensor) and mask.dim() == 3:
            mask = mask[:, None]                     # (B, 1, T, S): one mask per sequence, shared by the heads
        dropout = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout=dropout)  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(B, T, D)  # (B, T, D): the heads side by side again
        y = self.out_proj(out)
        return (y, weights) if return_weights else y
