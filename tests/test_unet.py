"""The U-Net of chapter 4: shapes, zero init, gradients, conditioning, determinism, bad input,
and the timestep embedding against diffusers."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from handbook.attention import MultiHeadAttention
from handbook.embeddings import timestep_embedding
from handbook.unet import AttentionBlock, ResBlock, UNet, UNetConfig

B = 2
N_CLASSES = 5
CONTEXT_DIM = 6


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(config: UNetConfig, seed: int = 0, perturb: bool = False) -> UNet:
    """A U-Net; with ``perturb`` every parameter moves by N(0, 0.1^2), so the zero-initialised
    layers no longer hide the rest of the network (as after some training)."""
    model = UNet(config, generator=_gen(seed))
    if perturb:
        g = _gen(seed + 100)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _inputs(config: UNetConfig, H: int = 8, W: int = 8, seed: int = 0):
    """x, t and a cond that matches the config's conditioning convention."""
    g = _gen(seed)
    x = torch.randn(B, config.in_channels, H, W, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    labels = torch.randint(0, config.num_classes + 1, (B,), generator=g) if config.num_classes else None
    context = torch.randn(B, 3, config.context_dim, generator=g) if config.context_dim else None
    if labels is not None and context is not None:
        return x, t, {"y": labels, "context": context}
    return x, t, labels if labels is not None else context


CONFIGS = {
    "tiny": UNetConfig.tiny(),
    "three-levels-no-attention": UNetConfig.tiny(channel_mults=(1, 2, 2), attention_levels=(),
                                                 bottleneck_attention=False),
    "one-level": UNetConfig.tiny(channel_mults=(1,), attention_levels=(0,)),
    "film-class": UNetConfig.tiny(conditioning="film", num_classes=N_CLASSES, blocks_per_level=2),
    "context-2-heads": UNetConfig.tiny(context_dim=CONTEXT_DIM, n_heads=2, attention_levels=(0, 1)),
    "class-and-context": UNetConfig.tiny(num_classes=N_CLASSES, context_dim=CONTEXT_DIM, conditioning="film"),
    "no-skips": UNetConfig.tiny(skip_connections=False, in_channels=1, out_channels=2),
    "no-time": UNetConfig.tiny(time_conditioning=False),
    "no-time-class": UNetConfig.tiny(time_conditioning=False, num_classes=N_CLASSES, dropout=0.1),
}


# ---------------------------------------------------------------------------------------------
# Timestep embedding
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [8, 7, 32])
@pytest.mark.parametrize("dtype", [torch.long, torch.float32])
def test_timestep_embedding_matches_diffusers(dim, dtype):
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    t = torch.tensor([0, 1, 17, 500, 999]).to(dtype) + (0.25 if dtype.is_floating_point else 0)
    ref = embeddings.get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
    ours = timestep_embedding(t, dim)
    assert ours.shape == (5, dim)
    assert (ours - ref).abs().max().item() < 1e-6


def test_timestep_embedding_is_cos_then_sin_with_a_zero_pad():
    t = torch.tensor([0.0, 3.0])
    emb = timestep_embedding(t, 5)  # half = 2, freqs = [1, 10000^-1/2]
    assert torch.equal(emb[0], torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))
    expected = torch.tensor([math.cos(3.0), math.cos(0.03), math.sin(3.0), math.sin(0.03), 0.0])
    assert torch.allclose(emb[1], expected, atol=1e-6)


@pytest.mark.parametrize("t, dim, match", [
    (torch.zeros(2, 1), 8, "t: expected a 1-D"),
    ([0, 1], 8, "t: expected a 1-D"),
    (torch.zeros(2), 1, "dim: expected an int >= 2"),
])
def test_timestep_embedding_bad_input(t, dim, match):
    with pytest.raises(ValueError, match=match):
        timestep_embedding(t, dim)


# ---------------------------------------------------------------------------------------------
# Shapes, zero init, features, parameter counts
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_output_shape_and_a_new_model_outputs_exactly_zero(name):
    config = CONFIGS[name]
    H, W = (16, 24) if config.levels < 3 else (8, 12)
    x, t, cond = _inputs(config, H, W)
    model = _model(config)
    y = model(x, t, cond)
    assert y.shape == (B, config.out_channels, H, W)
    assert torch.equal(y, torch.zeros_like(y))  # zero-initialised output conv
    y = _model(config, perturb=True)(x, t, cond)
    assert y.shape == (B, config.out_channels, H, W) and torch.isfinite(y).all() and y.abs().max() > 0


def test_small_preset_size_and_forward():
    model = _model(UNetConfig.small())
    assert 5e5 < model.num_parameters() < 2e6
    x = torch.randn(B, 3, 32, 32, generator=_gen())
    assert model(x, 10).shape == (B, 3, 32, 32)  # a scalar t is broadcast over the batch


def test_features_and_parameters_per_level():
    config = UNetConfig.tiny(channel_mults=(1, 2, 2), num_classes=N_CLASSES)
    model = _model(config)
    x, t, cond = _inputs(config, 16, 16)
    y, feats = model(x, t, cond, return_features=True)
    assert list(feats) == ["encoder.0", "encoder.1", "encoder.2", "bottleneck", "decoder.2", "decoder.1", "decoder.0"]
    for i, C in enumerate(config.channels):
        size = 16 // 2 ** i
        assert feats[f"encoder.{i}"].shape == feats[f"decoder.{i}"].shape == (B, C, size, size)
    assert feats["bottleneck"].shape == (B, config.channels[-1], 4, 4)
    counts = model.parameters_per_level()
    assert list(counts) == ["embeddings", "input", "encoder.0", "encoder.1", "encoder.2", "bottleneck",
                            "decoder.2", "decoder.1", "decoder.0", "output"]
    assert sum(counts.values()) == model.num_parameters()
    # The embedding table has num_classes + 1 rows: the last one is the null class.
    assert model.class_embed.num_embeddings == N_CLASSES + 1 and model.null_label == N_CLASSES


def test_without_skips_the_decoder_ignores_encoder_features():
    with_skips, without = _model(UNetConfig.tiny()), _model(UNetConfig.tiny(skip_connections=False))
    C0, C1 = UNetConfig.tiny().channels
    assert with_skips.decoder[0].blocks[0].conv1.in_channels == C1 + C0
    assert without.decoder[0].blocks[0].conv1.in_channels == C1
    assert without.num_parameters() < with_skips.num_parameters()


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["class-and-context", "context-2-heads", "no-skips", "no-time-class"])
def test_every_parameter_gets_a_gradient(name):
    config = CONFIGS[name]
    model = _model(config, perturb=True)
    x, t, cond = _inputs(config)
    model(x, t, cond).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_at_init_the_output_conv_still_learns():
    """Zero init blocks the gradient to the layers behind it, but not to itself: one step moves it."""
    config = CONFIGS["tiny"]
    model = _model(config)
    x, t, _ = _inputs(config)
    F.mse_loss(model(x, t), torch.randn(x.shape, generator=_gen(1))).backward()
    assert model.conv_out.weight.grad.abs().sum() > 0
    assert model.encoder[0].blocks[0].conv1.weight.grad.abs().sum() == 0


# ---------------------------------------------------------------------------------------------
# Conditioning
# ---------------------------------------------------------------------------------------------

def test_class_labels_and_context_change_the_output():
    config = CONFIGS["class-and-context"]
    model = _model(config, perturb=True).eval()
    x, t, cond = _inputs(config)
    y = model(x, t, cond)
    other_labels = (cond["y"] + 1) % (N_CLASSES + 1)
    assert not torch.allclose(y, model(x, t, {"y": other_labels, "context": cond["context"]}))
    assert not torch.allclose(y, model(x, t, {"y": cond["y"], "context": cond["context"] + 1.0}))
    # The null label N_CLASSES is a valid label (classifier-free guidance).
    null = torch.full((B,), model.null_label)
    assert torch.isfinite(model(x, t, {"y": null, "context": cond["context"]})).all()


def test_time_changes_the_output_only_when_time_conditioning_is_on():
    x, t, _ = _inputs(CONFIGS["tiny"])
    on = _model(CONFIGS["tiny"], perturb=True)
    assert not torch.allclose(on(x, t), on(x, t + 100))
    assert torch.equal(on(x, 3), on(x, torch.full((B,), 3.0)))  # scalar and (B,) agree
    off = _model(CONFIGS["no-time"], perturb=True)
    assert torch.equal(off(x, t), off(x, None))


@pytest.mark.parametrize("conditioning", ["add", "film"])
def test_resblock_conditioning_formula(conditioning):
    """add: norm2(h + e); film: norm2(h) * (1 + scale) + shift, e chunked as (scale, shift)."""
    block = ResBlock(4, 8, embed_dim=6, groups=2, conditioning=conditioning)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=_gen(1)))
    x, emb = torch.randn(B, 4, 5, 5, generator=_gen(2)), torch.randn(B, 6, generator=_gen(3))
    h = block.conv1(F.silu(block.norm1(x)))
    e = block.embed_proj[1](F.silu(emb))[:, :, None, None]
    if conditioning == "film":
        assert e.shape[1] == 16
        h = block.norm2(h) * (1 + e[:, :8]) + e[:, 8:]
    else:
        h = block.norm2(h + e)
    expected = block.skip(x) + block.conv2(F.silu(h))
    assert torch.allclose(block(x, emb), expected, atol=1e-6)


def test_attention_block_is_a_residual_multi_head_attention_over_pixels():
    block = AttentionBlock(8, n_heads=2, groups=4, context_dim=CONTEXT_DIM)
    assert isinstance(block.attn, MultiHeadAttention) and isinstance(block.cross_attn, MultiHeadAttention)
    x, ctx = torch.randn(B, 8, 3, 4, generator=_gen(1)), torch.randn(B, 5, CONTEXT_DIM, generator=_gen(2))
    assert torch.equal(block(x, ctx), x)  # zero-initialised output projections: the identity
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=_gen(3)))
    tokens = x.flatten(2).transpose(1, 2)                                     # (B, H*W, C)
    h = tokens + block.attn(block.norm(x.flatten(2)).transpose(1, 2))
    h = h + block.cross_attn(block.cross_norm(h.transpose(1, 2)).transpose(1, 2), ctx)
    assert torch.allclose(block(x, ctx), h.transpose(1, 2).reshape(x.shape), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------

def test_same_seed_same_model_and_building_leaves_the_global_rng_alone():
    config = CONFIGS["class-and-context"]
    state = torch.random.get_rng_state()
    a, b, c = _model(config, seed=0), _model(config, seed=0), _model(config, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    sa, sc = a.state_dict(), c.state_dict()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in sa.items())
    assert any(not torch.equal(v, sc[k]) for k, v in sa.items())


def test_initial_weights_are_pytorch_defaults_drawn_from_the_generator():
    """Redrawn by hand in module order: U(+-1/sqrt(fan_in)) for every conv and linear layer (weight,
    then bias), N(0, 1) for the class embedding; the layers that start at zero stay zero."""
    config = CONFIGS["class-and-context"]
    model, g = _model(config, seed=3), _gen(3)
    state = model.state_dict()
    for name, m in model.named_modules():
        drawn = {}
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            bound = 1 / math.sqrt(m.weight[0].numel())
            drawn = {p: torch.empty_like(t).uniform_(-bound, bound, generator=g) for p, t in m.named_parameters()}
        elif isinstance(m, torch.nn.Embedding):
            drawn = {"weight": torch.empty_like(m.weight).normal_(generator=g)}
        zeroed = name == "conv_out" or name.endswith(("conv2", "out_proj"))
        for p, value in drawn.items():
            actual = state[f"{name}.{p}"]
            assert torch.equal(actual, torch.zeros_like(actual) if zeroed else value), f"{name}.{p}"


def test_same_input_same_output():
    config = CONFIGS["film-class"]
    model = _model(config, perturb=True).eval()  # eval: dropout off
    x, t, cond = _inputs(config)
    assert torch.equal(model(x, t, cond), model(x, t, cond))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_output_on_cuda_up_to_float_tolerance(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full-precision fp32 convolutions
    config = CONFIGS["class-and-context"]
    model = _model(config, perturb=True).eval()
    x, t, cond = _inputs(config, 16, 16)
    with torch.no_grad():
        expected = model(x, t, cond)
    cond = {k: v.cuda() for k, v in cond.items()}
    with torch.no_grad():
        y = model.cuda()(x.cuda(), t.cuda(), cond).cpu()
    assert (y - expected).abs().max().item() < 1e-4


# ---------------------------------------------------------------------------------------------
# Bad input and bad configs
# ---------------------------------------------------------------------------------------------

def _call(config_name, **changes):
    config = CONFIGS[config_name]
    x, t, cond = _inputs(config)
    args = {"x": x, "t": t, "cond": cond, **changes}
    _model(config)(args["x"], args["t"], args["cond"])


@pytest.mark.parametrize("name, changes, match", [
    ("tiny", {"x": torch.randn(B, 1, 8, 8)}, r"x: expected a 4-D float tensor \(B, in_channels=3"),
    ("tiny", {"x": torch.randn(B, 3, 8)}, "x: expected a 4-D float tensor"),
    ("tiny", {"x": torch.zeros(B, 3, 8, 8, dtype=torch.long)}, "x: expected a 4-D float tensor"),
    ("tiny", {"x": torch.randn(B, 3, 8, 7)}, "height 8 and width 7 must be multiples of 2"),
    ("three-levels-no-attention", {"x": torch.randn(B, 3, 6, 8)},
     r"height 6 and width 8 must be multiples of 2\*\*\(levels - 1\) = 4"),
    ("tiny", {"t": torch.zeros(B + 1)}, r"t: expected a number or a tensor shaped \(\) or \(B=2,\)"),
    ("tiny", {"t": None}, "t: expected"),
    ("tiny", {"cond": torch.zeros(B, dtype=torch.long)}, "cond: this model is unconditional"),
    ("film-class", {"cond": None}, f"cond: this model needs class labels 'y'; .* null label {N_CLASSES}"),
    ("context-2-heads", {"cond": None}, "cond: this model needs a 'context'$"),
    ("film-class", {"cond": torch.tensor([0, N_CLASSES + 1])}, rf"class labels must lie in 0..{N_CLASSES}"),
    ("film-class", {"cond": torch.tensor([-1, 0])}, "class labels must lie in"),
    ("film-class", {"cond": torch.zeros(B)}, r"cond \(class labels\): expected a 1-D integer tensor"),
    ("film-class", {"cond": {"context": torch.zeros(B, 3, 4)}},
     r"this model needs class labels 'y'; .*; got the keys \['context'\]"),
    ("context-2-heads", {"cond": torch.zeros(B, 3, CONTEXT_DIM + 1)}, r"context_dim=6\), got a tensor \(2, 3, 7\)"),
    ("context-2-heads", {"cond": torch.zeros(B + 1, 3, CONTEXT_DIM)}, r"cond \(context\): expected a 3-D float tensor"),
    ("context-2-heads", {"cond": {"y": torch.zeros(B, dtype=torch.long), "context": torch.zeros(B, 3, CONTEXT_DIM)}},
     r"cond: this model needs a 'context'; got the keys \['context', 'y'\]"),
    ("class-and-context", {"cond": torch.zeros(B, dtype=torch.long)}, "pass {'y': labels, 'context': context}"),
    ("class-and-context", {"cond": {"y": torch.zeros(B, dtype=torch.long)}},
     r"needs class labels 'y' and a 'context'.*; got the keys \['y'\]"),
    ("class-and-context", {"cond": {"label": 0}}, r"got the keys \['label'\]"),
])
def test_bad_input_raises_a_clear_error(name, changes, match):
    with pytest.raises(ValueError, match=match):
        _call(name, **changes)


@pytest.mark.parametrize("changes, match", [
    ({"base_channels": 0}, "base_channels: expected an int >= 1"),
    ({"channel_mults": ()}, "channel_mults: expected a non-empty tuple"),
    ({"channel_mults": (1, 0)}, r"channel_mults: expected a non-empty tuple of positive ints, got \(1, 0\)"),
    ({"attention_levels": (2,)}, r"attention_levels: expected level indices in 0..1"),
    ({"attention_levels": (1, 1)}, "attention_levels: expected level indices in 0..1 once each"),
    ({"groups": 3}, r"groups: 3 must divide the channels of every level \(8, 16\)"),
    ({"n_heads": 3}, "n_heads: 3 must divide"),
    ({"dropout": 1.0}, r"dropout: expected a finite number in \[0, 1\)"),
    ({"conditioning": "concat"}, r"conditioning: expected one of \('add', 'film'\)"),
    ({"num_classes": 0}, "num_classes: expected an int >= 1 or None"),
    ({"context_dim": 4, "attention_levels": (), "bottleneck_attention": False}, "context_dim: cross-attention"),
    ({"skip_connections": "yes"}, "skip_connections: expected True or False"),
    ({"blocks_per_level": 1.5}, "blocks_per_level: expected an int >= 1"),
])
def test_bad_config_raises_a_clear_error(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(UNetConfig.tiny(), **changes)


def test_config_round_trip_and_lists_become_tuples():
    config = UNetConfig.small(num_classes=3, channel_mults=[1, 2], attention_levels=[1])
    assert config.channel_mults == (1, 2) and hash(config)
    assert UNetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.base_channels = 8
