"""Chapter 5's class-conditional image diffusion model: ShapeWorld at 24x24, 30 classes, guidance.

The model of the zoo entry ``ddpm_shapeworld``: a small U-Net (``handbook.unet``) trained with the
simple loss of ``handbook.diffusion`` to predict the noise in ShapeWorld renders, conditioned on
the class ``shape * 6 + colour`` (30 classes; index 30 is the "null" class of classifier-free
guidance, used for 10% of the training samples). It trains in about an hour on one CPU core
(8000 steps of 64 images, one thread)::

    python -m handbook.zoo train ddpm_shapeworld

Resolution. The model works on 24x24 images (renders at 32x32, area-averaged down), which costs
about half of 32x32 per step; the judge reads 32x32, so samples are upsampled (bicubic) before
judging. Real renders through that same round trip are recognised about 97% of the time, so the
pipeline itself costs a few points of recognition (``real_roundtrip_recognition``).

Pixels live in [-1, 1] for the model (``to_model``) and in [0, 1] at 32x32 for the judge
(``to_judge``). ``sample`` and ``evaluate`` give what the chapter's benchmark table reports: the
fraction of samples recognised as the requested class (DDPM with 1000 steps and DDIM with 50, both
with guidance) and the ShapeWorld FID.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from handbook import diffusion, metrics, shapeworld, zoo
from handbook.shapeworld import NUM_CLASSES, class_of, shape_and_colour
from handbook.shapeworld._threads import one_thread
from handbook.training import mean_of_last, replace_config, torch_threads, train_with_warmup_cosine
from handbook.unet import UNet, UNetConfig

NAME = "ddpm_shapeworld"
RESOLUTION = 24  # the model's image size; the judge's is 32
JUDGE_RESOLUTION = 32
# The condition is ShapeWorld's class (shape * 6 + colour, NUM_CLASSES = 30); one more index is the
# "no condition" class of classifier-free guidance.
NULL_CLASS = NUM_CLASSES
T = 1000
DEFAULT_STEPS = 8000
DEFAULT_GUIDANCE = 1.5  # 120 DDIM-50 samples: FID 53.0 at s = 1.5, 55.0 at 2, 60.0 at 3 (recognition 97.5-99.2%)
# Images per evaluation. DDPM with 1000 steps and guidance runs 1000 forward passes of a batch of
# 2 * EVAL_IMAGES; 120 images (4 per class) keep one evaluation at a few minutes on two CPU cores.
EVAL_IMAGES = 120


def model_config(**overrides) -> UNetConfig:
    """The shipped network: levels 24/12/6 px with 32/64/64 channels, attention only in the
    bottleneck, class embedding with a null class (about 0.8 M parameters, 3.2 MB). The first
    version had half the width (0.2 M): after 3000 steps its samples got the colour right but the
    shape only about 60% of the time."""
    base = dict(num_classes=NUM_CLASSES, base_channels=32, channel_mults=(1, 2, 2), attention_levels=(),
                bottleneck_attention=True, groups=8)
    return UNetConfig(**{**base, **overrides})


def build(config: dict[str, Any] | None = None) -> UNet:
    """The zoo's builder: an untrained U-Net from the config dict stored in the manifest."""
    cfg = UNetConfig.from_dict(config) if config else model_config()
    return UNet(cfg, generator=torch.Generator().manual_seed(0))


def noise_schedule() -> diffusion.NoiseSchedule:
    """The cosine schedule with T = 1000 (Nichol & Dhariwal 2021): better than linear at low resolution."""
    return diffusion.NoiseSchedule.cosine(T)


def class_index(shape: Any, colour: Any) -> torch.Tensor:
    """ShapeWorld's class of a (shape, colour) pair (indices), as ``ShapeWorldImages.class_index``."""
    return class_of(torch.as_tensor(shape, dtype=torch.long), torch.as_tensor(colour, dtype=torch.long))


def to_model(images: torch.Tensor, resolution: int = RESOLUTION) -> torch.Tensor:
    """Renders (B, 3, Hh, Ww) in [0, 1] -> (B, 3, resolution, resolution) in [-1, 1] (area average)."""
    if images.shape[-1] != resolution:
        images = F.interpolate(images, size=(resolution, resolution), mode="area")
    return images * 2.0 - 1.0


def to_judge(x: torch.Tensor) -> torch.Tensor:
    """Model images in [-1, 1] -> (B, 3, 32, 32) in [0, 1], bicubic, what the judge reads."""
    images = (x.float().clamp(-1, 1) + 1.0) / 2.0
    if images.shape[-1] != JUDGE_RESOLUTION:
        images = F.interpolate(images, size=(JUDGE_RESOLUTION, JUDGE_RESOLUTION), mode="bicubic",
                               align_corners=False)
    return images.clamp(0.0, 1.0)


@dataclass(frozen=True)
class TrainingConfig:
    """How the shipped model is trained. Every number that shapes the run is named here."""

    n_train: int = 30_000  # train-split renders at 32x32 (the judge's training set, already cached)
    data_seed: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100  # linear warm-up steps, then a half cosine down to lr * final_lr_fraction
    final_lr_fraction: float = 0.1
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    p_uncond: float = 0.1  # classifier-free guidance: share of samples trained with the null class
    prediction: str = "eps"
    eval_images: int = EVAL_IMAGES  # DDIM-50 evaluation written into the manifest
    eval_seed: int = 0
    guidance_scale: float = DEFAULT_GUIDANCE
    # Threads for the run (restored afterwards). One is both reproducible and, on a busy two-core
    # machine, several times faster than two: OpenMP threads that wait for each other stall.
    threads: int = 1


def train_model(seed: int = 0, steps: int = DEFAULT_STEPS, progress: bool = True, evaluate_after: bool = True,
                **overrides: Any) -> dict[str, Any]:
    """Train the class-conditional model from scratch; return the zoo's training report.

    ``seed`` fixes the initial weights, the batches, t, the noise and the dropped labels (one
    generator). ``overrides`` replace fields of ``TrainingConfig`` (e.g. ``n_train=512``).
    The report's ``model`` is the EMA of the weights, which samples better than the raw weights.
    """
    config = replace_config(TrainingConfig(), overrides)
    with torch_threads(config.threads):
        return _train(config, seed, steps, progress, evaluate_after)


def _train(config: TrainingConfig, seed: int, steps: int, progress: bool, evaluate_after: bool) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)

    start = time.perf_counter()
    data = shapeworld.load_images("train", n=config.n_train, resolution=JUDGE_RESOLUTION, seed=config.data_seed)
    images = to_model(data.images)  # (N, 3, 24, 24) in [-1, 1]
    labels = data.class_index  # (N,)
    data_seconds = time.perf_counter() - start

    schedule = noise_schedule()
    model = UNet(model_config(), generator=generator)

    def next_batch(step: int):
        idx = torch.randint(0, len(images), (config.batch_size,), generator=generator)
        return images[idx], labels[idx]

    def loss_fn(net, batch):
        x0, y = batch
        return diffusion.training_loss(net, schedule, x0, cond=y, generator=generator,
                                       prediction=config.prediction, p_uncond=config.p_uncond,
                                       null_cond=NULL_CLASS)

    ema_model, history = train_with_warmup_cosine(
        model, loss_fn, next_batch, steps, lr=config.lr, warmup=config.warmup,
        final_lr_fraction=config.final_lr_fraction, ema_decay=config.ema_decay, grad_clip=config.grad_clip,
        progress=progress, desc=NAME)
    metrics: dict[str, Any] = {"final_train_loss_avg100": mean_of_last(history.losses, 100)}
    if evaluate_after and steps > 0:
        result = evaluate(ema_model, n=config.eval_images, sampler="ddim", steps=50,
                          guidance_scale=config.guidance_scale, seed=config.eval_seed, progress=progress)
        metrics.update({f"ddim50_{k}": v for k, v in result.items()})
        real = real_roundtrip_recognition(n=config.eval_images)   # the yardstick at the same n
        metrics.update({f"real_roundtrip_{k}": v for k, v in real.items() if k != "n"})
    return zoo.training_report(ema_model, history, metrics, config, data_seconds, config.threads,
                               resolution=RESOLUTION, schedule="cosine", T=T)


def balanced_classes(n: int) -> torch.Tensor:
    """Classes 0, 1, ..., 29, 0, 1, ... (n,): every class equally often (to within one)."""
    return torch.arange(n) % NUM_CLASSES


@torch.no_grad()
def sample(model, classes: torch.Tensor, sampler: str = "ddim", steps: int = 50,
           guidance_scale: float | None = DEFAULT_GUIDANCE, seed: int = 0, progress: bool = False,
           return_trajectory: bool = False):
    """Samples of the requested classes (n,), in [-1, 1] at the model's resolution (n, 3, 24, 24).

    ``sampler="ddpm"`` runs all T ancestral steps (``steps`` is ignored); ``"ddim"`` runs ``steps``
    deterministic DDIM steps. ``guidance_scale=None`` samples the conditional model without guidance.
    """
    schedule = noise_schedule()
    classes = torch.as_tensor(classes, dtype=torch.long)
    shape = (len(classes), 3, RESOLUTION, RESOLUTION)
    generator = torch.Generator().manual_seed(seed)
    kwargs = dict(cond=classes, generator=generator, guidance_scale=guidance_scale, null_cond=NULL_CLASS,
                  progress=progress, return_trajectory=return_trajectory)
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler: expected 'ddpm' or 'ddim', got {sampler!r}")
    with one_thread():  # see TrainingConfig.threads
        if sampler == "ddpm":
            return diffusion.ddpm_sample(model, schedule, shape, **kwargs)
        return diffusion.ddim_sample(model, schedule, shape, steps=steps, clip_x0=True, **kwargs)


def _reference_images(n: int) -> torch.Tensor:
    return shapeworld.load_images("test", n=n, resolution=JUDGE_RESOLUTION, seed=0).images


def evaluate(model=None, n: int = EVAL_IMAGES, sampler: str = "ddim", steps: int = 50,
             guidance_scale: float | None = DEFAULT_GUIDANCE, seed: int = 0, fid_reference: int = 2000,
             progress: bool = False, judge=None) -> dict[str, float]:
    """Sample n images of balanced classes and measure them with the ShapeWorld judge.

    Returns ``recognition`` (judge says shape and colour as requested), ``shape``, ``colour``,
    ``fid`` (against ``fid_reference`` real test renders), ``n`` and ``seconds`` (sampling time).
    ``model=None`` loads the shipped checkpoint.
    """
    model = zoo.load(NAME) if model is None else model
    judge = zoo.load("judge") if judge is None else judge
    classes = balanced_classes(n)
    start = time.perf_counter()
    x = sample(model, classes, sampler=sampler, steps=steps, guidance_scale=guidance_scale, seed=seed,
               progress=progress)
    seconds = time.perf_counter() - start
    images = to_judge(x)
    acc = metrics.judge_accuracy(images, *shape_and_colour(classes), judge=judge)
    fid = metrics.shapeworld_fid(images, _reference_images(fid_reference), judge=judge)
    return {"recognition": acc["both"], "shape": acc["shape"], "colour": acc["colour"], "fid": fid,
            "n": n, "seconds": seconds}


def real_roundtrip_recognition(n: int = 1000, fid_reference: int = 2000, judge=None) -> dict[str, float]:
    """A reference for this pipeline: real renders (validation split) taken down to 24x24 and back
    up, as the judge sees them; ``fid`` with n images is the "as good as real" FID to compare with."""
    judge = zoo.load("judge") if judge is None else judge
    data = shapeworld.load_images("val", n=n, resolution=JUDGE_RESOLUTION, seed=0)
    images = to_judge(to_model(data.images))
    acc = metrics.judge_accuracy(images, data.shape, data.colour, judge=judge)
    fid = metrics.shapeworld_fid(images, _reference_images(fid_reference), judge=judge)
    return {"recognition": acc["both"], "fid": fid, "n": n}


def benchmark(n: int = EVAL_IMAGES, guidance_scale: float = DEFAULT_GUIDANCE, seed: int = 0,
              progress: bool = False) -> dict[str, float]:
    """The chapter's image bars with the shipped model: recognition and FID for DDPM with all
    1000 steps and for DDIM with 50 steps (same n, classes and guidance), and their ratio."""
    model, judge = zoo.load(NAME), zoo.load("judge")
    ddpm = evaluate(model, n=n, sampler="ddpm", guidance_scale=guidance_scale, seed=seed, progress=progress,
                    judge=judge)
    ddim = evaluate(model, n=n, sampler="ddim", steps=50, guidance_scale=guidance_scale, seed=seed,
                    progress=progress, judge=judge)
    out = {f"ddpm1000_{k}": v for k, v in ddpm.items()}
    out.update({f"ddim50_{k}": v for k, v in ddim.items()})
    out["ddim50_over_ddpm1000"] = ddim["recognition"] / max(ddpm["recognition"], 1e-12)
    return out
