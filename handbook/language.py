"""The caption language of ShapeWorld as data for a language model (chapter 2).

A language model learns from one long stream of text. Ours is a stream of ShapeWorld captions,
each wrapped in <bos> ... <eos>::

    <bos> a small red cube seen from above <eos> <bos> a large blue torus <eos> <bos> ...

Training batches are random windows of that stream (the GPT recipe: no padding, every position
is a training example, and the model must learn by itself where a caption begins). Sampling
starts from <bos> and stops at <eos>; a sample is *valid* if it parses in the caption grammar
(``shapeworld.is_valid_caption``), the chapter's measure of how well the model speaks.
"""

from __future__ import annotations

import torch
from torch import nn

from handbook import checks
from handbook import shapeworld as sw
from handbook.training import History, train

# The probability that a caption of the corpus names its view ("... seen from above").
VIEW_PROBABILITY = 0.75


def caption_corpus(n: int, generator: torch.Generator) -> list[str]:
    """``n`` random captions: uniform shape, colour and size; a view with probability 3/4."""
    checks.positive_int("n", n)
    checks.instance("generator", generator, torch.Generator, "a torch.Generator")
    choices = []
    for options in (sw.SHAPES, sw.COLOURS, sw.SIZES, sw.VIEWS):
        choices.append(torch.randint(len(options), (n,), generator=generator).tolist())
    with_view = (torch.rand(n, generator=generator) < VIEW_PROBABILITY).tolist()
    return [sw.caption(sw.SHAPES[s], sw.COLOURS[c], sw.SIZES[z], sw.VIEWS[v] if has_view else None)
            for s, c, z, v, has_view in zip(*choices, with_view)]


def token_stream(captions: list[str], tokenizer: sw.CaptionTokenizer) -> torch.Tensor:
    """All captions encoded with <bos>/<eos> and concatenated: a 1-D LongTensor."""
    ids = [token for text in captions for token in tokenizer.encode(text)]
    return torch.tensor(ids, dtype=torch.long)  # (N,): all the tokens, end to end


def random_windows(stream: torch.Tensor, batch_size: int, length: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``length`` tokens, and the same windows shifted by one:
    the inputs x (B, T) and next-token targets y (B, T) of language-model training."""
    (N,) = checks.tensor("stream", stream, "N", dtype=None)
    if N <= length:
        raise ValueError(f"stream: expected more than length={length} tokens, got {N}")
    starts = torch.randint(N - length, (batch_size,), generator=generator)               # (B,)
    offsets = torch.arange(length)                                                      # (T,)
    index = starts[:, None] + offsets[None, :]                                          # (B, T)
    return stream[index], stream[index + 1]


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy of a GPT on a batch (x, y)."""
    x, y = batch
    return model(x, y)[1]


def train_language_model(model: nn.Module, stream: torch.Tensor, steps: int, generator: torch.Generator,
                         batch_size: int = 32, length: int | None = None, lr: float = 3e-3,
                         max_seconds: float | None = None, progress: bool = True, desc: str = "train GPT",
                         ) -> History:
    """Train a GPT on random windows of ``stream`` (length defaults to the model's block size).

    AdamW with a short linear warm-up, then cosine decay to 10% (the GPT-2/3 schedule), and
    gradient clipping at 1: the standard recipe, which is what makes a high learning rate safe.
    """
    length = model.config.block_size if length is None else length
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(progress_ * torch.pi)).item())

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history = train(model, lm_loss, lambda step: random_windows(stream, batch_size, length, generator),
                    steps=steps, optimizer=optimizer, scheduler=scheduler, grad_clip=1.0,
                    max_seconds=max_seconds, progress=progress, desc=desc)
    model.eval()
    return history


@torch.no_grad()
def evaluate_loss(model: nn.Module, stream: torch.Tensor, length: int, generator: torch.Generator,
                  batches: int = 8, batch_size: int = 64) -> float:
    """Mean next-token loss on random windows of ``length`` tokens (e.g. held-out text)."""
    was_training = model.training
    model.eval()
    losses = [lm_loss(model, random_windows(stream, batch_size, length, generator)).item()
              for _ in range(batches)]
    model.train(was_training)
    return sum(losses) / len(losses)


def sample_captions(model: nn.Module, tokenizer: sw.CaptionTokenizer, n: int, generator: torch.Generator,
                    temperature: float = 1.0, top_k: int | None = None, use_cache: bool = True) -> list[str]:
    """``n`` captions sampled from <bos> (in one batch), each cut at its first <eos>."""
    device = next(model.parameters()).device
    prompt = torch.full((n, 1), tokenizer.bos_id, dtype=torch.long, device=device)      # (B, 1), B = n
    # One more token than the longest caption needs, so that a model that never stops shows it.
    out = model.generate(prompt, sw.MAX_CAPTION_TOKENS, temperature=temperature, top_k=top_k,
                         generator=generator, use_cache=use_cache, eos_id=tokenizer.eos_id)
    texts = []
    for row in out[:, 1:].tolist():
        # A caption that never ended, or that holds a second <bos>, is not a caption.
        if tokenizer.eos_id not in row or tokenizer.bos_id in row[:row.index(tokenizer.eos_id)]:
            texts.append(" ".join(tokenizer.vocab[i] for i in row))
        else:
            texts.append(tokenizer.decode(row))
    return texts


def valid_fraction(captions: list[str]) -> float:
    """The fraction of ``captions`` that parse in the ShapeWorld caption grammar."""
    if not captions:
        raise ValueError("captions: expected at least one caption")
    return sum(sw.is_valid_caption(text) for text in captions) / len(captions)


# The chapter's default settings (notebook 02, section 6); the benchmark measures exactly these.
CHAPTER_CORPUS_SIZE = 20_000
CHAPTER_BLOCK_SIZE = 144       # room for a 128-token generation after a prompt
CHAPTER_STEPS = 200
CHAPTER_BATCH_SIZE = 16


def train_chapter_model(seed: int = 0, steps: int = CHAPTER_STEPS, progress: bool = True):
    """The chapter's GPT trained with the notebook's default settings -> (model, history, tokenizer)."""
    from handbook.device import make_generator
    from handbook.transformer import GPT, GPTConfig

    tokenizer = sw.CaptionTokenizer()
    generator = make_generator(seed)
    stream = token_stream(caption_corpus(CHAPTER_CORPUS_SIZE, generator), tokenizer)
    torch.manual_seed(seed)
    model = GPT(GPTConfig.caption_model(tokenizer.vocab_size, block_size=CHAPTER_BLOCK_SIZE))
    history = train_language_model(model, stream, steps, make_generator(seed), batch_size=CHAPTER_BATCH_SIZE,
                                   progress=progress)
    return model, history, tokenizer
