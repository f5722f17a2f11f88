"""The denoiser utilities of chapter 4: the noise convention, shapes, determinism, bad input, and
a short real training that removes noise."""

import math

import pytest
import torch

from handbook import denoising as dn
from handbook.device import make_generator
from handbook.metrics import psnr
from handbook.shapeworld import load_images
from handbook.unet import UNet, UNetConfig

B, C, H = 4, 3, 8


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _x0(seed=0, n=B, h=H):
    return torch.rand(n, C, h, h, generator=make_generator(seed)) * 2 - 1


def _tiny(seed=0, **overrides):
    config = UNetConfig.tiny(**{"attention_levels": (), "bottleneck_attention": False, **overrides})
    return UNet(config, generator=make_generator(seed))


def test_signed_and_unit_ranges_round_trip():
    img = torch.rand(2, 3, 4, 4, generator=make_generator(0))
    x = dn.to_signed(img)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.allclose(dn.to_unit(x), img, atol=1e-6)
    assert dn.to_unit(torch.full((1, 3, 2, 2), 3.0)).max() == 1.0  # clamped for display
    with pytest.raises(ValueError, match="images"):
        dn.to_signed(img * 2 - 1)  # already in [-1, 1]
    with pytest.raises(ValueError, match="images"):
        dn.to_signed(torch.rand(3, 4, 4))


def test_noise_levels_in_range_and_deterministic():
    s = dn.noise_levels(1000, make_generator(0))
    assert s.shape == (1000,) and s.min() >= 0.05 and s.max() <= 1.0
    assert abs(s.mean().item() - 0.525) < 0.03
    assert torch.equal(s, dn.noise_levels(1000, make_generator(0)))
    assert torch.all(dn.noise_levels(10, make_generator(0), (0.3, 0.3)) == 0.3)
    for bad in [dict(n=-1), dict(n=2.0), dict(sigma_range=(0.5, 0.1)), dict(sigma_range=(-1, 1)),
                dict(sigma_range="ab")]:
        args = {"n": 3, "generator": make_generator(0), **bad}
        with pytest.raises(ValueError):
            dn.noise_levels(**args)
    with pytest.raises(ValueError, match="generator"):
        dn.noise_levels(3, 0)


def test_sigma_to_t_is_the_documented_scale():
    assert torch.allclose(dn.sigma_to_t(torch.tensor([0.05, 0.5, 1.0])), torch.tensor([50.0, 500.0, 1000.0]))
    assert dn.SIGMA_TO_T == 1000.0


def test_make_noisy_is_x0_plus_sigma_eps():
    x0 = _x0()
    x, eps = dn.make_noisy(x0, 0.5, make_generator(1))
    assert x.shape == eps.shape == x0.shape
    assert torch.allclose(x, x0 + 0.5 * eps)
    assert torch.equal(eps, torch.randn(x0.shape, generator=make_generator(1)))  # plain N(0, I) from the generator
    sigma = torch.tensor([0.0, 0.1, 0.5, 1.0])
    x, eps = dn.make_noisy(x0, sigma, make_generator(1))
    assert torch.equal(x[0], x0[0])  # sigma = 0 leaves the image alone
    assert torch.allclose(x, x0 + sigma[:, None, None, None] * eps)
    x_again, _ = dn.make_noisy(x0, sigma, make_generator(1))
    assert torch.equal(x, x_again)


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), torch.ones(3), torch.ones(B, 1), True, "0.5"])
def test_make_noisy_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        dn.make_noisy(_x0(), sigma, make_generator(0))


def test_make_noisy_rejects_bad_images_and_generator():
    with pytest.raises(ValueError, match="x0"):
        dn.make_noisy(torch.zeros(3, 8, 8), 0.5, make_generator(0))
    with pytest.raises(ValueError, match="x0"):
        dn.make_noisy(torch.zeros(1, 3, 8, 8, dtype=torch.long), 0.5, make_generator(0))
    with pytest.raises(ValueError, match="generator"):
        dn.make_noisy(_x0(), 0.5, None)


def test_fresh_unet_is_the_identity_denoiser():
    """The output layer starts at zero: eps_hat = 0, so x0_hat = x_sigma and the loss is E[eps^2]."""
    model = _tiny()
    x, _ = dn.make_noisy(_x0(), 0.5, make_generator(0))
    assert torch.equal(dn.predict_clean(model, x, 0.5), x)
    loss = dn.denoising_loss(model, _x0(n=32, h=16), make_generator(0))
    assert loss.dim() == 0 and abs(loss.item() - 1.0) < 0.05


def test_predict_noise_passes_t_equal_1000_sigma():
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, t):
            seen["t"] = t
            return torch.zeros_like(x)

    dn.predict_noise(Spy(), _x0(), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert torch.allclose(seen["t"], torch.tensor([100.0, 200.0, 300.0, 400.0]))
    dn.predict_noise(Spy(), _x0(), 0.25)
    assert seen["t"].shape == (B,) and torch.allclose(seen["t"], torch.full((B,), 250.0))


def test_denoising_loss_deterministic_and_gives_gradients():
    model = _tiny()
    with torch.no_grad():  # move the zero-initialised layers, so every parameter matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=make_generator(3)))
    x0 = _x0(n=8, h=16)
    loss = dn.denoising_loss(model, x0, make_generator(5))
    assert torch.equal(loss, dn.denoising_loss(model, x0, make_generator(5)))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_train_denoiser_is_reproducible_and_checks_its_input():
    x0 = _x0(n=16, h=8)
    runs = []
    for _ in range(2):
        model = _tiny()
        history = dn.train_denoiser(model, x0, 3, make_generator(2), batch_size=4, progress=False)
        runs.append((history.losses, [p.detach().clone() for p in model.parameters()]))
        assert history.steps == 3 and len(history.losses) == 3
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    with pytest.raises(ValueError, match="images"):
        dn.train_denoiser(_tiny(), x0 * 3, 1, make_generator(0), progress=False)
    with pytest.raises(ValueError, match="images"):
        dn.train_denoiser(_tiny(), x0[:0], 1, make_generator(0), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        dn.train_denoiser(_tiny(), x0, 1, make_generator(0), batch_size=0, progress=False)
    with pytest.raises(ValueError, match="model"):
        dn.train_denoiser(lambda x, t: x, x0, 1, make_generator(0), progress=False)
    with pytest.raises(ValueError, match="steps"):
        dn.train_denoiser(_tiny(), x0, -1, make_generator(0), progress=False)


def test_denoise_clamps_batches_and_restores_the_mode():
    model = _tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=make_generator(4)))
    model.train()
    noisy, _ = dn.make_noisy(_x0(n=5), 0.7, make_generator(0))
    out = dn.denoise(model, noisy, 0.7)
    assert out.shape == noisy.shape and out.min() >= -1 and out.max() <= 1 and not out.requires_grad
    assert model.training, "denoise must give the model back in the mode it had"
    assert torch.allclose(dn.denoise(model, noisy, 0.7, batch_size=2), out, atol=1e-6)
    unclamped = dn.denoise(model, noisy, 0.7, clamp=False)
    assert torch.equal(unclamped.clamp(-1, 1), out)
    per_image = dn.denoise(model, noisy, torch.full((5,), 0.7))
    assert torch.allclose(per_image, out, atol=1e-6)


def test_psnr_gain_uses_the_range_of_signed_images():
    x0 = _x0(n=64, h=16)
    result = dn.psnr_gain(_tiny(), x0, 0.5, make_generator(0))
    assert set(result) == {"noisy_psnr", "denoised_psnr", "gain"}
    # MSE of the noise is 0.25 and the peak-to-peak range 2: 10 log10(4 / 0.25) = 12.04 dB.
    assert abs(result["noisy_psnr"] - 10 * math.log10(4 / 0.25)) < 0.2
    # The fresh network is the identity; only the clamp to [-1, 1] helps it.
    assert 0.0 <= result["gain"] < 2.0
    assert math.isclose(result["gain"], result["denoised_psnr"] - result["noisy_psnr"])
    # The same dB as PSNR of [0, 1] images with peak 1.
    noisy, _ = dn.make_noisy(x0, 0.5, make_generator(0))
    assert torch.allclose(psnr(noisy, x0, max_value=2.0), psnr((noisy + 1) / 2, (x0 + 1) / 2), atol=1e-4)
    for bad in (0.0, -1.0, float("inf"), torch.tensor(0.5)):
        with pytest.raises(ValueError, match="sigma"):
            dn.psnr_gain(_tiny(), x0, bad, make_generator(0))
    with pytest.raises(ValueError, match="clean"):
        dn.psnr_gain(_tiny(), x0[:0], 0.5, make_generator(0))


def test_chapter_config_and_defaults():
    config = dn.chapter_config()
    assert config == UNetConfig.small(base_channels=16)
    assert config.channels == (16, 32, 32)
    assert 150_000 < UNet(config).num_parameters() < 300_000
    assert dn.DEFAULTS["seconds"] < 60, "the bar allows at most 60 s of training"
    assert dn.DEFAULTS["sigma_range"][0] <= dn.BAR_SIGMA <= dn.DEFAULTS["sigma_range"][1]


@pytest.mark.slow
def test_short_training_removes_noise_from_held_out_renders():
    """About 6 s on one busy core: a tiny U-Net, 16x16 renders, 100 steps."""
    train_x = dn.to_signed(load_images("train", 1000, 16, 0).images)
    test_x = dn.to_signed(load_images("test", 128, 16, 0).images)
    model = _tiny()
    before = dn.psnr_gain(model, test_x, 0.5, make_generator(0))
    history = dn.train_denoiser(model, train_x, 100, make_generator(1), batch_size=32, progress=False)
    after = dn.psnr_gain(model, test_x, 0.5, make_generator(0))
    assert history.steps == 100
    assert sum(history.losses[-10:]) < 0.5 * sum(history.losses[:10]), "the loss should fall"
    assert after["gain"] > before["gain"] + 4.0, f"PSNR gain only {after['gain']:.2f} dB after training"
