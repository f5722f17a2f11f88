"""A small GPT: the decoder-only Transformer of handbook section 2, in nanoGPT conventions.

    tokens (B, T) -> token embedding + position (B, T, D)
                  -> n_layer x [ x + attn(ln1(x)),  x + mlp(ln2(x)) ]     (pre-LN, eq. 2.4)
                  -> ln_f -> linear head tied to the token embedding -> logits (B, T, V)

``TransformerBlock`` is the building block the Vision Transformer (chapter 3) reuses unchanged:
it knows nothing about tokens, positions or masks beyond what it is given.

Two switches exist for the chapter's experiments, not because a real GPT would need them:
``norm="post"`` (the original Transformer's ``ln(x + f(x))``) and ``residual=False`` (no skip
connection), to measure why modern models are pre-LN with residuals (reading question 2.2);
and ``positional="sinusoidal"`` to compare fixed with learned positions (question 2.3).

Generation keeps a key-value cache (``attention.KVCache``) per layer: a causal model's keys and
values for a prefix never change, so each new token costs one token's worth of work, not the
whole prefix's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from handbook.attention import KVCache, MultiHeadAttention, causal_mask
from handbook.embeddings import sinusoidal_positional_encoding


@dataclass(frozen=True)
class GPTConfig:
    """Everything that defines a GPT's shape. Frozen: a config never changes after a model uses it."""

    vocab_size: int
    block_size: int          # the longest sequence the model accepts (its context window)
    n_layer: int = 4
    n_heads: int = 4
    d_model: int = 64
    dropout: float = 0.0
    positional: str = "learned"   # "learned" | "sinusoidal"
    norm: str = "pre"             # "pre" | "post"
    residual: bool = True         # False only for the residual experiment of question 2.2
    bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_heads", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model: expected a multiple of n_heads={self.n_heads}, got {self.d_model}")
        if self.positional not in ("learned", "sinusoidal"):
            raise ValueError(f"positional: expected 'learned' or 'sinusoidal', got {self.positional!r}")
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"d_model: sinusoidal positions need an even width, got {self.d_model}")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"norm: expected 'pre' or 'post', got {self.norm!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")

    @classmethod
    def caption_model(cls, vocab_size: int, block_size: int = 64, **overrides) -> "GPTConfig":
        """The chapter's model: 4 layers, 4 heads, width 64 (~0.2M parameters), for ShapeWorld text."""
        return cls(**{"vocab_size": vocab_size, "block_size": block_size, "n_layer": 4, "n_heads": 4,
                      "d_model": 64, **overrides})


class MLP(nn.Module):
    """The position-wise feed-forward network: D -> 4D -> D with an exact GELU (eq. 2.3)."""

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0, bias: bool = True,
                 approximate: str = "none"):
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden, bias=bias)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, d_model, bias=bias)
        # No dropout module at all when p = 0: generation calls this once per token and layer.
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))  # (B, T, D)


class TransformerBlock(nn.Module):
    """One Transformer layer: self-attention, then an MLP, each wrapped in a LayerNorm and a residual.

    pre-LN (GPT-2, ViT):   x = x + attn(ln1(x));   x = x + mlp(ln2(x))
    post-LN (2017 paper):  x = ln1(x + attn(x));   x = ln2(x + mlp(x))

    Pre-LN leaves the residual path an identity from the input to the output, so gradients reach
    the first layer undiminished however deep the stack; post-LN divides them at every layer.
    """

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 norm: str = "pre", residual: bool = True, ln_eps: float = 1e-5, bias: bool = True):
        super().__init__()
        if norm not in ("pre", "post"):
            raise ValueError(f"norm: expected 'pre' or 'post', got {norm!r}")
        self.norm, self.residual = norm, residual
        self.ln1 = nn.LayerNorm(d_model, eps=ln_eps)
        self.attn = MultiHeadAttention(d_model, n_heads, bias=bias, dropout=dropout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.ln2 = nn.LayerNorm(d_model, eps=ln_eps)
        self.mlp = MLP(d_model, int(mlp_ratio * d_model), dropout=dropout, bias=bias)

    def _attend(self, x, mask, cache, return_weights):
        y, weights = self.attn(x, mask=mask, cache=cache, return_weights=True)
        self.last_attention = weights.detach() if return_weights else None
        return self.drop(y)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None,
                return_weights: bool = False) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D). With ``return_weights`` the attention weights (B, H, T, S)
        are kept in ``self.last_attention`` (for the attention explorer), not returned."""
        if self.norm == "pre":
            a = self._attend(self.ln1(x), mask, cache, return_weights)
            x = x + a if self.residual else a
            m = self.mlp(self.ln2(x))
            return x + m if self.residual else m
        a = self._attend(x, mask, cache, return_weights)
        x = self.ln1(x + a if self.residual else a)
        m = self.mlp(x)
        return self.ln2(x + m if self.residual else m)


class GPT(nn.Module):
    """A decoder-only Transformer language model (Radford et al. 2018/2019; nanoGPT conventions)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"config: expected a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        self.token_embedding = nn.Embedding(c.vocab_size, c.d_model)
        if c.positional == "learned":
            self.position_embedding = nn.Embedding(c.block_size, c.d_model)
        else:
            # A buffer, not a parameter: fixed, saved with the model, moved with .to(device).
            self.register_buffer("position_encoding", sinusoidal_positional_encoding(c.block_size, c.d_model),
                                 persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.d_model, c.n_heads, dropout=c.dropout, norm=c.norm, residual=c.residual,
                             bias=c.bias) for _ in range(c.n_layer))
        # Post-LN blocks already end in a LayerNorm; pre-LN ones need a last one before the head.
        self.ln_f = nn.LayerNorm(c.d_model) if c.norm == "pre" else nn.Identity()
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): reading and writing a token use the same vectors.
        self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        # Sinusoidal positions have amplitude 1. GPT's token embeddings (std 0.02) would drown in
        # them, so follow the Transformer paper instead (section 3.4): embeddings of std
        # 1/sqrt(D), multiplied by sqrt(D) in the forward pass, so tokens and positions weigh alike.
        self.embedding_scale = 1.0
        if c.positional == "sinusoidal":
            nn.init.normal_(self.token_embedding.weight, mean=0.0, std=c.d_model ** -0.5)
            self.embedding_scale = math.sqrt(c.d_model)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 L), so the
        # variance of the stream does not grow with depth (2 writes per layer: attention and MLP).
        for block in self.blocks:
            for proj in (block.attn.out_proj, block.mlp.fc2):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Parameters counted once (the tied head is the embedding)."""
        return sum(p.numel() for p in self.parameters())

    def _check_idx(self, idx, what: str = "idx") -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            got = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"{what}: expected an integer tensor of token ids shaped (B, T), got {got}")
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            raise ValueError(f"{what}: token ids must lie in 0..{self.config.vocab_size - 1}, "
                             f"got values in {idx.min().item()}..{idx.max().item()}")

    def _embed(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        T = idx.shape[1]
        if start + T > self.config.block_size:
            raise ValueError(f"idx: sequence of length {start + T} is longer than block_size="
                             f"{self.config.block_size}, the longest this model accepts")
        if self.config.positional == "learned":
            pos = self.position_embedding(torch.arange(start, start + T, device=idx.device))  # (T, D)
        else:
            pos = self.position_encoding[start:start + T]                                    # (T, D)
        return self.drop(self.token_embedding(idx) * self.embedding_scale + pos)                                    # (B, T, D)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                caches: list[KVCache] | None = None, return_weights: bool = False,
                ignore_index: int = -100):
        """idx: (B, T) token ids -> (logits (B, T, V), loss or None).

        targets: (B, T) next-token ids; the loss is the mean cross-entropy over positions whose
        target is not ``ignore_index`` (use it for padding). ``caches`` (one ``KVCache`` per layer)
        continues a sequence whose earlier tokens are already cached: idx then holds the new tokens.
        """
        self._check_idx(idx)
        B, T = idx.shape
        start = 0 if caches is None else caches[0].length
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"caches: expected one KVCache per layer ({len(self.blocks)}), got {len(caches)}")
        x = self._embed(idx, start)                                         # (B, T, D)
        # New token i (absolute position start + i) may see every cached token and new tokens <= i.
        mask = None if T == 1 else causal_mask(start + T, device=idx.device)[start:]  # (T, start + T)
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, cache=None if caches is None else caches[i], return_weights=return_weights)
        logits = self.lm_head(self.ln_f(x))                                 # (B, T, V)
        loss = None
        if targets is not None:
            if not isinstance(targets, torch.Tensor) or targets.shape != idx.shape:
                got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
                raise ValueError(f"targets: expected a tensor shaped like idx {tuple(idx.shape)}, got {got}")
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=ignore_index)
        return logits, loss

    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer for one forward pass: a list of (B, H, T, T) tensors."""
        with torch.no_grad():
            self.forward(idx, return_weights=True)
        return [block.last_attention for block in self.blocks]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True, eos_id: int | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after the prompt idx (B, T0); returns (B, T0 + new).

        Each step samples from softmax(logits / temperature) of the last position, restricted to
        the ``top_k`` most likely tokens if given. ``temperature=0`` means greedy (argmax).
        ``use_cache=False`` recomputes the whole prefix at every step: the same tokens, slower (the
        chapter measures how much). With ``eos_id``, generation stops early once every sequence has
        produced it (later positions of finished sequences are filled with ``eos_id``).
        """
        self._check_idx(idx)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: expected a non-negative int, got {max_new_tokens!r}")
        if idx.shape[1] + max_new_tokens > self.config.block_size:
            raise ValueError(f"max_new_tokens: prompt ({idx.shape[1]}) + {max_new_tokens} new tokens exceeds "
                             f"block_size={self.config.block_size}")
        if not (isinstance(temperature, (int, float)) and temperature >= 0):
            raise ValueError(f"temperature: expected a number >= 0, got {temperature!r}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k: expected a positive int or None, got {top_k!r}")
        was_training = self.training
        self.eval()
        caches = [KVCache() for _ in self.blocks] if use_cache else None
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        new_tokens = idx  # what the next forward pass must read: all of it at first
        for _ in range(max_new_tokens):
            logits, _ = self.forward(new_tokens if use_cache else idx, caches=caches)
            next_id = sample_next_token(logits[:, -1, :], temperature, top_k, generator)  # (B, 1)
            if eos_id is not None:
                next_id = torch.where(finished[:, None], torch.full_like(next_id, eos_id), next_id)
                finished |= next_id[:, 0] == eos_id
            idx = torch.cat([idx, next_id], dim=1)                                          # (B, T + 1)
            new_tokens = next_id
            if eos_id is not None and bool(finished.all()):
                break
        self.train(was_training)
        return idx


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> sampled ids (B, 1). Temperature divides the logits (sharper below 1,
    flatter above); top-k keeps only the k largest before sampling; temperature 0 is argmax."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]       # (B, 1): the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)                             # (B, V)
    return torch.multinomial(probs, 1, generator=generator)           # (B, 1)
