"""Training a U-Net to remove Gaussian noise from images: the utilities of chapter 4.

The task, in the convention diffusion models use (chapter 5 keeps it):

* images live in [-1, 1]: a ShapeWorld render ``img`` in [0, 1] becomes ``x0 = 2 img - 1``
  (``to_signed``; ``to_unit`` goes back for display);
* noise of standard deviation ``sigma`` is added *in that range*::

      x_sigma = x0 + sigma * eps,   eps ~ N(0, I)                       (make_noisy)

  so sigma = 0.5 is a quarter of the peak-to-peak range 2, and no clipping follows;
* the U-Net predicts the noise, ``eps_hat = f(x_sigma, t)``, and the clean image is what is left
  after removing it, ``x0_hat = x_sigma - sigma * eps_hat`` (``predict_clean``). This is DDPM's
  parameterisation (Ho et al. 2020, eq. 11-12). It also suits a fresh U-Net: its zero-initialised
  output layer gives eps_hat = 0, so training starts from the identity x0_hat = x_sigma, never
  from a grey image;
* the network is told the noise level as ``t = SIGMA_TO_T * sigma`` (t = 1000 sigma): a continuous
  value in the range of DDPM's integer timesteps, for which the sinusoidal embedding of
  ``handbook.embeddings.timestep_embedding`` was designed;
* the loss is ``mean ||eps_hat - eps||^2`` with one sigma per image drawn uniformly from
  ``SIGMA_RANGE`` = [0.05, 1.0]: one network for every noise level. In clean-image units this is
  ``||x0_hat - x0||^2 / sigma^2``, so small noise levels weigh more. That helped here: trained on
  the clean-image loss instead, the chapter's model gained less at sigma = 0.1 and 0.25 (4.7 and
  9.7 dB against 8.4 and 11.1), as much at 0.5, and a little more at 1.0.

Quality is measured by PSNR = 10 log10(peak^2 / MSE) with the peak-to-peak range of [-1, 1]
images, ``DATA_RANGE = 2`` (``handbook.metrics.psnr(pred, target, max_value=2)``). The same
images in [0, 1] with ``max_value=1`` give exactly the same dB. At sigma = 0.5 the noisy image
itself has MSE 0.25, PSNR 10 log10(4 / 0.25) = 12.04 dB; ``psnr_gain`` reports how much the
denoiser adds to that, averaged over images.

``chapter_denoiser()`` builds and trains the chapter's model with ``DEFAULTS``; ``bar_gain()``
measures it on held-out (test-split) images, the figure of the benchmark table.
"""

from __future__ import annotations

import numbers
import time
from typing import Any

import torch
from torch import nn

from handbook import checks
from handbook.device import make_generator
from handbook.metrics import psnr
from handbook.training import History, train
from handbook.unet import UNet, UNetConfig

SIGMA_RANGE = (0.05, 1.0)   # noise levels seen in training, relative to images in [-1, 1]
SIGMA_TO_T = 1000.0         # t = 1000 sigma: the scale of DDPM timesteps (0..999)
DATA_RANGE = 2.0            # peak-to-peak of images in [-1, 1]: the PSNR peak
BAR_SIGMA = 0.5             # the noise level of the chapter's benchmark bar
EVAL_BATCH = 256            # images per forward pass when denoising many at once
GENERATOR = "a torch.Generator (handbook.device.make_generator)"   # what the error messages ask for
MODEL = "a U-Net (nn.Module)"

# The chapter's default settings (notebook and benchmark). The model is UNetConfig.small() at half
# its width: three levels at 32/16/8 px with 16/32/32 channels, attention at 8x8 and in the
# bottleneck (~0.21M parameters). A training step (batch 32, 32x32) costs about 0.19 s of one
# CPU core; 150 steps reach about +12 dB at sigma = 0.5 on test images. ``seconds`` is only a
# safety budget: on a quiet 2-core machine the steps finish well before it, so the result does
# not depend on the machine's speed.
DEFAULTS: dict[str, Any] = {
    "base_channels": 16,
    "resolution": 32,
    "n_train": 2000,       # training renders (train split, seed = the run's seed)
    "n_test": 256,         # held-out renders (test split, seed 0) for psnr_gain
    "steps": 100,          # about 11 dB at sigma = 0.5; well inside the time budget on 2 cores
    "batch_size": 32,
    "lr": 2e-3,
    "seconds": 45.0,       # max_seconds of the training; the bar allows 60
    "sigma_range": SIGMA_RANGE,
}


# ---- checks ----------------------------------------------------------------------------------

def _check_sigma_range(sigma_range: Any) -> tuple[float, float]:
    """``sigma_range`` as floats (low, high) with 0 <= low <= high, both finite."""
    try:
        low, high = sigma_range
    except (TypeError, ValueError):
        raise ValueError(f"sigma_range: expected (low, high), got {sigma_range!r}") from None
    low = checks.real("sigma_range low", low, 0.0)
    return low, checks.real("sigma_range high", high, low)


def _sigma_per_image(sigma: Any, x: torch.Tensor) -> torch.Tensor:
    """sigma (a number, a tensor () or (B,)) -> (B, 1, 1, 1) on x's device and dtype, checked."""
    B = x.shape[0]
    if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
        sigma = torch.tensor(float(sigma))
    if not isinstance(sigma, torch.Tensor) or sigma.shape not in ((), (B,)) or sigma.dtype == torch.bool \
            or sigma.is_complex():
        raise ValueError(f"sigma: expected a number or a tensor shaped () or (B={B},), got {checks.describe(sigma)}")
    if sigma.numel() and not bool(torch.isfinite(sigma).all() and (sigma >= 0).all()):
        raise ValueError("sigma: expected finite noise levels >= 0")
    return sigma.to(x.device, x.dtype).expand(B).reshape(B, 1, 1, 1)  # (B, 1, 1, 1)


# ---- the convention --------------------------------------------------------------------------

def to_signed(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> x0 = 2 img - 1 in [-1, 1], the range the denoiser works in."""
    checks.tensor("images", images, "B C Hh Ww")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images: expected values in [0, 1], got [{images.min().item():.3g}, "
                         f"{images.max().item():.3g}] (already in [-1, 1]?)")
    return 2.0 * images - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] for display, clamped (a noisy image overshoots)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def noise_levels(n: int, generator: torch.Generator, sigma_range: tuple[float, float] = SIGMA_RANGE) -> torch.Tensor:
    """n noise levels drawn uniformly from ``sigma_range`` -> (n,) float32."""
    checks.positive_int("n", n, 0)
    checks.instance("generator", generator, torch.Generator, GENERATOR)
    low, high = _check_sigma_range(sigma_range)
    return low + (high - low) * torch.rand(n, generator=generator)


def sigma_to_t(sigma: torch.Tensor | float) -> torch.Tensor:
    """The U-Net's noise-level input: t = SIGMA_TO_T * sigma (a tensor, shaped like sigma)."""
    return SIGMA_TO_T * torch.as_tensor(sigma, dtype=torch.float32)


def make_noisy(x0: torch.Tensor, sigma: torch.Tensor | float,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x_sigma = x0 + sigma * eps with eps ~ N(0, I) drawn from ``generator`` -> (x_sigma, eps).

    x0: (B, C, Hh, Ww) in [-1, 1]; sigma: a number, or a tensor () or (B,) (one level per image).
    The noise is drawn on the CPU and moved, so a seed gives the same noise on every device.
    """
    checks.tensor("x0", x0, "B C Hh Ww")
    checks.instance("generator", generator, torch.Generator, GENERATOR)
    s = _sigma_per_image(sigma, x0)                                        # (B, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)  # (B, C, Hh, Ww)
    return x0 + s * eps, eps


# ---- the model's view ------------------------------------------------------------------------

def predict_noise(model: nn.Module, x_noisy: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """eps_hat = model(x_sigma, t = 1000 sigma): the network's estimate of the noise (with grad)."""
    checks.tensor("x_noisy", x_noisy, "B C Hh Ww")
    s = _sigma_per_image(sigma, x_noisy)[:, 0, 0, 0]                       # (B,)
    return model(x_noisy, sigma_to_t(s).to(x_noisy.device))


def predict_clean(model: nn.Module, x_noisy: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """x0_hat = x_sigma - sigma * eps_hat: the clean image the network sees (with grad, unclamped)."""
    eps_hat = predict_noise(model, x_noisy, sigma)                         # checks x_noisy and sigma
    return x_noisy - _sigma_per_image(sigma, x_noisy) * eps_hat


def denoising_loss(model: nn.Module, x0: torch.Tensor, generator: torch.Generator,
                   sigma_range: tuple[float, float] = SIGMA_RANGE) -> torch.Tensor:
    """One Monte-Carlo estimate of E_{sigma, eps} ||eps_hat - eps||^2 (mean over pixels) for a batch x0.

    Draws, in this order and from ``generator`` only: one sigma per image (uniform in
    ``sigma_range``), then the noise eps.
    """
    checks.tensor("x0", x0, "B C Hh Ww")
    sigma = noise_levels(x0.shape[0], generator, sigma_range).to(x0.device)   # (B,)
    x_noisy, eps = make_noisy(x0, sigma, generator)                         # (B, C, Hh, Ww) each
    return (predict_noise(model, x_noisy, sigma) - eps).pow(2).mean()


def train_denoiser(model: nn.Module, images: torch.Tensor, steps: int, generator: torch.Generator,
                   batch_size: int = 32, lr: float = 2e-3, max_seconds: float | None = None,
                   sigma_range: tuple[float, float] = SIGMA_RANGE, progress: bool = True,
                   desc: str = "denoiser") -> History:
    """Train ``model`` to predict the noise on ``images`` (N, C, Hh, Ww) in [-1, 1] with
    ``handbook.training.train`` (AdamW, progress bar, optional wall-clock budget).

    Every step draws from ``generator``: batch_size image indices (with replacement), then the
    noise levels and the noise (``denoising_loss``). The same generator state, model and data give
    the same run. Returns the trainer's ``History`` (losses, steps, seconds, stopped_by).
    """
    checks.instance("model", model, nn.Module, MODEL)
    if checks.tensor("images", images, "B C Hh Ww")[0] == 0:
        raise ValueError("images: expected at least one training image")
    if images.numel() and (images.min() < -1 or images.max() > 1):
        raise ValueError("images: expected values in [-1, 1] (use to_signed on images in [0, 1])")
    checks.instance("generator", generator, torch.Generator, GENERATOR)
    checks.positive_int("batch_size", batch_size)
    _check_sigma_range(sigma_range)
    device = next(model.parameters()).device
    N = images.shape[0]

    def batch(step: int) -> torch.Tensor:
        index = torch.randint(N, (batch_size,), generator=generator)
        return images[index].to(device)                                    # (batch_size, C, Hh, Ww)

    def loss_fn(m: nn.Module, x0: torch.Tensor) -> torch.Tensor:
        return denoising_loss(m, x0, generator, sigma_range)

    return train(model, loss_fn, batch, steps, lr=lr, max_seconds=max_seconds, progress=progress, desc=desc)


# ---- using and measuring it ------------------------------------------------------------------

@torch.no_grad()
def denoise(model: nn.Module, noisy: torch.Tensor, sigma: torch.Tensor | float, clamp: bool = True,
            batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """The denoised images x0_hat (B, C, Hh, Ww), in eval mode and without gradients.

    clamp: clip to [-1, 1], where every clean image lies (a free improvement of the estimate).
    The model's train/eval mode is restored afterwards.
    """
    checks.instance("model", model, nn.Module, MODEL)
    checks.tensor("noisy", noisy, "B C Hh Ww")
    sigma = _sigma_per_image(sigma, noisy)[:, 0, 0, 0]                     # (B,)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = torch.cat([predict_clean(model, x.to(device), s.to(device)).to(noisy.device)
                         for x, s in zip(noisy.split(batch_size), sigma.split(batch_size))]) \
            if noisy.shape[0] else noisy.clone()
    finally:
        model.train(was_training)
    return out.clamp(-1.0, 1.0) if clamp else out


def psnr_gain(model: nn.Module, clean: torch.Tensor, sigma: float, generator: torch.Generator) -> dict[str, float]:
    """Noise ``clean`` (B, C, Hh, Ww) in [-1, 1] at ``sigma`` (noise from ``generator``), denoise it,
    and compare: {"noisy_psnr", "denoised_psnr", "gain"} in dB, means over the images, with the
    peak-to-peak range DATA_RANGE = 2. gain = denoised_psnr - noisy_psnr."""
    if checks.tensor("clean", clean, "B C Hh Ww")[0] == 0:
        raise ValueError("clean: expected at least one image")
    checks.instance("sigma", sigma, numbers.Real, "a positive number")  # a plain number: one level for all
    checks.real("sigma", sigma, 0.0, open_low=True)
    noisy, _ = make_noisy(clean, float(sigma), generator)
    denoised = denoise(model, noisy, float(sigma))
    noisy_psnr = psnr(noisy, clean, max_value=DATA_RANGE).mean().item()
    denoised_psnr = psnr(denoised, clean, max_value=DATA_RANGE).mean().item()
    return {"noisy_psnr": noisy_psnr, "denoised_psnr": denoised_psnr, "gain": denoised_psnr - noisy_psnr}


# ---- the chapter's model ---------------------------------------------------------------------

def chapter_config(**overrides) -> UNetConfig:
    """The chapter's U-Net: ``UNetConfig.small(base_channels=DEFAULTS["base_channels"])``."""
    return UNetConfig.small(**{"base_channels": DEFAULTS["base_channels"], **overrides})


def chapter_data(seed: int = 0, n_train: int | None = None, n_test: int | None = None,
                 resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) images in [-1, 1]: ``n_train`` renders of the train split (seed ``seed``) and
    the held-out ``n_test`` renders of the test split (always seed 0), DEFAULTS when None."""
    from handbook.shapeworld import load_images  # the data package is needed only here

    n_train = DEFAULTS["n_train"] if n_train is None else n_train
    n_test = DEFAULTS["n_test"] if n_test is None else n_test
    resolution = DEFAULTS["resolution"] if resolution is None else resolution
    train_x = to_signed(load_images("train", n_train, resolution, seed).images)
    test_x = to_signed(load_images("test", n_test, resolution, 0).images)
    return train_x, test_x


def chapter_denoiser(seconds: float | None = None, seed: int = 0, steps: int | None = None,
                     progress: bool = True) -> tuple[UNet, History]:
    """Build the chapter's U-Net (weights from ``seed``) and train it with DEFAULTS: ``steps``
    steps of batch 32 on the train split, stopping early only if ``seconds`` of wall clock pass.

    Returns (model, history); the model is in eval mode. The data and batches come from ``seed``
    too, so a run is reproducible whenever it is not cut short by ``seconds``.
    """
    seconds = DEFAULTS["seconds"] if seconds is None else seconds
    steps = DEFAULTS["steps"] if steps is None else steps
    train_x, _ = chapter_data(seed)
    model = UNet(chapter_config(), generator=make_generator(seed))
    history = train_denoiser(model, train_x, steps, make_generator(seed + 1), batch_size=DEFAULTS["batch_size"],
                             lr=DEFAULTS["lr"], max_seconds=seconds, sigma_range=DEFAULTS["sigma_range"],
                             progress=progress)
    return model.eval(), history


def bar_gain(seconds: float | None = None, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """The benchmark figure: train ``chapter_denoiser(seconds, seed)``, then ``psnr_gain`` at
    sigma = BAR_SIGMA on the held-out test images of ``chapter_data`` (noise from seed 0).

    Returns psnr_gain's dict plus "sigma", "train_seconds", "steps", "stopped_by" and "total_seconds".
    """
    start = time.perf_counter()
    model, history = chapter_denoiser(seconds=seconds, seed=seed, progress=progress)
    _, test_x = chapter_data(seed)
    result: dict[str, Any] = psnr_gain(model, test_x, BAR_SIGMA, make_generator(0))
    result.update(sigma=BAR_SIGMA, train_seconds=history.seconds, steps=history.steps,
                  stopped_by=history.stopped_by, total_seconds=time.perf_counter() - start)
    return result


__all__ = [
    "SIGMA_RANGE", "SIGMA_TO_T", "DATA_RANGE", "BAR_SIGMA", "DEFAULTS",
    "to_signed", "to_unit", "noise_levels", "sigma_to_t", "make_noisy",
    "predict_noise", "predict_clean", "denoising_loss", "train_denoiser",
    "denoise", "psnr_gain", "chapter_config", "chapter_data", "chapter_denoiser", "bar_gain",
]
