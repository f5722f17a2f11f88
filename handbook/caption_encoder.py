"""The caption encoder of chapters 6 and 7: ShapeWorld captions -> vectors a denoiser can read.

A text-to-image model needs the caption as numbers. Stable Diffusion borrows a frozen CLIP text
encoder; ShapeWorld's language is so small (240 captions) that a two-layer Transformer encoder,
trained together with the denoiser, learns all it needs. It is chapter 2's machinery run without
the causal mask: every word may look at every other word (``TransformerBlock``), but no word looks
at the padding that fills short captions to the batch's length.

    ids (B, L) -> token embeddings + fixed positions -> encoder blocks -> LayerNorm
              -> tokens (B, L, D), keep (B, L) (False at padding), pooled (B, D)

The **tokens** feed cross-attention or in-context conditioning; the **pooled** vector (the mean
of the non-padding tokens) feeds adaLN, which needs one vector per image. The **empty caption**
"" (just ``<bos> <eos>``) is the null condition of classifier-free guidance: the denoiser sees it
in place of the real caption for a share of the training batches, and at sampling time it gives
the unconditional prediction. Prompts become ids through ``shapeworld.encode_prompts``, which
checks each against the caption grammar.

**Words must not drown in positions.** The fixed sinusoids have amplitude 1 in every dimension
(norm sqrt(D / 2)). Word embeddings of DiT's std 0.02 (norm 0.02 sqrt(D)) are forty times smaller:
every token starts as its position and nothing else, and the first version of chapter 6's model,
trained so, ended with "red" and "blue" encoded as the same vector (cosine 1.000) and drew either
for both. As chapter 2's language model does (the Transformer paper, section 3.4), the embeddings
start with std 1/sqrt(D) and are multiplied by sqrt(D): words and positions weigh alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from handbook import checks
from handbook.embeddings import sinusoidal_positional_encoding
from handbook.initialisation import xavier_uniform_linears_
from handbook.shapeworld.captions import MAX_CAPTION_TOKENS, CaptionTokenizer
from handbook.transformer import TransformerBlock

TOKENIZER = CaptionTokenizer()


class CaptionEncoder(nn.Module):
    """A small bidirectional Transformer over caption token ids (see the module docstring)."""

    def __init__(self, d_model: int, n_layers: int = 2, n_heads: int = 4, max_length: int = MAX_CAPTION_TOKENS,
                 generator: torch.Generator | None = None):
        super().__init__()
        checks.positive_ints(n_layers=n_layers, max_length=max_length)  # d_model and n_heads: by the blocks
        self.d_model, self.max_length, self.pad_id = d_model, max_length, TOKENIZER.pad_id
        with torch.random.fork_rng(devices=[], enabled=generator is not None):  # every weight redrawn below
            self.token_embed = nn.Embedding(TOKENIZER.vocab_size, d_model)
            self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, ln_eps=1e-6) for _ in range(n_layers))
            self.norm = nn.LayerNorm(d_model, eps=1e-6)
        # Fixed positions (chapter 2's sinusoids): no parameters, and not saved with the weights.
        self.register_buffer("positions", sinusoidal_positional_encoding(max_length, d_model), persistent=False)
        self.embedding_scale = math.sqrt(d_model)  # see the module docstring
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """DiT's init (Xavier-uniform linear maps, zero biases), but word embeddings of std 1/sqrt(D),
        scaled by sqrt(D) in ``forward``, so that each word weighs as much as its position."""
        xavier_uniform_linears_(self, generator)
        nn.init.normal_(self.token_embed.weight, std=self.d_model ** -0.5, generator=generator)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (B, L), L <= max_length -> tokens (B, L, D), keep (B, L) bool, pooled (B, D)."""
        checks.tensor("ids", ids, "B L", dtype="index")
        checks.within("ids", ids, 0, TOKENIZER.vocab_size - 1)
        checks.positive_int("the caption length L", ids.shape[1], maximum=self.max_length)
        keep = ids != self.pad_id                                     # (B, L): False at padding
        x = self.token_embed(ids) * self.embedding_scale + self.positions[: ids.shape[1]]  # (B, L, D)
        for block in self.blocks:
            x = block(x, mask=keep[:, None, :])                       # (B, 1, L): attend to words only
        x = self.norm(x)                                              # (B, L, D)
        weights = keep.to(x.dtype)[..., None]                         # (B, L, 1)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1)   # (B, D): mean over the words
        return x, keep, pooled
