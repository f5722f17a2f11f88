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


def test_the_recipe_reports_the_judged_evaluation(monkeypatch):
    seen = {}

    def fake_evaluate(model, autoencoder, n, guidance_scale, seed, progress):
        seen.update(n=n, guidance=guidance_scale, autoencoder=autoencoder)
        return {"recognition": 0.5, "fid": 12.0}

    monkeypatch.setattr(ldm, "evaluate", fake_evaluate)
    autoencoder = _autoencoder()
    report = ldm.train_model(steps=1, progress=False, config=SMALL_DIT, autoencoder=autoencoder,
                             n_train=8, batch_size=4, warmup=1, eval_images=6)
    assert seen == {"n": 6, "guidance": ldm.DEFAULT_GUIDANCE, "autoencoder": autoencoder}
    assert report["metrics"]["ddim50_recognition"] == 0.5 and report["metrics"]["ddim50_fid"] == 12.0


def test_the_evaluation_judges_64x64_samples_at_32x32():
    autoencoder = _autoencoder()
    model = DiT(ldm.denoiser_config(**SMALL_DIT), generator=_gen(1))
    scores = ldm.evaluate(model, autoencoder, n=4, steps=1, fid_reference=8)
    assert set(scores) >= {"recognition", "shape", "colour", "size", "view", "fid", "n", "seconds"}
    assert scores["n"] == 4 and 0 <= scores["recognition"] <= 1 and scores["fid"] > 0


def test_real_64x64_renders_taken_to_32x32_are_read_as_their_captions_say():
    from handbook import dit_images

    real = dit_images.real_reference(n=60, fid_reference=200, resolution=64)
    assert real["recognition"] >= 0.95 and real["view"] >= 0.9


def test_a_sampler_of_the_wrong_size_is_refused():
    from handbook import dit_images

    with pytest.raises(ValueError, match=r"sampler\(prompts\).*H=64"):
        dit_images.evaluate_sampler(lambda prompts: torch.zeros(len(prompts), 3, 32, 32), n=2, resolution=64)


def test_a_latent_step_is_many_times_cheaper_than_a_pixel_step():
    cost = ldm.step_cost(batch_size=1, repeats=1)
    latent, pixel = cost["latent"], cost["pixel"]
    assert (latent["tokens"], pixel["tokens"]) == (64, 1024)
    assert abs(latent["parameters"] - pixel["parameters"]) < 0.001 * latent["parameters"]   # equal size
    assert latent["seconds"] > 0 and pixel["seconds"] > 0 and cost["decode"]["seconds"] > 0


def test_the_shipped_model_draws_what_balanced_prompts_ask_for():
    """The zoo's ldm_shapeworld on the zoo's autoencoder: 64x64 images that the judge reads as asked."""
    from handbook import dit_images, metrics, zoo

    meta = zoo.manifest("ldm_shapeworld")
    assert meta["config"]["autoencoder"] == "vae_shapeworld" and meta["config"]["model"]["input_size"] == 16
    prompts = dit_images.balanced_prompts(60)[::5]                        # 12: every shape, colour, size, view
    images = ldm.generate(prompts, steps=20, generator=_gen(0))
    assert images.shape == (12, 3, 64, 64)
    got = metrics.judge_predictions(dit_images.for_the_judge(images))
    want = dit_images._labels_of(prompts)
    right = (got["shape"] == want["shape"]) & (got["colour"] == want["colour"]) & (got["size"] == want["size"])
    assert right.float().mean().item() >= 0.75, f"the judge read {right.tolist()} for {prompts}"
