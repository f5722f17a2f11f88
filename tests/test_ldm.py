"""handbook.ldm: latent diffusion with chapter 6's DiT in the latent space of chapter 7's autoencoder."""

import pytest
import torch

from handbook import ldm
from handbook.dit import DiT
from handbook.vae import Autoencoder, AutoencoderConfig

SMALL_DIT = {"hidden_size": 32, "depth": 1, "n_heads": 2, "caption_layers": 1, "frequency_dim": 16}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _autoencoder(scale=2.0):
    model = Autoencoder(AutoencoderConfig.tiny(channels=(8, 16, 16)), generator=_gen(0)).eval()   # f = 4
    model.scale_factor.fill_(scale)
    return model


def test_generate_samples_latents_and_decodes_once():
    autoencoder = _autoencoder()
    model = DiT(ldm.denoiser_config(**SMALL_DIT), generator=_gen(1))
    prompts = ["a large red cube seen from above", "a small blue sphere"]
    images = ldm.generate(prompts, model, autoencoder, steps=3, generator=_gen(2))
    assert images.shape == (2, 3, 64, 64) and 0 <= images.min() and images.max() <= 1
    # the same: DDIM on the latents by hand, divided by the scale factor, then decoded
    from handbook import diffusion
    from handbook.shapeworld import encode_prompts
    z = diffusion.ddim_sample(model.eval(), ldm.noise_schedule(), (2, 4, 16, 16), steps=3,
                              cond=encode_prompts(prompts, model.config.caption_length), generator=_gen(2),
                              guidance_scale=ldm.DEFAULT_GUIDANCE, null_cond=model.null_condition(), progress=False)
    with torch.no_grad():
        want = ((autoencoder.decode(z / 2.0) + 1) / 2).clamp(0, 1)
    assert torch.allclose(images, want, atol=1e-6)
    with pytest.raises(ValueError, match="prompt 'a large red pyramid'"):
        ldm.generate(["a large red pyramid"], model, autoencoder, steps=1)


def test_latents_are_scaled_posterior_means():
    autoencoder = _autoencoder(scale=1.0)
    images = torch.rand(8, 3, 64, 64, generator=_gen(3))
    scale = autoencoder.set_scale_factor(images * 2 - 1)
    latents = ldm.encode_latents(autoencoder, images, batch_size=3)
    assert latents.shape == (8, 4, 16, 16) and latents.std().item() == pytest.approx(1.0, rel=1e-4)
    with torch.no_grad():
        assert torch.allclose(latents, autoencoder.encode(images * 2 - 1).mode() * scale, atol=1e-6)


def test_the_recipe_trains_on_latents():
    report = ldm.train_model(steps=2, progress=False, config=SMALL_DIT, autoencoder=_autoencoder(),
                             n_train=16, batch_size=4, warmup=1)
    assert report["steps"] == 2 and report["config"]["autoencoder"] == "vae_shapeworld"
    assert report["config"]["model"]["in_channels"] == 4 and report["config"]["model"]["input_size"] == 16
    assert report["metrics"]["latent_std"] > 0 and len(report["history"].losses) == 2
