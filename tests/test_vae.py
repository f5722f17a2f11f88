"""handbook.vae: the KL autoencoder, against diffusers' AutoencoderKL and DiagonalGaussianDistribution."""

import re

import pytest
import torch

from handbook import vae_images
from handbook.vae import Autoencoder, AutoencoderConfig, DiagonalGaussian, vae_loss


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _ours_to_diffusers(name: str) -> str:
    """Our parameter name -> AutoencoderKL's (the same tensors, other names)."""
    rules = [
        (r"^encoder\.quant_conv", "quant_conv"), (r"^decoder\.post_quant_conv", "post_quant_conv"),
        (r"^encoder\.levels\.(\d+)\.blocks\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
        (r"^encoder\.levels\.(\d+)\.down\.", r"encoder.down_blocks.\1.downsamplers.0."),
        (r"^decoder\.levels\.(\d+)\.blocks\.(\d+)\.", r"decoder.up_blocks.\1.resnets.\2."),
        (r"^decoder\.levels\.(\d+)\.up\.", r"decoder.up_blocks.\1.upsamplers.0."),
        (r"\.middle\.block1\.", ".mid_block.resnets.0."), (r"\.middle\.block2\.", ".mid_block.resnets.1."),
        (r"\.middle\.attn\.norm\.", ".mid_block.attentions.0.group_norm."),
        (r"\.middle\.attn\.attn\.q_proj\.", ".mid_block.attentions.0.to_q."),
        (r"\.middle\.attn\.attn\.k_proj\.", ".mid_block.attentions.0.to_k."),
        (r"\.middle\.attn\.attn\.v_proj\.", ".mid_block.attentions.0.to_v."),
        (r"\.middle\.attn\.attn\.out_proj\.", ".mid_block.attentions.0.to_out.0."),
        (r"\.skip\.", ".conv_shortcut."), (r"\.norm_out\.", ".conv_norm_out."),
    ]
    for pattern, replacement in rules:
        name = re.sub(pattern, replacement, name)
    return name


def test_parity_with_diffusers_autoencoder_kl():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    theirs = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2).eval()
    ours = Autoencoder(AutoencoderConfig(channels=(32, 64), blocks_per_level=1, latent_channels=4, groups=32)).eval()
    their_state = theirs.state_dict()
    ours_state = ours.state_dict()
    mapped = {name: _ours_to_diffusers(name) for name in ours_state if name != "scale_factor"}
    assert sorted(mapped.values()) == sorted(their_state), "the same tensors, every one of them"
    with torch.no_grad():
        for name, other in mapped.items():
            ours_state[name].copy_(their_state[other].reshape(ours_state[name].shape))
    x = torch.rand(2, 3, 16, 16, generator=_gen(1)) * 2 - 1
    with torch.no_grad():
        want = theirs.encode(x).latent_dist
        got = ours.encode(x)
        assert torch.allclose(got.mean, want.mean, atol=1e-4) and torch.allclose(got.logvar, want.logvar, atol=1e-4)
        z = got.mean
        assert torch.allclose(ours.decode(z), theirs.decode(z).sample, atol=1e-4)


def test_posterior_matches_diffusers_diagonal_gaussian():
    vae_module = pytest.importorskip("diffusers.models.autoencoders.vae")
    moments = torch.randn(3, 8, 4, 4, generator=_gen(2)) * 3
    moments[0, 4:, 0, 0] = torch.tensor([-50.0, 40.0, 0.0, 1.0])        # outside [-30, 20]: clamped
    want = vae_module.DiagonalGaussianDistribution(moments)
    got = DiagonalGaussian(moments)
    assert torch.equal(got.mean, want.mean) and torch.equal(got.logvar, want.logvar)
    assert got.logvar.min().item() == -30.0 and got.logvar.max().item() == 20.0
    assert torch.allclose(got.sample(_gen(3)), want.sample(_gen(3)))  # the same noise, the same draw
    assert torch.allclose(got.kl(), want.kl(), rtol=1e-6)
    assert torch.equal(got.mode(), want.mode())


def test_kl_is_zero_for_the_prior_and_grows_away_from_it():
    zero = DiagonalGaussian(torch.zeros(1, 8, 2, 2))                    # mu 0, log sigma^2 0: the prior
    assert zero.kl().item() == 0.0
    shifted = torch.zeros(1, 8, 2, 2)
    shifted[:, :4] = 1.0                                                 # mu = 1 at 16 positions x channels
    assert DiagonalGaussian(shifted).kl().item() == pytest.approx(0.5 * 16)


@pytest.mark.parametrize("levels,f", [(2, 2), (3, 4), (4, 8)])
def test_encode_decode_shapes_for_each_downsampling(levels, f):
    config = AutoencoderConfig.tiny(channels=(8,) * (levels - 1) + (16,))
    model = Autoencoder(config, generator=_gen(0))
    assert config.downsampling == f
    x = torch.rand(2, 3, 32, 16) * 2 - 1
    posterior = model.encode(x)
    assert posterior.mean.shape == (2, 4, 32 // f, 16 // f) == (2, *config.latent_shape(32, 16))
    assert model.decode(posterior.sample(_gen(1))).shape == x.shape


def test_determinism_and_gradients():
    config = AutoencoderConfig.tiny()
    a, b = Autoencoder(config, generator=_gen(5)), Autoencoder(config, generator=_gen(5))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    x = torch.rand(4, 3, 8, 8, generator=_gen(6)) * 2 - 1
    loss_a, parts = vae_loss(a, x, beta=1e-3, generator=_gen(7))
    loss_b, _ = vae_loss(b, x, beta=1e-3, generator=_gen(7))
    assert torch.equal(loss_a, loss_b) and parts["kl"] > 0 and parts["reconstruction"] > 0
    loss_a.backward()
    # the residual branches start at zero, so their first convs get no gradient yet; everything else does
    silent = [n for n, p in a.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert all(".conv1." in n or ".norm1." in n or ".norm2." in n or "attn.attn." in n or ".attn.norm." in n
               for n in silent), silent


def test_scale_factor_gives_unit_variance_latents_on_held_out_images():
    model = Autoencoder(AutoencoderConfig.tiny(), generator=_gen(0))
    train, held_out = torch.rand(64, 3, 8, 8, generator=_gen(1)) * 2 - 1, torch.rand(64, 3, 8, 8, generator=_gen(2)) * 2 - 1
    scale = model.set_scale_factor(train, batch_size=16)
    assert scale > 0 and model.state_dict()["scale_factor"].item() == pytest.approx(scale)
    with torch.no_grad():
        latents = model.encode(held_out).mode() * model.scale_factor
    assert latents.std().item() == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("make,match", [
    (lambda m: m.encode(torch.zeros(1, 3, 9, 8)), "does not divide the image size 9x8"),
    (lambda m: m.encode(torch.zeros(1, 1, 8, 8)), r"x: expected a 4-D .*C=3"),
    (lambda m: m.decode(torch.zeros(1, 3, 4, 4)), r"z: expected a 4-D .*L=4"),
    (lambda m: DiagonalGaussian(torch.zeros(1, 3, 2, 2)), "moments' channel count"),
    (lambda m: AutoencoderConfig(channels=(8, 12), groups=8), "channels"),
])
def test_bad_input_names_the_argument(make, match):
    model = Autoencoder(AutoencoderConfig.tiny(), generator=_gen(0))
    with pytest.raises(ValueError, match=match):
        make(model)


def test_the_shapeworld_recipe_trains_measures_its_scale_and_reports():
    report = vae_images.train_model(steps=2, progress=False, n_train=32, batch_size=4, eval_images=8,
                                    scale_images=16, threads=1, config={"channels": (8, 16, 16), "groups": 4})
    model, m = report["model"], report["metrics"]
    assert model.config.downsampling == 4 and report["steps"] == 2
    assert m["scale_factor"] == pytest.approx(model.scale_factor.item()) and m["scale_factor"] > 0
    assert 0 < m["psnr_db"] < 60 and m["scaled_latent_std"] > 0
    assert report["config"]["training"]["beta"] == 1e-6 and report["config"]["resolution"] == 64
    with pytest.raises(ValueError, match="bogus"):
        vae_images.train_model(steps=1, bogus=1)


def test_shipped_autoencoder_reconstructs_held_out_renders_with_unit_variance_latents():
    """The zoo's vae_shapeworld: 64x64 -> 16x16x4, the manifest's figures hold on fresh held-out renders."""
    from handbook import shapeworld, vae_images, zoo

    model = zoo.load("vae_shapeworld")
    meta = zoo.manifest("vae_shapeworld")
    assert model.config.downsampling == 4 and model.scale_factor.item() == pytest.approx(meta["metrics"]["scale_factor"])
    renders = shapeworld.load_images("val", n=64, resolution=64, seed=0).images          # not the PSNR's test renders
    from handbook.metrics import psnr
    assert psnr(vae_images.reconstruct(model, renders), renders).median().item() >= 30.0   # the bar
    with torch.no_grad():
        latents = model.encode(renders * 2 - 1).mode() * model.scale_factor            # (64, 4, 16, 16)
    assert latents.shape == (64, 4, 16, 16) and latents.std().item() == pytest.approx(1.0, abs=0.1)


def test_the_latent_size_study_reads_its_cache_and_retrains_what_changed(tmp_path, monkeypatch):
    import json

    cache = tmp_path / "sizes.json"
    cached = {"psnr_db": 31.0, "psnr_db_mean": 30.5, "scale_factor": 0.5, "channels": [16, 32], "steps": 1000,
              "minutes": 25.0, "latent_shape": [4, 32, 32], "parameters": 1}
    cache.write_text(json.dumps({"2": cached, "8": {**cached, "channels": [16, 32, 64]}}))
    trained = []

    def fake_train(steps, progress, config):
        trained.append(config["channels"])
        model = vae_images.build(vae_images.model_config(channels=config["channels"]).to_dict())
        return {"model": model, "seconds": 60.0,
                "metrics": {"psnr_db": 20.0, "psnr_db_mean": 19.0, "scale_factor": 1.0}}

    monkeypatch.setattr(vae_images, "train_model", fake_train)
    runs = vae_images.latent_size_study((2, 8), cache=cache)
    assert trained == [(16, 32, 64, 128)]                      # f = 2 read; f = 8's levels changed: retrained
    assert runs[2] == cached and runs[8]["latent_shape"] == [4, 8, 8] and runs[8]["minutes"] == 1.0
    assert json.loads(cache.read_text())["8"]["psnr_db"] == 20.0
    with pytest.raises(ValueError, match="factors"):
        vae_images.latent_size_study((3,), cache=cache)
