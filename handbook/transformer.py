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
values for a prefix never change, so each new token computes its own and reads the prefix's from
the cache instead of recomputing the whole prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from handbook import checks
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
        checks.positive_ints(vocab_size=self.vocab_size, block_size=self.block_size, n_layer=self.n_layer)
        checks.divisible("d_model", self.d_model, "n_heads", self.n_heads)
        checks.choices(positional=(self.positional, ("learned", "sinusoidal")), norm=(self.norm, ("pre", "post")))
        if self.positional == "sinusoidal":
            checks.positive_int("d_model", self.d_model, multiple_of=2, extra="(sinusoidal positions: sin, cos pairs)")
        checks.real("dropout", self.dropout, 0.0, 1.0, open_high=True)

    @classmethod
    def caption_model(cls, vocab_size: int, block_size: int = 64, **overrides) -> "GPTConfig":
        """The chapter's model: 4 layers, 4 heads, width 64 (~0.2M parameters), for ShapeWorld text."""
        return cls(**{"vocab_size": vocab_size, "block_size": block_size, "n_layer": 4, "n_heads": 4,
                      "d_model": 64, **overrides})


class MLP(nn.Module):
    """The position-wise feed-forward network (eq. 2.3): D -> hidden (4D in the course's models) -> D,
    with an exact GELU unless ``approximate="tanh"``."""

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
        checks.choice("norm", norm, ("pre", "post"))
        self.norm, self.residual = norm, residual
        self.last_attention = None  # (B, H, T, S) after a forward pass with return_weights
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


@torch.no_grad()
def collect_attention(model: nn.Module, blocks: nn.ModuleList, run) -> list[torch.Tensor]:
    """The attention weights each of ``blocks`` keeps during ``run()`` (a forward pass that asks for
    them), one (B, H, T, T) per block, with ``model`` in eval mode for the pass (no dropout) and
    its mode restored after; the blocks forget them, so a batch's maps do not stay in the model.
    GPT and ViT share it."""
    was_training = model.training
    model.eval()
    try:
        run()
        return [block.last_attention for block in blocks]
    finally:
        model.train(was_training)
        for block in blocks:
            block.last_attention = None


class GPT(nn.Module):
    """A decoder-only Transformer language model (Radford et al. 2018/2019; nanoGPT conventions).

    ``generator`` fixes the initial weights, and building then never touches the global random
    stream. Without one, the weights come from the global stream (``torch.manual_seed`` fixes
    them), exactly as they always have: the notebooks' numbers depend on it.
    """

    def __init__(self, config: GPTConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = c = checks.instance("config", config, GPTConfig)
        checks.generator("generator", generator)
        # The layers draw a default init, which reset_parameters redraws: with a generator, in a fork
        # of the global stream (left where it was); without one, from the global stream itself.
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self.token_embedding = nn.Embedding(c.vocab_size, c.d_model)
            if c.positional == "learned":
                self.position_embedding = nn.Embedding(c.block_size, c.d_model)
            else:
                # A buffer, not a parameter: fixed, moved with .to(device), not saved (it is
                # recomputed from the config).
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
        # Sinusoidal positions have amplitude 1. GPT's token embeddings (std 0.02) would drown in
        # them, so follow the Transformer paper instead (section 3.4): embeddings of std
        # 1/sqrt(D), multiplied by sqrt(D) in the forward pass, so tokens and positions weigh alike.
        self.embedding_scale = math.sqrt(c.d_model) if c.positional == "sinusoidal" else 1.0
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GPT-2's init, drawn from ``generator`` (None: the global stream): weights of linear maps
        and embeddings N(0, 0.02^2), zero biases, LayerNorm at identity; token embeddings of std
        1/sqrt(D) with sinusoidal positions (see ``embedding_scale``)."""
        c = self.config
        for m in self.modules():  # the tied head is drawn after the embedding, and wins
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02, generator=generator)
            if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
        if c.positional == "sinusoidal":
            nn.init.normal_(self.token_embedding.weight, mean=0.0, std=c.d_model ** -0.5, generator=generator)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 L), so the
        # variance of the stream does not grow with depth (2 writes per layer: attention and MLP).
        for block in self.blocks:
            for proj in (block.attn.out_proj, block.mlp.fc2):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer), generator=generator)

    def num_parameters(self) -> int:
        """Parameters counted once (the tied head is the embedding)."""
        return sum(p.numel() for p in self.parameters())

    def _embed(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        T = idx.shape[1]
        if self.config.positional == "learned":
            pos = self.position_embedding(torch.arange(start, start + T, device=idx.device))  # (T, D)
        else:
            pos = self.position_encoding[start:start + T]                                    # (T, D)
        return self.drop(self.token_embedding(idx) * self.embedding_scale + pos)         # (B, T, D)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                caches: list[KVCache] | None = None, return_weights: bool = False,
                ignore_index: int = -100):
        """idx: (B, T) token ids -> (logits (B, T, V), loss or None).

        targets: (B, T) next-token ids; the loss is the mean cross-entropy over positions whose
        target is not ``ignore_index`` (use it for padding). ``caches`` (one ``KVCache`` per layer)
        continues a sequence whose earlier tokens are already cached: idx then holds the new tokens.
        """
        B, T = checks.tensor("idx", idx, "B T", dtype="index")
        checks.within("idx (token ids)", idx, 0, self.config.vocab_size - 1)
        checks.items("caches", caches, KVCache, len(self.blocks), none_ok=True)  # one per layer
        start = 0 if caches is None else caches[0].length
        room = self.config.block_size - start  # the context window, less the cached tokens
        checks.positive_int("idx's length T", T, 0, maximum=room, extra=f"(block_size - {start} cached tokens)")
        x = self._embed(idx, start)                                         # (B, T, D)
        # New token i (absolute position start + i) may see every cached token and new tokens <= i.
        mask = None if T == 1 else causal_mask(start + T, device=idx.device)[start:]  # (T, start + T)
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, cache=None if caches is None else caches[i], return_weights=return_weights)
        logits = self.lm_head(self.ln_f(x))                                 # (B, T, V)
        loss = None
        if targets is not None:
            checks.tensor("targets", targets, "B T", dtype=None, B=B, T=T)
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=ignore_index)
        return logits, loss

    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer (in eval mode) for one forward pass: n_layer (B, H, T, T)."""
        return collect_attention(self, self.blocks, lambda: self.forward(idx, return_weights=True))

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
        T0 = checks.tensor("idx", idx, "B T", dtype="index")[1]  # forward checks the token ids
        room = self.config.block_size - T0  # the context window, less the prompt
        checks.positive_int("max_new_tokens", max_new_tokens, 0, maximum=room, extra=f"(block_size - {T0} prompt tokens)")
        checks.real("temperature", temperature, 0.0)
        checks.positive_int("top_k", top_k, none_ok=True)
        was_training = self.training
        self.eval()
        caches = [KVCache() for _ in self.blocks] if use_cache else None
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        new_tokens = idx  # what the next forward pass must read: all of it at first
        try:
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
        finally:  # also when forward rejects the prompt's token ids
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
