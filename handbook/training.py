"""A small trainer: one explicit loop, a progress bar, and an exponential moving average.

Every model of the course is trained by the same dozen lines::

    for step in range(steps):
        batch = next_batch(step)
        loss = loss_fn(model, batch)      # the only model-specific part
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)                 # optional

``train`` is exactly that loop plus the bookkeeping a course needs: a ``tqdm`` progress bar that
shows the loss, an optional wall-clock budget (``max_seconds``) so a chapter stays within its
minute on a slow laptop, optional gradient clipping, and a callback hook. It is deliberately not a
framework: read it once and you know everything it does.

Randomness: ``train`` draws no random numbers itself. The batches (and any noise inside
``loss_fn``) come from a ``torch.Generator`` that the caller owns, so the same generator seed gives
the same run (on the same device and thread count); the library never seeds globally.

The exponential moving average (EMA) of the weights is the cheapest trick in generative
modelling: after every optimizer step, ``theta_ema <- decay * theta_ema + (1 - decay) * theta``.
The average smooths out the noise of the last few hundred SGD steps, and diffusion models sample
visibly better from it (DDPM, Ho et al. 2020, Appendix B; DiT uses decay 0.9999).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

# How often (in steps) the progress bar refreshes its loss display, by default. Refreshing every
# step costs more than a tiny model's step on some terminals and notebooks.
DEFAULT_LOG_EVERY = 10


class EMA:
    """An exponential moving average of a model's weights, kept in a frozen copy (``.module``).

    ``update(model)`` applies ``avg <- decay * avg + (1 - decay) * current`` to every floating
    point parameter. Buffers (e.g. BatchNorm running statistics, step counters) are not averaged
    but copied, because they are already running statistics or are not weights at all.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
        if not (isinstance(decay, (int, float)) and 0.0 <= decay < 1.0):
            raise ValueError(f"decay: expected a float in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.num_updates = 0
        # A deep copy, frozen: the average is never trained, only updated by ``update``.
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def _check_same_structure(self, model: nn.Module) -> None:
        mine = [name for name, _ in self.module.named_parameters()]
        theirs = [name for name, _ in model.named_parameters()]
        if mine != theirs:
            raise ValueError("model: its parameters differ from the model this EMA was made from")

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the current weights of ``model``."""
        self._check_same_structure(model)
        d = self.decay
        for avg, cur in zip(self.module.parameters(), model.parameters()):
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(cur.detach(), alpha=1.0 - d)  # avg = d * avg + (1 - d) * cur
            else:
                avg.copy_(cur)
        for avg_buf, buf in zip(self.module.buffers(), model.buffers()):
            avg_buf.copy_(buf)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s weights with the averaged ones (e.g. before sampling)."""
        self._check_same_structure(model)
        model.load_state_dict(self.module.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights: a plain tensor dict, ready for ``save_checkpoint``."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state_dict)


@dataclass
class History:
    """What a training run did: one loss per step, how many steps ran, and how long it took."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    ema: EMA | None = None
    # Why the loop ended: "steps" (all ran), "max_seconds" (budget spent) or "callback".
    stopped_by: str = "steps"


def warmup_cosine(step: int, warmup: int, total: int, final: float = 0.0) -> float:
    """Learning-rate factor at ``step`` (for ``LambdaLR``): a linear warm-up to 1 over ``warmup``
    steps, then a half cosine down to ``final`` at step ``total`` (and ``final`` after it)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with PyTorch on ``n`` threads, then restore the previous count: the zoo's recipes
    fix their thread count (recorded in the manifest), since it changes both speed and the exact
    floating-point sums."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def replace_config(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of the dataclass ``config`` with the fields named in ``overrides`` replaced.

    The training recipes of the zoo take their options as keyword overrides of a config dataclass
    (``train_judge(n_train=512)``); a misspelt option fails here, with the names that exist,
    instead of being silently ignored.
    """
    known = [f.name for f in dataclasses.fields(config)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"overrides: unknown training options {unknown}; expected some of {known}")
    return dataclasses.replace(config, **overrides)


def _batch_source(batches: Iterable[Any] | Callable[[int], Any]) -> Callable[[int], Any]:
    """Turn ``batches`` into a function step -> batch.

    An iterable (a list, a DataLoader) is restarted when it runs out, so one ``steps`` budget
    spans several epochs.
    """
    if callable(batches) and not isinstance(batches, Iterable):
        return batches
    if not isinstance(batches, Iterable):
        raise ValueError(f"batches: expected an iterable or a callable step -> batch, got {type(batches).__name__}")
    iterator: Iterator[Any] = iter(batches)

    def next_batch(step: int) -> Any:
        nonlocal iterator
        try:
            return next(iterator)
        except StopIteration:
            iterator = iter(batches)  # a new epoch
            try:
                return next(iterator)
            except StopIteration:
                raise ValueError("batches: the iterable yielded no batch") from None

    return next_batch


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    batches: Iterable[Any] | Callable[[int], Any],
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    ema_decay: float | None = None,
    max_seconds: float | None = None,
    grad_clip: float | None = None,
    scheduler: Any | None = None,
    progress: bool = True,
    log_every: int = DEFAULT_LOG_EVERY,
    callback: Callable[[int, float, nn.Module], bool | None] | None = None,
    desc: str = "train",
) -> History:
    """Train ``model`` for ``steps`` optimizer steps (or until ``max_seconds`` have passed).

    Args:
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``; the only model-specific code.
        batches: an iterable of batches (restarted when exhausted) or a callable ``step -> batch``.
        optimizer: defaults to ``AdamW(model.parameters(), lr=lr)``; ``lr`` is ignored if given.
        ema_decay: keep an ``EMA`` of the weights with this decay (``History.ema``).
        max_seconds: wall-clock budget; the loop stops cleanly after the step that exceeds it.
        grad_clip: clip the global gradient norm to this value before each step.
        scheduler: a ``torch.optim.lr_scheduler`` object, stepped after every optimizer step.
        callback: ``callback(step, loss, model)`` after every step (``step`` counts from 1);
            returning ``True`` stops training.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ValueError("loss_fn: expected a callable loss_fn(model, batch) -> scalar tensor")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps: expected a non-negative int, got {steps!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds: expected a positive number or None, got {max_seconds!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip: expected a positive number or None, got {grad_clip!r}")
    if not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"log_every: expected a positive int, got {log_every!r}")
    next_batch = _batch_source(batches)
    if optimizer is None:
        if not lr > 0:
            raise ValueError(f"lr: expected a positive learning rate, got {lr!r}")
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    ema = EMA(model, ema_decay) if ema_decay is not None else None
    history = History(ema=ema)

    model.train()
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress)
    for step in range(steps):
        batch = next_batch(step)
        loss = loss_fn(model, batch)
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
            raise ValueError("loss_fn: expected it to return a scalar tensor")
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            # Stop at once: every later step would only spread the NaN through the weights.
            raise FloatingPointError(f"the loss became {loss_value} at step {step + 1}; try a lower lr or grad_clip")

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)

        history.losses.append(loss_value)
        history.steps = step + 1
        history.seconds = time.perf_counter() - start
        bar.update(1)
        if history.steps % log_every == 0 or history.steps == steps:
            bar.set_postfix(loss=f"{loss_value:.4f}")
        if callback is not None and callback(history.steps, loss_value, model):
            history.stopped_by = "callback"
            break
        if max_seconds is not None and history.seconds >= max_seconds:
            history.stopped_by = "max_seconds"
            break
    bar.close()
    history.seconds = time.perf_counter() - start
    return history



def train_with_warmup_cosine(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor],
                             batches: Iterable[Any] | Callable[[int], Any], steps: int, *, lr: float, warmup: int,
                             final_lr_fraction: float, ema_decay: float | None = None,
                             grad_clip: float | None = None, progress: bool = True,
                             desc: str = "train") -> tuple[nn.Module, History]:
    """The recipe of the course's image diffusion models (chapters 5-7): AdamW without weight decay,
    a linear warm-up over ``warmup`` steps then a half cosine down to ``lr * final_lr_fraction``,
    optional EMA of the weights and gradient clipping. Returns (the EMA model, or the model when
    there is no EMA, in eval mode; the history)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup, steps, final_lr_fraction))
    history = train(model, loss_fn, batches, steps, optimizer=optimizer, scheduler=scheduler,
                    ema_decay=ema_decay, grad_clip=grad_clip, progress=progress, desc=desc)
    trained = history.ema.module if history.ema is not None else model
    return trained.eval(), history


def mean_of_last(losses: list[float], n: int = 100) -> float | None:
    """The mean of the last ``n`` losses (fewer if the run was shorter), or None for no losses:
    one step's loss is too noisy to compare runs by."""
    tail = losses[-n:]
    return sum(tail) / len(tail) if tail else None
