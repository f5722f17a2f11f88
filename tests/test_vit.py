"""The Vision Transformer of chapter 3: patches and their order, the patch embedding as a linear
map, 2D sin-cos positions against diffusers, model shapes, gradients, attention maps, bad input,
the CNN baseline, and a tiny learning task."""

import math

import pytest
import torch
import torch.nn.functional as F

from handbook import shapeworld as sw
from handbook.classification import SmallCNN, accuracy, augment_batch, cnn_width_for, train_classifier
from handbook.embeddings import sincos_2d_positional_embedding
from handbook.vit import PatchEmbed, ViT, ViTConfig, patchify, unpatchify

B = 2


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(C=3, H=16, W=16, seed=0):
    return torch.rand(B, C, H, W, generator=_gen(seed))


# ---- patches ---------------------------------------------------------------------------------

def test_patchify_order_on_a_hand_made_image():
    # Pixel value = 100 * channel + 10 * row + column: each value says where it came from.
    C, H, W, p = 2, 4, 6, 2
    c, y, x = torch.meshgrid(torch.arange(C), torch.arange(H), torch.arange(W), indexing="ij")
    image = (100 * c + 10 * y + x).float()[None]                      # (1, C, H, W)
    patches = patchify(image, p)
    assert patches.shape == (1, (H // p) * (W // p), p * p * C)
    # Patch 4 is grid row 1, column 1 (3 patches per row): pixels rows 2-3, columns 2-3,
    # flattened (row, column, channel).
    expected = [22, 122, 23, 123, 32, 132, 33, 133]
    assert patches[0, 4].tolist() == expected
    assert patches[0, 2].tolist() == [4, 104, 5, 105, 14, 114, 15, 115]  # row 0, last column


@pytest.mark.parametrize("C,H,W,p", [(3, 16, 16, 4), (1, 8, 12, 2), (5, 6, 9, 3), (3, 4, 4, 1)])
def test_unpatchify_inverts_patchify(C, H, W, p):
    images = torch.randn(3, C, H, W, generator=_gen())
    tokens = patchify(images, p)
    assert tokens.shape == (3, (H // p) * (W // p), p * p * C)
    assert torch.equal(unpatchify(tokens, p, H, W), images)


def test_patch_size_errors_name_both_numbers():
    with pytest.raises(ValueError, match="patch_size 5 does not divide the image size 32x32"):
        patchify(torch.zeros(1, 3, 32, 32), 5)
    with pytest.raises(ValueError, match="patch_size 4 does not divide the image size 16x18"):
        unpatchify(torch.zeros(1, 16, 48), 4, 16, 18)
    with pytest.raises(ValueError, match="patch_size"):
        patchify(torch.zeros(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match="images"):
        patchify(torch.zeros(3, 8, 8), 4)
    with pytest.raises(ValueError, match="images"):
        patchify(torch.zeros(1, 3, 8, 8, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="tokens"):
        unpatchify(torch.zeros(1, 3, 48), 4, 8, 8)        # 3 tokens, but the grid holds 4
    with pytest.raises(ValueError, match="tokens"):
        unpatchify(torch.zeros(1, 4, 47), 4, 8, 8)        # 47 is not C * 16
    with pytest.raises(ValueError, match="the image size: expected ints >= 1, got 0x8"):
        unpatchify(torch.zeros(1, 0, 48), 4, 0, 8)


def test_patch_embed_is_patchify_then_one_linear_map():
    C, D, p = 3, 8, 4
    embed = PatchEmbed(C, D, p)
    images = torch.randn(B, C, 8, 12, generator=_gen())
    weight = embed.proj.weight.permute(0, 2, 3, 1).reshape(D, p * p * C)   # (D, p*p*C), (row, col, channel)
    expected = F.linear(patchify(images, p), weight, embed.proj.bias)
    out = embed(images)
    assert out.shape == (B, 6, D)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


# ---- positions -------------------------------------------------------------------------------

@pytest.mark.parametrize("d_model,grid", [(16, 4), (64, 8), (32, 1)])
def test_sincos_matches_diffusers(d_model, grid):
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    theirs = embeddings.get_2d_sincos_pos_embed(d_model, grid, base_size=grid, output_type="pt")
    ours = sincos_2d_positional_embedding(d_model, grid)
    assert ours.shape == (grid * grid, d_model) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, torch.as_tensor(theirs, dtype=torch.float32), atol=1e-6, rtol=0)


def test_sincos_layout_and_rectangular_grids():
    D, gh, gw = 8, 2, 3
    pos = sincos_2d_positional_embedding(D, (gh, gw))               # (6, 8)
    assert pos.shape == (gh * gw, D)
    # Token 5 = row 1, column 2. First half: column 2 at omega = (1, 1/100); second half: row 1.
    omega = torch.tensor([1.0, 0.01])
    col, row = 2 * omega, 1 * omega
    expected = torch.cat([col.sin(), col.cos(), row.sin(), row.cos()])
    torch.testing.assert_close(pos[5], expected)
    with pytest.raises(ValueError, match="d_model.*multiple of 4"):
        sincos_2d_positional_embedding(6, 4)
    with pytest.raises(ValueError, match="grid_size"):
        sincos_2d_positional_embedding(8, 0)


# ---- the model -------------------------------------------------------------------------------

CONFIGS = {
    "tiny": ViTConfig.tiny(),
    "sincos-mean": ViTConfig.tiny(positional="sincos", pool="mean"),
    "rectangular-patch2": ViTConfig.tiny(image_size=(8, 12), patch_size=2, n_layer=1),
    "conv-stem-1ch": ViTConfig.tiny(stem="conv", in_channels=1, stem_channels=4, num_classes=3),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_vit_shapes_gradients_and_attention(name):
    c = CONFIGS[name]
    model = ViT(c, generator=_gen())
    H, W = c.image_hw
    images = _images(c.in_channels, H, W)
    logits = model(images)
    assert logits.shape == (B, c.num_classes) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    maps = model.attention_maps(images)
    assert len(maps) == c.n_layer
    for m in maps:
        assert m.shape == (B, c.n_heads, c.num_patches + 1, c.num_patches + 1)
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1]))
    cls = model.cls_attention(images, layer=0)
    assert cls.shape == (B, c.n_heads, *c.grid_size)
    torch.testing.assert_close(cls, maps[0][:, :, 0, 1:].reshape(cls.shape))
    assert all(block.last_attention is None for block in model.blocks)


def test_presets_and_parameter_counts():
    model = ViT(ViTConfig.shapeworld())
    assert model.config.num_patches == 64 and model.config.num_classes == len(sw.SHAPES) * len(sw.COLOURS)
    assert 150_000 < model.num_parameters() < 300_000
    assert ViT(ViTConfig.tiny()).num_parameters() < 50_000
    # The sin-cos table is a buffer (not a parameter, not saved); the learned one is a parameter.
    sincos = ViT(ViTConfig.tiny(positional="sincos"))
    assert "pos_embed" not in dict(sincos.named_parameters()) and "pos_embed" not in sincos.state_dict()
    assert sincos.pos_embed[0, 0].abs().sum() == 0        # MAE: the class token's position is zero
    assert model.blocks[0].ln1.eps == 1e-6 and model.norm.eps == 1e-6


@pytest.mark.parametrize("positional", ["learned", "sincos"])
def test_other_image_sizes(positional):
    model = ViT(ViTConfig.tiny(positional=positional, dynamic_image_size=True), generator=_gen())
    assert model(_images(H=8, W=20)).shape == (B, model.config.num_classes)
    assert model.cls_attention(_images(H=24, W=8)).shape == (B, 2, 6, 2)
    # At the built size the stored table is used as is; a new grid of the same size reproduces it.
    torch.testing.assert_close(model.position_embedding((4, 4)), model.pos_embed)
    if positional == "sincos":
        expected = sincos_2d_positional_embedding(32, (2, 5))
        torch.testing.assert_close(model.position_embedding((2, 5))[0, 1:], expected)


def test_determinism_and_generator():
    a, b = ViT(ViTConfig.tiny(), generator=_gen(1)), ViT(ViTConfig.tiny(), generator=_gen(1))
    images = _images()
    assert torch.equal(a(images), b(images))
    c = ViT(ViTConfig.tiny(), generator=_gen(2))
    assert not torch.equal(a(images), c(images))
    state = torch.random.get_rng_state()
    ViT(ViTConfig.tiny(stem="conv"), generator=_gen(3))
    assert torch.equal(state, torch.random.get_rng_state())  # building never touches the global stream


def _fan_in_uniform(weight: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    bound = 1 / math.sqrt(weight[0].numel())
    return torch.empty_like(weight).uniform_(-bound, bound, generator=g)


def test_initial_weights_redrawn_by_hand():
    """ViT: the MAE init in module order (Xavier for linear maps and the patch conv, PyTorch's
    default for the conv stem's weights, zero biases), then the class token and positions.
    SmallCNN: PyTorch's default for every conv and the head, weight then bias."""
    model, g = ViT(ViTConfig.tiny(stem="conv"), generator=_gen(4)), _gen(4)
    expected = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            expected[name + ".weight"] = torch.nn.init.xavier_uniform_(torch.empty_like(m.weight), generator=g)
        elif isinstance(m, PatchEmbed):
            w = torch.empty_like(m.proj.weight)
            torch.nn.init.xavier_uniform_(w.view(w.shape[0], -1), generator=g)
            expected[name + ".proj.weight"] = w
        elif isinstance(m, torch.nn.Conv2d) and m.kernel_size != m.stride:
            expected[name + ".weight"] = _fan_in_uniform(m.weight, g)
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            expected[name + ".bias"] = torch.zeros_like(m.bias)
    expected["cls_token"] = torch.empty_like(model.cls_token).normal_(0, 0.02, generator=g)
    expected["pos_embed"] = torch.nn.init.trunc_normal_(torch.empty_like(model.pos_embed), std=0.02, a=-0.04,
                                                        b=0.04, generator=g)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())

    cnn, g = SmallCNN(3, 30, 8, generator=_gen(5)), _gen(5)
    layers = [m for m in (*cnn.features, cnn.head) if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    drawn = [_fan_in_uniform(m.weight, g) for m in layers]
    bound = 1 / math.sqrt(cnn.head.weight[0].numel())
    drawn.append(torch.empty_like(cnn.head.bias).uniform_(-bound, bound, generator=g))
    assert all(torch.equal(a, b) for a, b in zip([m.weight for m in layers] + [cnn.head.bias], drawn))


def test_image_size_must_match_the_config():
    # A 32-pixel model given 16-pixel images: its learned positions are a table for an 8x8 grid.
    model = ViT(ViTConfig.shapeworld(), generator=_gen())
    message = (r"images: expected a 4-D float tensor \(B, C, Hh=32, Ww=32\), got a tensor \(2, 3, 16, 16\) float32; "
               r"Hh, Ww: the config's image_size \(other sizes need dynamic_image_size=True\)")
    with pytest.raises(ValueError, match=message):
        model(_images(H=16, W=16))
    with pytest.raises(ValueError, match=message):
        model.cls_attention(_images(H=16, W=16))
    with pytest.raises(ValueError, match=r"\(B, C, Hh=8, Ww=12\), got a tensor \(2, 3, 12, 8\) float32; Hh, Ww: the config"):
        ViT(ViTConfig.tiny(image_size=(8, 12), patch_size=2))(_images(H=12, W=8))
    assert model(_images(H=32, W=32)).shape == (B, 30)
    # Opting in resamples the positions instead (test_other_image_sizes); p must still divide the image.
    dynamic = ViT(ViTConfig.shapeworld(dynamic_image_size=True), generator=_gen())
    assert dynamic(_images(H=16, W=16)).shape == (B, 30)
    with pytest.raises(ValueError, match="patch_size 4 does not divide the image size 16x18"):
        dynamic(torch.zeros(1, 3, 16, 18))


def test_bad_inputs_and_configs():
    model = ViT(ViTConfig.tiny())
    with pytest.raises(ValueError, match=r"\(B, C=3, Hh, Ww\)"):
        model(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="image_size"):
        model(torch.zeros(1, 3, 16, 18))
    with pytest.raises(ValueError, match="images"):
        model(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="layer"):
        model.cls_attention(torch.zeros(1, 3, 16, 16), layer=2)
    with pytest.raises(ValueError, match="config"):
        ViT({"d_model": 32})
    for field, value in [("image_size", 0), ("image_size", (16,)), ("patch_size", 3), ("d_model", 31),
                         ("n_layer", 0), ("dropout", 1.0), ("positional", "rope"), ("pool", "max"),
                         ("stem", "resnet"), ("mlp_ratio", 0), ("dynamic_image_size", 1)]:
        with pytest.raises(ValueError, match=field):
            ViTConfig.tiny(**{field: value})
    with pytest.raises(ValueError, match="d_model"):
        ViTConfig.tiny(d_model=6, n_heads=2, positional="sincos")
    config = ViTConfig.tiny(image_size=[8, 12], patch_size=2)
    assert config.image_size == (8, 12) and ViTConfig.from_dict(config.to_dict()) == config


# ---- baseline, training ------------------------------------------------------------------------

def test_small_cnn_and_matching_width():
    cnn = SmallCNN(3, 30, 8, generator=_gen())
    assert cnn(_images(H=32, W=32)).shape == (B, 30)
    assert cnn.num_parameters() == SmallCNN.count_parameters(3, 30, 8)
    target = ViT(ViTConfig.shapeworld()).num_parameters()
    width = cnn_width_for(target)
    counts = [SmallCNN.count_parameters(3, 30, w) for w in (width - 1, width, width + 1)]
    assert abs(counts[1] - target) <= min(abs(counts[0] - target), abs(counts[2] - target))
    assert abs(counts[1] - target) / target < 0.05
    with pytest.raises(ValueError, match=r"\(B, C=3, Hh, Ww\)"):
        cnn(torch.zeros(1, 1, 8, 8))


def test_augment_keeps_shape_and_is_reproducible():
    images = _images()
    a, b = augment_batch(images, _gen(5)), augment_batch(images, _gen(5))
    assert a.shape == images.shape and torch.equal(a, b)


def test_vit_learns_colour_from_a_few_shapeworld_images():
    # Two colours, 16x16 images: 60 steps of the chapter's recipe separate them.
    data = sw.load_images("train", 400, resolution=16, seed=0)
    keep = data.colour < 2
    images, labels = data.images[keep], data.colour[keep]
    model = ViT(ViTConfig.tiny(num_classes=2), generator=_gen())
    history = train_classifier(model, images, labels, steps=60, generator=_gen(), batch_size=32, progress=False)
    assert history.steps == 60 and not model.training
    assert accuracy(model, images, labels) >= 0.95
    with pytest.raises(ValueError, match="labels"):
        accuracy(model, images, labels.float())


# ------------------------------------------------------- exercise 1's CNN baselines in the zoo

HUNGER_SIZES = (50, 250, 1250)


@pytest.mark.parametrize("n", HUNGER_SIZES)
def test_shipped_cnn_baselines_load_verified_and_their_manifest_config_builds_them(n):
    from handbook import zoo
    from handbook.checkpoints import sha256_of
    from handbook.device import make_generator

    name = f"data_hunger_cnn_{n}"
    meta, entry = zoo.manifest(name), zoo.REGISTRY[name]
    assert meta["command"] == f"python -m handbook.zoo train {name} --seed 0 --steps 200"
    assert (meta["seed"], meta["steps"], entry.steps) == (0, 200, 200)
    path = zoo.WEIGHTS_DIR / meta["weights"]
    assert sha256_of(path) == meta["sha256"] and path.stat().st_size < 200_000
    assert meta["config"]["training"]["n_train"] == n and meta["config"]["training"]["image_size"] == 16
    state = torch.get_rng_state()
    model = zoo.load(name)
    assert torch.equal(torch.get_rng_state(), state), "loading must not move the global RNG"
    assert isinstance(model, SmallCNN) and not model.training
    # The size the exercise compares: a CNN of as many parameters as the tiny ViT.
    assert model.config.width == cnn_width_for(ViT(ViTConfig.tiny(), generator=make_generator(0)).num_parameters())
    assert model.config.to_dict() == meta["config"]["model"]
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, sw.NUM_CLASSES)
    assert 0.0 < meta["metrics"]["test_accuracy"] <= 1.0


def test_more_images_gave_the_shipped_cnn_a_better_score():
    from handbook import zoo

    scores = [zoo.manifest(f"data_hunger_cnn_{n}")["metrics"]["test_accuracy"] for n in HUNGER_SIZES]
    assert scores == sorted(scores) and scores[-1] > 0.9


def test_a_cnn_baseline_recipe_is_the_exercises_training_call():
    """A few steps of the zoo's recipe give, bit for bit, what data_hunger_run("cnn", 50, steps, 0) trains."""
    from handbook import classification
    from handbook.device import make_generator

    report = classification.train_hunger_cnn_50(seed=0, steps=3, progress=False)
    reference = sw.load_images("train", 10_000, 32, 0).images
    mean, std = reference.mean(dim=(0, 2, 3))[:, None, None], reference.std(dim=(0, 2, 3))[:, None, None]
    data = sw.load_images("train", 50, 16, 0)
    net = SmallCNN(width=report["model"].config.width, generator=make_generator(0))
    train_classifier(net, (data.images - mean) / std, data.class_index, 3, make_generator(0), lr=3e-3, progress=False)
    for (k, v), w in zip(report["model"].state_dict().items(), net.state_dict().values()):
        assert torch.equal(v, w), k
    assert report["steps"] == 3 and report["config"]["training"]["n_train"] == 50
