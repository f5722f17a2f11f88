"""Chapter 6's text-to-image model: a caption-conditioned DiT on ShapeWorld at 32x32.

The model of the zoo entry ``dit_shapeworld`` (and the coarse-stage 2D prior of chapter 8's
text-to-3D): ``handbook.dit``'s Diffusion Transformer, trained with chapter 5's simple loss to
predict the noise in ShapeWorld renders, conditioned on their captions through the caption encoder
(``handbook.caption_encoder``), views included ("a large red cube seen from above"). ::

    python -m handbook.zoo train dit_shapeworld

Captions. Every render's caption names its shape, colour, size and view. A share of them
(``TrainingConfig.p_no_view``) is given without the view phrase, so that "a large red cube" is a
prompt the model knows too (any view); ``p_uncond`` of them become the empty caption, the null
condition of classifier-free guidance. Pixels live in [-1, 1] for the model and in [0, 1] for the
judge, at 32x32 both (no resizing, unlike chapter 5's 24x24 model).

Schedule. The cosine schedule with T = 1000: at 32x32 pixels the linear schedule of the DiT paper
(which works on 32x32x4 latents of 256x256 images) destroys the small objects too early, as
chapter 5 measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from handbook import checks, diffusion, dit, metrics, shapeworld, zoo
from handbook.dit import DiT, DiTConfig, generate
from handbook.shapeworld import COLOURS, SHAPES, SIZES, VIEWS, caption, encode_prompts, parse_caption
from handbook.shapeworld._threads import one_thread
from handbook.training import mean_of_last, replace_config, torch_threads, train_with_warmup_cosine

NAME = "dit_shapeworld"
RESOLUTION = 32
T = 1000
DEFAULT_STEPS = 10_000  # 67 minutes on one core (0.40 s a step, the other core busy): within the 90-minute budget
DEFAULT_GUIDANCE = dit.DEFAULT_GUIDANCE  # the sampler's default, one number for both
EVAL_IMAGES = 180  # 60 shape x colour x size classes x 3 views, once each


def model_config(**overrides) -> DiTConfig:
    """The shipped network (``DiTConfig.shapeworld``): 32x32 images in patches of 4 (64 tokens)."""
    return DiTConfig.shapeworld(**overrides)


def build(config: dict[str, Any] | None = None) -> DiT:
    """The zoo's builder: an untrained DiT from the config dict stored in the manifest."""
    return DiT(DiTConfig.from_dict(config) if config else model_config(), generator=torch.Generator().manual_seed(0))


def noise_schedule() -> diffusion.NoiseSchedule:
    return diffusion.NoiseSchedule.cosine(T)


def drop_views(captions: list[str], p: float, generator: torch.Generator) -> list[str]:
    """The captions with the view phrase removed from each with probability ``p`` (one draw per caption)."""
    checks.real("p", p, 0, 1)
    drop = (torch.rand(len(captions), generator=generator) < p).tolist()
    out = []
    for text, without in zip(captions, drop):
        said = parse_caption(text)
        out.append(caption(said["shape"], said["colour"], said["size"], None if without else said["view"]))
    return out


@dataclass(frozen=True)
class TrainingConfig:
    """How the shipped model is trained. Every number that shapes the run is named here."""

    n_train: int = 30_000  # train-split renders at 32x32 (the judge's training set, already cached)
    data_seed: int = 0
    batch_size: int = 64
    lr: float = 1e-3        # DiT used 1e-4 at batch 256 for 400K steps; a 10K-step run of a 4-block model
                            # takes chapter 5's rate (warm-up, clipping and adaLN-Zero keep it stable)
    warmup: int = 500
    final_lr_fraction: float = 0.1
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    p_uncond: float = 0.1   # share of captions replaced by the empty caption (guidance)
    p_no_view: float = 0.25  # share of captions given without their view phrase
    eval_images: int = EVAL_IMAGES
    eval_seed: int = 0
    guidance_scale: float = DEFAULT_GUIDANCE
    threads: int = 1        # as chapter 5: one thread is reproducible and, on a busy 2-core machine, faster


def train_model(seed: int = 0, steps: int = DEFAULT_STEPS, progress: bool = True, evaluate_after: bool = True,
                config: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Train the caption-conditioned DiT from scratch; return the zoo's training report.

    ``seed`` fixes the initial weights, the batches, the dropped views and captions, t and the noise
    (one generator). ``config`` overrides fields of the network (``model_config``); ``overrides``
    fields of ``TrainingConfig`` (e.g. ``n_train=512``). The report's ``model`` is the EMA of the weights.
    """
    training = replace_config(TrainingConfig(), overrides)
    network = model_config(**(config or {}))
    with torch_threads(training.threads):
        return _train(network, training, seed, steps, progress, evaluate_after)


def _train(network: DiTConfig, config: TrainingConfig, seed: int, steps: int, progress: bool,
           evaluate_after: bool) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    data = shapeworld.load_images("train", n=config.n_train, resolution=RESOLUTION, seed=config.data_seed)
    images = data.images * 2.0 - 1.0                                          # (N, 3, 32, 32) in [-1, 1]
    data_seconds = time.perf_counter() - start

    model = DiT(network, generator=generator)
    ema_model, history = train_on_captions(model, noise_schedule(), images, data.captions, config, generator,
                                           steps, progress, NAME)
    results: dict[str, Any] = {"final_train_loss_avg100": mean_of_last(history.losses, 100)}
    if evaluate_after and steps > 0:
        result = evaluate(ema_model, n=config.eval_images, guidance_scale=config.guidance_scale,
                          seed=config.eval_seed, progress=progress)
        results.update({f"ddim50_{k}": v for k, v in result.items()})
    return zoo.training_report(ema_model, history, results, config, data_seconds, config.threads,
                               resolution=RESOLUTION, schedule="cosine", T=T)


def train_on_captions(model: DiT, schedule: diffusion.NoiseSchedule, x0: torch.Tensor, captions: list[str],
                      config: Any, generator: torch.Generator, steps: int, progress: bool, desc: str):
    """The caption-conditioned diffusion training of chapters 6 and 7: batches of ``x0`` (N, C, H, W)
    (pixels in [-1, 1], or chapter 7's scaled latents) with their ``captions``, some without their
    view (``config.p_no_view``) and some replaced by the empty caption (``config.p_uncond``), chapter
    5's simple loss, warm-up + cosine, EMA. Every draw comes from ``generator``, in a fixed order.
    Returns (the EMA model, the history)."""
    null = model.null_condition()                                              # (L,) the empty caption

    def next_batch(step: int):
        idx = torch.randint(0, len(x0), (config.batch_size,), generator=generator)
        texts = drop_views([captions[i] for i in idx.tolist()], config.p_no_view, generator)
        return x0[idx], encode_prompts(texts, model.config.caption_length)     # (B, C, H, W), (B, L)

    def loss_fn(net, batch):
        x, ids = batch
        return diffusion.training_loss(net, schedule, x, cond=ids, generator=generator,
                                       p_uncond=config.p_uncond, null_cond=null)

    return train_with_warmup_cosine(
        model, loss_fn, next_batch, steps, lr=config.lr, warmup=config.warmup,
        final_lr_fraction=config.final_lr_fraction, ema_decay=config.ema_decay, grad_clip=config.grad_clip,
        progress=progress, desc=desc)


def balanced_prompts(n: int, views: bool = True) -> list[str]:
    """n prompts cycling through every shape x colour x size (60), each with each view in turn
    (``views``): every class and every view equally often, to within one."""
    checks.positive_int("n", n)
    classes = [(s, c, z) for s in SHAPES for c in COLOURS for z in SIZES]        # 60
    return [caption(*classes[i % len(classes)], VIEWS[(i // len(classes)) % len(VIEWS)] if views else None)
            for i in range(n)]


@torch.no_grad()
def sample(model: DiT, prompts: list[str], steps: int = 50, guidance_scale: float | None = DEFAULT_GUIDANCE,
           seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Images (B, 3, 32, 32) in [0, 1] for ``prompts``: DDIM with guidance on the cosine schedule."""
    with one_thread():  # see TrainingConfig.threads
        return generate(prompts, model, schedule=noise_schedule(), steps=steps, guidance_scale=guidance_scale,
                        generator=torch.Generator().manual_seed(seed), progress=progress)


def evaluate(model: DiT, n: int = EVAL_IMAGES, steps: int = 50, guidance_scale: float | None = DEFAULT_GUIDANCE,
             seed: int = 0, fid_reference: int = 2000, progress: bool = False, judge=None) -> dict[str, float]:
    """Sample n images for ``balanced_prompts(n)`` and ask the judge: the share it reads as the
    prompt's shape, colour and size together (``recognition``), each attribute alone, the view
    (``view``: over the prompts whose object shows its view, i.e. not spheres, see
    ``judge.shows_its_view``), and the FID against ``fid_reference`` real test renders; ``seconds`` is
    the sampling time."""
    return evaluate_sampler(
        lambda prompts: sample(model, prompts, steps=steps, guidance_scale=guidance_scale, seed=seed,
                               progress=progress),
        n=n, fid_reference=fid_reference, judge=judge)


def evaluate_sampler(sampler, n: int = EVAL_IMAGES, fid_reference: int = 2000, judge=None,
                     resolution: int = RESOLUTION) -> dict[str, float]:
    """``evaluate`` for any text-to-image sampler: ``sampler(prompts) -> (n, 3, resolution, resolution)``
    in [0, 1] (chapter 7's 64x64 latent model too). Images of another size than the judge's 32x32 are
    taken to it by an area average, and so are the real renders of the FID reference."""
    judge = zoo.load("judge") if judge is None else judge
    prompts = balanced_prompts(n)
    want = _labels_of(prompts)
    start = time.perf_counter()
    images = sampler(prompts)
    checks.tensor("sampler(prompts)", images, "N C H W", N=n, C=3, H=resolution, W=resolution)
    seconds = time.perf_counter() - start
    images = for_the_judge(images)
    reference = for_the_judge(shapeworld.load_images("test", n=fid_reference, resolution=resolution, seed=0).images)
    return {**_judged(images, want, judge), "fid": metrics.shapeworld_fid(images, reference, judge=judge),
            "n": n, "seconds": seconds}


def for_the_judge(images: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, R, R) in [0, 1] -> (N, 3, 32, 32), the judge's size: an area average of R/32 x R/32
    pixels when R is a multiple of 32 (a 64x64 render becomes nearly the 32x32 render of the scene)."""
    if images.shape[-1] == RESOLUTION:
        return images
    return F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode="area").clamp(0.0, 1.0)


def _judged(images: torch.Tensor, want: dict[str, torch.Tensor], judge) -> dict[str, float]:
    """The shares of ``images`` the judge reads as ``want`` says: shape, colour and size together
    (``recognition``), each alone, and the view over the objects that show it (not spheres)."""
    from handbook.judge import shows_its_view

    got = metrics.judge_predictions(images, judge=judge)
    ok = {k: got[k] == want[k] for k in want}                                 # (n,) bool each
    return {"recognition": (ok["shape"] & ok["colour"] & ok["size"]).float().mean().item(),
            **{k: v.float().mean().item() for k, v in ok.items() if k != "view"},
            "view": ok["view"][shows_its_view(want["shape"])].float().mean().item()}


def _labels_of(prompts: list[str]) -> dict[str, torch.Tensor]:
    """What each prompt asks for, as judge label indices: shape, colour, size and view, each (n,)."""
    asked = [parse_caption(p) for p in prompts]
    return {k: torch.tensor([names.index(a[k]) for a in asked])
            for k, names in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("view", VIEWS))}


def real_reference(n: int = EVAL_IMAGES, fid_reference: int = 2000, judge=None,
                   resolution: int = RESOLUTION) -> dict[str, float]:
    """The yardstick for ``evaluate``: n real validation renders (not the FID reference's test renders)
    judged and scored the same way, rendered at ``resolution`` and taken to the judge's size as
    ``evaluate_sampler`` takes samples. A FID from n images is biased upwards; this is its floor at that n."""
    judge = zoo.load("judge") if judge is None else judge
    data = shapeworld.load_images("val", n=n, resolution=resolution, seed=0)
    want = {"shape": data.shape, "colour": data.colour, "size": data.size, "view": data.view}
    images = for_the_judge(data.images)
    reference = for_the_judge(shapeworld.load_images("test", n=fid_reference, resolution=resolution, seed=0).images)
    return {**_judged(images, want, judge),
            "fid": metrics.shapeworld_fid(images, reference, judge=judge), "n": n}
