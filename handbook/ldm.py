"""Latent diffusion (Rombach et al. 2022), handbook section 7: chapter 5's diffusion in the latent space
of chapter 7's autoencoder, conditioned on captions as in chapter 6. Zoo entry ``ldm_shapeworld``.

    training:  x (64x64 render) -> autoencoder.encode -> mode -> z * scale (4x16x16, unit variance)
               -> the simple loss of chapter 5 on z, captions through the caption encoder
    sampling:  z_T ~ N(0, I) (4x16x16) -> DDIM with guidance -> z_0 / scale -> decode -> 64x64 image

Encoding is needed only to make training data; sampling starts from noise and decodes once.

**The denoiser** is chapter 6's DiT with patches of 2 on the 16x16x4 latents: 64 tokens, the same
sequence length as chapter 6's pixel model, so one step costs about the same while each image has
four times the pixels. This is the DiT paper's own set-up (DiT-XL/2 works on the 32x32x4 latents of
Stable Diffusion's autoencoder with p = 2), and it reuses the caption encoder and adaLN-Zero as they
are; the U-Net with cross-attention of chapter 4 would do as well (Stable Diffusion's choice).

**The schedule** is the linear one of DDPM and DiT (beta from 1e-4 to 0.02, T = 1000). The cosine
schedule was chosen in chapters 5 and 6 because small objects of 24-32 pixels vanished too early
under the linear one; a latent position stands for a 4x4 patch, and scaled latents have unit
variance, the regime the linear schedule was made for. Latents have no range, so x0 is not clipped.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from handbook import checks, diffusion, dit, shapeworld, zoo
from handbook.dit import DiT, DiTConfig
from handbook.dit_images import EVAL_IMAGES, TrainingConfig, evaluate_sampler, train_on_captions
from handbook.metrics import median_seconds
from handbook.training import mean_of_last, replace_config, torch_threads
from handbook.vae import Autoencoder

NAME = "ldm_shapeworld"
AUTOENCODER = "vae_shapeworld"   # the zoo entry whose latents the denoiser works in
RESOLUTION = 64
T = 1000
DEFAULT_STEPS = 10_000
DEFAULT_GUIDANCE = dit.DEFAULT_GUIDANCE


def denoiser_config(**overrides: Any) -> DiTConfig:
    """Chapter 6's shipped DiT, on 16x16x4 latents with patches of 2 (64 tokens)."""
    return DiTConfig.shapeworld(**{"input_size": 16, "in_channels": 4, "out_channels": 4, "patch_size": 2,
                                   **overrides})


def pixel_twin_config(**overrides: Any) -> DiTConfig:
    """The same denoiser on 64x64x3 pixels (patches of 2 as well, so 1,024 tokens): what latent
    diffusion saves. Its parameter count differs only in the patch embedding and the output layer
    (3 instead of 4 channels), a few hundred weights of 1.7 M."""
    return denoiser_config(**{"input_size": RESOLUTION, "in_channels": 3, "out_channels": 3, **overrides})


def build(config: dict[str, Any] | None = None) -> DiT:
    """The zoo's builder: an untrained latent denoiser from the config dict stored in the manifest."""
    return DiT(DiTConfig.from_dict(config) if config else denoiser_config(), generator=torch.Generator().manual_seed(0))


def noise_schedule() -> diffusion.NoiseSchedule:
    return diffusion.NoiseSchedule.linear(T)


@torch.no_grad()
def encode_latents(autoencoder: Autoencoder, images: torch.Tensor, batch_size: int = 200) -> torch.Tensor:
    """images (N, 3, H, W) in [0, 1] -> scaled latents (N, L, H/f, W/f): the posterior means times the
    autoencoder's scale factor, what the denoiser learns to generate."""
    autoencoder.eval()
    return autoencoder.encode_means(images * 2 - 1, batch_size) * autoencoder.scale_factor


@torch.no_grad()
def generate(prompts: list[str], model: DiT | None = None, autoencoder: Autoencoder | None = None,
             steps: int = 50, guidance_scale: float | None = DEFAULT_GUIDANCE,
             generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Images (B, 3, 64, 64) in [0, 1] for caption prompts (checked against the grammar): DDIM with
    classifier-free guidance in latent space, then one decode. ``model`` and ``autoencoder`` default
    to the zoo's ``ldm_shapeworld`` and ``vae_shapeworld``."""
    model = zoo.load(NAME) if model is None else model
    autoencoder = zoo.load(AUTOENCODER) if autoencoder is None else autoencoder
    autoencoder.eval()
    return dit.generate(prompts, model, schedule=noise_schedule(), steps=steps, guidance_scale=guidance_scale,
                        generator=generator, progress=progress, clip_x0=False,
                        decode=lambda z: autoencoder.decode(z / autoencoder.scale_factor))


@torch.no_grad()
def step_cost(batch_size: int = 8, repeats: int = 5, threads: int = 1) -> dict[str, dict[str, float]]:
    """One denoising step (a forward pass of the denoiser, captions included) on a batch of 64x64 images,
    in latent space (16x16x4, ``denoiser_config``) and in pixel space (``pixel_twin_config``), measured
    in one run on ``threads`` threads: {"latent": ..., "pixel": ...} each with "seconds" (median of
    ``repeats``), "parameters" and "tokens"; and "decode" (one decode of the batch, once per sample)."""
    checks.positive_int("batch_size", batch_size)
    checks.positive_int("repeats", repeats)
    generator = torch.Generator().manual_seed(0)
    ids = shapeworld.encode_prompts(["a large red cube seen from above"] * batch_size)
    t = torch.full((batch_size,), 500)
    results = {}
    with torch_threads(threads):
        for name, config in (("latent", denoiser_config()), ("pixel", pixel_twin_config())):
            model = DiT(config, generator=generator).eval()
            x = torch.randn(batch_size, config.in_channels, config.input_size, config.input_size, generator=generator)
            seconds = median_seconds(lambda: model(x, t, ids), repeats)
            results[name] = {"seconds": seconds, "parameters": sum(p.numel() for p in model.parameters()),
                             "tokens": (config.input_size // config.patch_size) ** 2}
        autoencoder = zoo.load(AUTOENCODER).eval()
        z = torch.randn(batch_size, autoencoder.config.latent_channels, 16, 16, generator=generator)
        results["decode"] = {"seconds": median_seconds(lambda: autoencoder.decode(z), repeats)}
    return results


def train_model(seed: int = 0, steps: int = DEFAULT_STEPS, progress: bool = True, evaluate_after: bool = True,
                config: dict[str, Any] | None = None, autoencoder: Autoencoder | None = None,
                **overrides: Any) -> dict[str, Any]:
    """Train the latent denoiser from scratch on the latents of ``autoencoder`` (default: the zoo's);
    return the zoo's training report. Chapter 6's recipe, on latents: ``config`` overrides fields of
    ``denoiser_config``, ``overrides`` fields of chapter 6's ``TrainingConfig``. The report's
    ``model`` is the EMA of the weights; ``evaluate_after`` adds ``evaluate``'s scores to its metrics."""
    training = replace_config(TrainingConfig(), overrides)
    network = denoiser_config(**(config or {}))
    autoencoder = zoo.load(AUTOENCODER) if autoencoder is None else autoencoder
    with torch_threads(training.threads):
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        data = shapeworld.load_images("train", n=training.n_train, resolution=RESOLUTION, seed=training.data_seed)
        latents = encode_latents(autoencoder, data.images)                    # (N, 4, 16, 16)
        data_seconds = time.perf_counter() - start
        model = DiT(network, generator=generator)
        ema_model, history = train_on_captions(model, noise_schedule(), latents, data.captions, training,
                                               generator, steps, progress, NAME)
        metrics = {"final_train_loss_avg100": mean_of_last(history.losses, 100),
                   "latent_std": latents.std().item(), "autoencoder_scale_factor": autoencoder.scale_factor.item()}
        if evaluate_after and steps > 0:
            scores = evaluate(ema_model, autoencoder, n=training.eval_images, guidance_scale=training.guidance_scale,
                              seed=training.eval_seed, progress=progress)
            metrics.update({f"ddim50_{k}": v for k, v in scores.items()})
    return zoo.training_report(ema_model, history, metrics, training, data_seconds, training.threads,
                               resolution=RESOLUTION, schedule="linear", T=T, autoencoder=AUTOENCODER)


def evaluate(model: DiT | None = None, autoencoder: Autoencoder | None = None, n: int = EVAL_IMAGES,
             steps: int = 50, guidance_scale: float | None = DEFAULT_GUIDANCE, seed: int = 0,
             fid_reference: int = 2000, progress: bool = False, judge=None) -> dict[str, float]:
    """Chapter 6's yardstick for the 64x64 model (``dit_images.evaluate_sampler``): samples for prompts
    balanced over the 60 classes and 3 views, taken to the judge's 32x32 by an area average; recognition,
    each attribute, the view (not spheres) and the FID against real 64x64 test renders taken the same way."""
    return evaluate_sampler(
        lambda prompts: generate(prompts, model, autoencoder, steps=steps, guidance_scale=guidance_scale,
                                 generator=torch.Generator().manual_seed(seed), progress=progress),
        n=n, fid_reference=fid_reference, judge=judge, resolution=RESOLUTION)
