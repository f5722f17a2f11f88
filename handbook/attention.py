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
- Shapes are batch-first: ``(..., T, D)``; multi-head tensors are ``(B, H, T, Dh)``.

``MultiHeadAttention`` is shared by every later chapter: the GPT of chapter 2, the ViT of chapter
3, the U-Net's attention blocks (chapter 4), DiT (chapter 6) and the text-conditioned models of
chapters 7 and 8 (cross-attention, through ``context``). Nothing else in the package re-implements
attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) boolean mask, True on and below the diagonal: token i may attend to tokens 0..i."""
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T: expected a positive int, got {T!r}")
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def _check_mask(mask: torch.Tensor, Tq: int, Tk: int, batch_shape: torch.Size) -> None:
    """A mask must be boolean and broadcast to (..., Tq, Tk) *without* changing those two axes."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a boolean tensor (True = may attend), got {got}")
    if mask.dim() < 2 or mask.shape[-2] not in (1, Tq) or mask.shape[-1] not in (1, Tk):
        raise ValueError(f"mask: expected a shape broadcastable to (..., Tq={Tq}, Tk={Tk}), "
                         f"got {tuple(mask.shape)}")
    try:
        torch.broadcast_shapes(mask.shape[:-2], batch_shape)
    except RuntimeError:
        raise ValueError(f"mask: its leading axes {tuple(mask.shape[:-2])} do not broadcast against "
                         f"the batch axes {tuple(batch_shape)} of q") from None


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, dropout: float = 0.0,
                                 generator: torch.Generator | None = None,
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(D) masked) v, returning ``(out, weights)``.

    q: (..., Tq, D); k: (..., Tk, D); v: (..., Tk, Dv); mask: bool, broadcastable to (..., Tq, Tk),
    True = may attend. Returns out (..., Tq, Dv) and weights (..., Tq, Tk), whose rows sum to 1 -
    except rows of queries that may attend to nothing, which are all zeros (and so is their output).
    ``dropout`` (training only) zeroes weights after the softmax, as in the Transformer paper.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError(f"{name}: expected a tensor shaped (..., T, D), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k: expected the same last dimension D, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v: expected the same number of tokens Tk, got {k.shape[-2]} and {v.shape[-2]}")
    Tq, Tk, D = q.shape[-2], k.shape[-2], q.shape[-1]

    # Dividing by sqrt(D) keeps the variance of a score at about 1 whatever the width: a dot
    # product of D unit-variance terms has variance D, and large scores saturate the softmax.
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (..., Tq, Tk)
    if mask is not None:
        _check_mask(mask, Tq, Tk, q.shape[:-2])
        scores = scores.masked_fill(~mask, float("-inf"))
        # A row with nothing to attend would be softmax(-inf, ..., -inf) = NaN. Give it finite
        # scores (any will do) and zero its weights after the softmax: no NaN in values or gradients.
        has_any = mask.any(dim=-1, keepdim=True)  # (..., Tq, 1)
        scores = scores.masked_fill(~has_any, 0.0)
        weights = torch.softmax(scores, dim=-1) * has_any  # (..., Tq, Tk)
    else:
        weights = torch.softmax(scores, dim=-1)  # (..., Tq, Tk)
    if dropout > 0.0:
        keep = torch.rand(weights.shape, generator=generator, device=weights.device) >= dropout
        weights = weights * keep / (1.0 - dropout)
    return weights @ v, weights  # (..., Tq, Dv), (..., Tq, Tk)


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
    from ``x`` (B, T, d_model), the keys and values from ``context`` (B, S, d_context). This is how
    the text-conditioned models of chapters 7 and 8 read a caption.

    With the same weights, it equals ``nn.MultiheadAttention(d_model, n_heads, batch_first=True)``
    (whose ``in_proj_weight`` is our q, k, v weights stacked): a test checks it.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, dropout: float = 0.0,
                 d_context: int | None = None):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if d_model % n_heads != 0:
            raise ValueError(f"d_model: expected a multiple of n_heads={n_heads}, got {d_model} "
                             f"(each head gets d_model / n_heads channels)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        if d_context is not None and (not isinstance(d_context, int) or d_context < 1):
            raise ValueError(f"d_context: expected a positive int or None, got {d_context!r}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.d_context = d_context
        self.dropout = dropout
        kv_in = d_model if d_context is None else d_context
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
        """x: (B, T, d_model); context: (B, S, d_context) or None (self-attention).

        mask: bool, (T, S), (B, T, S) or broadcastable to (B, H, T, S); True = may attend.
        cache: a ``KVCache`` (self-attention only) to which this call's keys and values are
        appended; the queries then attend to every cached token too, and ``mask`` must cover them.
        Returns y (B, T, d_model), or (y, weights (B, H, T, S)) when ``return_weights``.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a tensor shaped (B, T, d_model={self.d_model}), got {got}")
        B, T, D = x.shape
        if context is None:
            if self.d_context is not None:
                raise ValueError(f"context: this layer was built for cross-attention "
                                 f"(d_context={self.d_context}); pass a context tensor (B, S, {self.d_context})")
            context = x
        else:
            want = self.d_model if self.d_context is None else self.d_context
            if not isinstance(context, torch.Tensor) or context.dim() != 3 or context.shape[0] != B \
                    or context.shape[-1] != want:
                got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
                raise ValueError(f"context: expected a tensor shaped (B={B}, S, {want}), got {got}")
            if cache is not None:
                raise ValueError("cache: a key-value cache is for self-attention only (context must be None)")

        q = self._split_heads(self.q_proj(x))        # (B, H, T, Dh)
        k = self._split_heads(self.k_proj(context))  # (B, H, S, Dh)
        v = self._split_heads(self.v_proj(context))  # (B, H, S, Dh)
        if cache is not None:
            k, v = cache.append(k, v)                # (B, H, T_past + T, Dh)
        if isinstance(mask, torch.Tensor):
            if mask.dim() > 4:
                raise ValueError(f"mask: expected at most 4 axes (B, H, T, S), got {tuple(mask.shape)}")
            if mask.dim() == 3:  # (B, T, S): one mask per sequence, shared by the heads
                if mask.shape[0] not in (1, B):
                    raise ValueError(f"mask: a 3-axis mask is read as (B={B}, T, S), got {tuple(mask.shape)}")
                mask = mask[:, None]  # (B, 1, T, S)
        dropout = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout=dropout)  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(B, T, D)  # (B, T, D): the heads side by side again
        y = self.out_proj(out)
        return (y, weights) if return_weights else y
