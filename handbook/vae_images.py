"""Chapter 7's autoencoder of ShapeWorld: 64x64 renders <-> 16x16x4 latents (f = 4), zoo entry ``vae_shapeworld``.

    python -m handbook.zoo train vae_shapeworld

The recipe of the latent diffusion paper's KL autoencoders, at our scale: an L1 reconstruction
error summed over the pixels of each image plus ``beta`` times the KL of the posterior from N(0, I)
(``vae.vae_loss``), with beta = 1e-6 as in the paper's KL-f4 and KL-f8 models: enough to keep the
latents near the origin and their variances from collapsing, far too little to cost detail. The
paper adds a perceptual loss and a patch discriminator for photographs; ShapeWorld's flat colours
and smooth shading are reproduced by L1 alone (the PSNR in the manifest says how well).

After training, the **scale factor** is measured on training renders: 1 / std of their posterior
means, stored in the weights (``Autoencoder.scale_factor``), so that latent diffusion works on
unit-variance latents (the reason for Stable Diffusion's 0.18215, which we do not copy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from handbook import checks, metrics, shapeworld, zoo
from handbook.training import mean_of_last, replace_config, torch_threads, train_with_warmup_cosine
from handbook.vae import Autoencoder, AutoencoderConfig, vae_loss

NAME = "vae_shapeworld"
RESOLUTION = 64
DEFAULT_STEPS = 3000     # about 0.5 s a step of 16 on one busy core: 25-30 minutes, the bar is 30


def model_config(**overrides: Any) -> AutoencoderConfig:
    """The shipped autoencoder: levels of 16, 32 and 64 channels (f = 4), one ResBlock each, 4 latent
    channels (0.7 M parameters). 32 channels at full resolution cost twice the time a step for the
    same budget (measured: 1.05 against 0.5 s a step of 16 on one thread)."""
    return AutoencoderConfig(**{"channels": (16, 32, 64), "blocks_per_level": 1, "latent_channels": 4,
                                "groups": 8, **overrides})


def build(config: dict[str, Any] | None = None) -> Autoencoder:
    """The zoo's builder: an untrained autoencoder from the config dict stored in the manifest."""
    return Autoencoder(AutoencoderConfig.from_dict(config) if config else model_config(),
                       generator=torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class TrainingConfig:
    """How the shipped autoencoder is trained. Every number that shapes the run is named here."""

    n_train: int = 20_000
    data_seed: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 200
    final_lr_fraction: float = 0.05
    beta: float = 1e-6       # the KL weight of the paper's KL-f4 / KL-f8 autoencoders
    grad_clip: float = 1.0
    scale_images: int = 2000  # training renders the scale factor is measured on
    eval_images: int = 500    # held-out test renders for the PSNR
    threads: int = 1         # bit-identical reruns, and faster than two on a busy 2-core machine


def train_model(seed: int = 0, steps: int = DEFAULT_STEPS, progress: bool = True, evaluate_after: bool = True,
                config: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Train the autoencoder from scratch; return the zoo's training report (the model carries its
    measured scale factor). ``config`` overrides fields of the network, ``overrides`` of ``TrainingConfig``."""
    training = replace_config(TrainingConfig(), overrides)
    network = model_config(**(config or {}))
    with torch_threads(training.threads):
        return _train(network, training, seed, steps, progress, evaluate_after)


def _train(network: AutoencoderConfig, config: TrainingConfig, seed: int, steps: int, progress: bool,
           evaluate_after: bool) -> dict[str, Any]:
    import time

    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    images = shapeworld.load_images("train", n=config.n_train, resolution=RESOLUTION, seed=config.data_seed).images
    data_seconds = time.perf_counter() - start
    model = Autoencoder(network, generator=generator)

    def next_batch(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(images), (config.batch_size,), generator=generator)
        return images[idx] * 2 - 1                                            # (B, 3, 64, 64) in [-1, 1]

    def loss_fn(net, x0):
        return vae_loss(net, x0, config.beta, generator=generator)[0]

    model, history = train_with_warmup_cosine(
        model, loss_fn, next_batch, steps, lr=config.lr, warmup=config.warmup,
        final_lr_fraction=config.final_lr_fraction, grad_clip=config.grad_clip, progress=progress, desc=NAME)
    results: dict[str, Any] = {"final_train_loss_avg100": mean_of_last(history.losses, 100)}
    scale = model.set_scale_factor(images[: config.scale_images] * 2 - 1)
    results["scale_factor"] = scale
    if evaluate_after and steps > 0:
        results.update(evaluate(model, n=config.eval_images))
    return zoo.training_report(model, history, results, config, data_seconds, config.threads,
                               resolution=RESOLUTION)


@torch.no_grad()
def reconstruct(model: Autoencoder, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """images (B, 3, H, W) in [0, 1] -> their reconstructions through the posterior mean, in [0, 1]."""
    checks.tensor("images", images, "B 3 H W")
    return _decode(model, model.encode_means(images * 2 - 1, batch_size), batch_size)


def _decode(model: Autoencoder, means: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Latents (B, L, h, w) -> images in [0, 1], a batch at a time."""
    out = [model.decode(means[i:i + batch_size]) for i in range(0, len(means), batch_size)]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


@torch.no_grad()
def evaluate(model: Autoencoder, n: int = 500, batch_size: int = 100) -> dict[str, float]:
    """On ``n`` held-out test renders: the median PSNR of the reconstructions (dB, pixels in [0, 1]) and
    the std of the scaled latents (about 1 if the scale factor holds beyond its training renders)."""
    test = shapeworld.load_images("test", n=n, resolution=RESOLUTION, seed=0).images
    means = model.encode_means(test * 2 - 1, batch_size)                      # (n, 4, 16, 16), encoded once
    psnr = metrics.psnr(_decode(model, means, batch_size), test)             # (n,)
    return {"psnr_db": psnr.median().item(), "psnr_db_mean": psnr.mean().item(),
            "scaled_latent_std": (means * model.scale_factor).std().item()}


# Reading question 7.2 at full scale: the shipped recipe at each downsampling factor, levels added or
# removed at the coarse end, 4 latent channels always, for an equal budget of SIZE_STUDY_STEPS (a third
# of the shipped run: at f = 2 the middle block's attention spans 32x32 = 1,024 positions, and a step
# costs about 2.5 times one at f = 4). The LDM paper's KL autoencoders on ImageNet (its Table 8, PSNR
# in dB) lose detail as f rises; ShapeWorld's flat colours ask less of a latent.
SIZE_STUDY_CHANNELS = {2: (16, 32), 4: (16, 32, 64), 8: (16, 32, 64, 128)}
SIZE_STUDY_STEPS = 1000
PAPER_PSNR_DB = {2: 32.5, 4: 27.5, 8: 24.2}


def latent_size_study(factors: tuple[int, ...] = (2, 4, 8), cache: str | Path | None = None,
                      steps: int = SIZE_STUDY_STEPS, progress: bool = True) -> dict[int, dict[str, Any]]:
    """For each downsampling factor f, an autoencoder trained as the shipped one (levels
    ``SIZE_STUDY_CHANNELS[f]``) and evaluated as it is: {f: {"psnr_db", "psnr_db_mean", "latent_shape",
    "minutes", "steps", "parameters"}}. Runs found in ``cache`` (a JSON file, written after each run)
    with the same levels and steps are read, not retrained (f = 2: about 20 minutes of one core)."""
    for f in factors:
        checks.choice("factors", f, tuple(SIZE_STUDY_CHANNELS))
    path = Path(cache) if cache is not None else None
    done = json.loads(path.read_text()) if path is not None and path.exists() else {}
    results = {}
    for f in factors:
        channels = list(SIZE_STUDY_CHANNELS[f])
        run = done.get(str(f))
        if run is None or run["channels"] != channels or run["steps"] != steps:
            report = train_model(steps=steps, progress=progress, config={"channels": tuple(channels)})
            model = report["model"]
            side = RESOLUTION // model.config.downsampling
            run = {**{k: report["metrics"][k] for k in ("psnr_db", "psnr_db_mean", "scale_factor")},
                   "channels": channels, "steps": steps, "minutes": report["seconds"] / 60,
                   "latent_shape": [model.config.latent_channels, side, side],
                   "parameters": sum(p.numel() for p in model.parameters())}
            if path is not None:   # read again: another process may have added a factor meanwhile
                done = json.loads(path.read_text()) if path.exists() else {}
                done[str(f)] = run
                path.write_text(json.dumps(done, indent=2) + "\n")
        results[f] = run
    return results
