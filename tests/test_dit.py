"""The Diffusion Transformer (handbook.dit) and the caption encoder it shares with chapter 7."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from handbook import diffusion, dit
from handbook.caption_encoder import TOKENIZER, CaptionEncoder
from handbook.shapeworld import check_prompt, encode_prompts
from handbook.dit import CONDITIONINGS, DiT, DiTBlock, DiTConfig, modulate


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _inputs(config, B=3, seed=0):
    g = _gen(seed)
    x = torch.randn(B, config.in_channels, config.input_size, config.input_size, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    if config.condition == "class":
        cond = torch.randint(0, config.num_classes + 1, (B,), generator=g)
    else:
        cond = encode_prompts(["a large red cube seen from above", "a small blue torus", ""][:B]
                              + ["a large green cone"] * max(0, B - 3), config.caption_length)
    return x, t, cond


def _scrambled(model, seed=1):
    """The model with every parameter redrawn (so zero-initialised layers no longer hide anything)."""
    g = _gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


CONFIGS = [dict(condition="class", num_classes=5), dict(condition="caption")]


def test_modulate_is_x_times_one_plus_scale_plus_shift():
    x, shift, scale = torch.randn(2, 5, 4), torch.randn(2, 4), torch.randn(2, 4)
    assert torch.allclose(modulate(x, shift, scale), x * (1 + scale[:, None]) + shift[:, None])
    assert torch.equal(modulate(x, torch.zeros(2, 4), torch.zeros(2, 4)), x)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("kind", CONFIGS)
def test_a_new_model_outputs_exactly_zero(conditioning, kind):
    config = DiTConfig.tiny(conditioning=conditioning, **kind)
    out = DiT(config, generator=_gen(0))(*_inputs(config))
    assert out.shape == (3, 3, 8, 8) and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("kind", CONFIGS)
def test_adaln_zero_blocks_start_as_the_identity(kind):
    config = DiTConfig.tiny(**kind)
    model = DiT(config, generator=_gen(0))
    tokens, c = torch.randn(3, config.num_patches, 32), torch.randn(3, 32)
    for block in model.blocks:
        assert torch.equal(block(tokens, c), tokens)
    # adaLN without gates is not the identity: its modulation is drawn, not zero
    plain = DiT(DiTConfig.tiny(conditioning="adaln", **kind), generator=_gen(0))
    assert not torch.allclose(plain.blocks[0](tokens, c), tokens)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("patch_size", [1, 2, 4, 8])
def test_output_shape_for_every_patch_size_and_conditioning(patch_size, conditioning):
    config = DiTConfig.tiny(patch_size=patch_size, conditioning=conditioning, out_channels=6)
    model = _scrambled(DiT(config, generator=_gen(0)))
    out = model(*_inputs(config, B=2))
    assert out.shape == (2, 6, 8, 8) and torch.isfinite(out).all()
    assert config.num_patches == (8 // patch_size) ** 2


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("kind", CONFIGS)
def test_every_parameter_gets_a_gradient_after_two_optimiser_steps(conditioning, kind):
    """From the zero init, the gradient reaches the network layer by layer: at first only the final
    Linear has one (everything before it is multiplied by its zeros); one step later the adaLN
    modulations (the gates) too; after two steps every parameter."""
    config = DiTConfig.tiny(conditioning=conditioning, **kind)
    model = DiT(config, generator=_gen(0))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    x, t, cond = _inputs(config)

    def silent():
        optimiser.zero_grad()
        (model(x, t, cond) - x).pow(2).mean().backward()
        return {name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0}

    everything = {name for name, _ in model.named_parameters()}
    assert everything - silent() == {"final_layer.linear.weight", "final_layer.linear.bias"}
    optimiser.step()
    if conditioning == "adaln_zero":  # the gates are still 0: attention and MLP get no gradient yet
        assert {name for name in silent() if name.startswith("blocks.0.")} == {
            f"blocks.0.{m}.{w}" for m in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj",
                                          "mlp.fc1", "mlp.fc2") for w in ("weight", "bias")}
    else:
        silent()
    optimiser.step()
    assert silent() == set()


def test_the_condition_changes_the_output_and_none_is_the_null_condition():
    for kind in CONFIGS:
        config = DiTConfig.tiny(**kind)
        model = _scrambled(DiT(config, generator=_gen(0))).eval()
        x, t, cond = _inputs(config)
        other = cond.flip(0) if config.condition == "caption" else (cond + 1) % (config.num_classes + 1)
        assert not torch.allclose(model(x, t, cond), model(x, t, other))
        assert torch.equal(model(x, t, None), model(x, t, model.null_condition(3)))


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_caption_padding_changes_nothing(conditioning):
    """Padding is masked everywhere (the encoder's attention and pooling, in-context and cross-attention):
    whatever the padding token's embedding, the output is the same."""
    config = DiTConfig.tiny(conditioning=conditioning)
    model = _scrambled(DiT(config, generator=_gen(0))).eval()
    x, t, cond = _inputs(config)
    before = model(x, t, cond)
    with torch.no_grad():
        model.y_embedder.token_embed.weight[TOKENIZER.pad_id] = 100.0
    assert torch.allclose(model(x, t, cond), before, atol=1e-5)


def test_same_generator_same_model():
    config = DiTConfig.tiny()
    a, b, c = (DiT(config, generator=_gen(s)) for s in (0, 0, 1))
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    state = torch.get_rng_state()
    DiT(config, generator=_gen(0))
    assert torch.equal(state, torch.get_rng_state())  # building a model never moves the global stream


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_diffusion_loss_and_guided_ddim_run_end_to_end(conditioning):
    config = DiTConfig.tiny(conditioning=conditioning)
    model = DiT(config, generator=_gen(0))
    schedule = diffusion.NoiseSchedule.linear(1000)
    x0, _, cond = _inputs(config)
    loss = diffusion.training_loss(model, schedule, x0.clamp(-1, 1), cond, generator=_gen(1), p_uncond=0.5,
                                   null_cond=model.null_condition())
    loss.backward()
    assert torch.isfinite(loss)
    images = dit.generate(["a large red cube seen from above", "a small green cone"], _scrambled(model),
                          steps=3, guidance_scale=2.0, generator=_gen(2))
    assert images.shape == (2, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
    again = dit.generate(["a large red cube seen from above", "a small green cone"], model, steps=3,
                         guidance_scale=2.0, generator=_gen(2))
    assert torch.equal(images, again)


def test_class_conditional_ddim_with_the_null_label():
    config = DiTConfig.tiny(condition="class", num_classes=4)
    model = _scrambled(DiT(config, generator=_gen(0))).eval()
    x = diffusion.ddim_sample(model, diffusion.NoiseSchedule.linear(1000), (2, 3, 8, 8), steps=3,
                              cond=torch.tensor([0, 3]), guidance_scale=1.5, null_cond=model.null_condition(),
                              generator=_gen(0), progress=False)
    assert x.shape == (2, 3, 8, 8) and torch.isfinite(x).all()


def test_an_adaln_zero_block_equals_diffusers_basic_transformer_block():
    attention = pytest.importorskip("diffusers.models.attention")
    D, heads = 32, 4
    ours = _scrambled(DiTBlock(D, heads, conditioning="adaln_zero")).eval()
    ref = attention.BasicTransformerBlock(D, heads, D // heads, norm_type="ada_norm_zero", num_embeds_ada_norm=10,
                                          activation_fn="gelu-approximate", norm_elementwise_affine=False,
                                          norm_eps=1e-6, attention_bias=True).eval()
    mapping = {
        "norm1.linear": ours.adaLN_modulation[1], "attn1.to_q": ours.attn.q_proj, "attn1.to_k": ours.attn.k_proj,
        "attn1.to_v": ours.attn.v_proj, "attn1.to_out.0": ours.attn.out_proj, "ff.net.0.proj": ours.mlp.fc1,
        "ff.net.2": ours.mlp.fc2,
    }
    with torch.no_grad():
        modules = dict(ref.named_modules())
        for name, layer in mapping.items():
            modules[name].weight.copy_(layer.weight)
            modules[name].bias.copy_(layer.bias)
    g = _gen(3)
    x = torch.randn(2, 10, D, generator=g)
    timestep, labels = torch.tensor([3, 700]), torch.tensor([1, 9])
    c = ref.norm1.emb(timestep, labels, hidden_dtype=torch.float32)      # diffusers' t + y embedding: (B, D)
    expected = ref(x, timestep=timestep, class_labels=labels)
    assert torch.allclose(ours(x, c), expected, atol=1e-5)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("kind", CONFIGS)
@pytest.mark.parametrize("patch_size", [2, 4])
def test_gflops_equals_the_flop_counter(conditioning, kind, patch_size):
    config = DiTConfig.tiny(conditioning=conditioning, patch_size=patch_size, input_size=16, **kind)
    model = DiT(config, generator=_gen(0))
    x, t, cond = _inputs(config, B=1)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, cond)
    assert dit.gflops(config) == pytest.approx(counter.get_total_flops() / 1e9, rel=1e-9)


def test_gflops_of_the_papers_models():
    """The paper's Table 1 counts multiply-adds: DiT-XL/2 118.6, DiT-S/8 0.36 'Gflops'."""
    assert dit.gflops(DiTConfig.paper("XL/2")) / 2 == pytest.approx(118.6, rel=0.01)
    assert dit.gflops(DiTConfig.paper("S/8")) / 2 == pytest.approx(0.36, rel=0.05)
    assert dit.gflops(DiTConfig.paper("B/4")) / 2 == pytest.approx(5.56, rel=0.02)
    assert DiTConfig.paper("L/2").depth == 24


def test_caption_encoder_pools_the_words_only():
    encoder = CaptionEncoder(16, n_layers=1, n_heads=2, generator=_gen(0)).eval()
    ids = encode_prompts(["a large red cube", "a small blue torus seen from the side"])
    tokens, keep, pooled = encoder(ids)
    assert tokens.shape == (2, ids.shape[1], 16) and keep.tolist() == (ids != TOKENIZER.pad_id).tolist()
    assert torch.allclose(pooled[0], tokens[0, keep[0]].mean(0), atol=1e-6)
    short = encode_prompts(["a large red cube"], length=6)                    # no padding at all
    assert torch.allclose(encoder(short)[2][0], pooled[0], atol=1e-6)         # padding changes nothing


def test_caption_encoder_words_weigh_as_much_as_positions_at_init():
    """The shipped DiT's first encoder (embeddings of std 0.02 beside sinusoids of amplitude 1) ended
    with "red" and "blue" as one vector. Inside a DiT too (whose own init draws embeddings at 0.02),
    a word's embedding enters with std 1, and two captions that differ in one word differ at that word."""
    model = DiT(DiTConfig.shapeworld(), generator=_gen(0))
    encoder = model.y_embedder
    words = encoder.token_embed.weight * encoder.embedding_scale                 # (V, D)
    assert words.std().item() == pytest.approx(1.0, rel=0.1)
    assert encoder.positions.pow(2).mean().item() == pytest.approx(0.5, rel=0.01)  # sin^2 and cos^2: 1/2
    ids = encode_prompts(["a large red cube seen from above", "a large blue cube seen from above"])
    colour = ids[0].tolist().index(TOKENIZER.encode("a large red cube")[3])       # the colour's position
    tokens = encoder(ids)[0][:, colour]                                          # (2, D)
    assert torch.nn.functional.cosine_similarity(tokens[0], tokens[1], dim=0).item() < 0.8


def test_prompts_outside_the_grammar_are_refused_with_the_word():
    assert check_prompt("a large red cube seen from above") == "a large red cube seen from above"
    assert check_prompt("") == ""
    with pytest.raises(ValueError, match=r"prompt 'a large red pyramid': unknown word 'pyramid'; the words are a small"):
        check_prompt("a large red pyramid")
    with pytest.raises(ValueError, match=r"prompt 'red a large cube'"):
        check_prompt("red a large cube")
    with pytest.raises(ValueError, match="prompts: expected a list of str"):
        encode_prompts("a large red cube")


@pytest.mark.parametrize("make,match", [
    (lambda: DiTConfig.tiny(input_size=10, patch_size=4), "input_size"),
    (lambda: DiTConfig.tiny(hidden_size=30, n_heads=4), "hidden_size"),
    (lambda: DiTConfig.tiny(conditioning="film"), "conditioning"),
    (lambda: DiTConfig.tiny(condition="text"), "condition"),
    (lambda: DiTConfig.tiny(condition="class"), "num_classes"),
    (lambda: DiTConfig.tiny(p_uncond=1.0), "p_uncond"),
    (lambda: DiTConfig.paper("XXL/2"), "name: expected one of"),
    (lambda: DiTConfig.paper("B/3"), "name"),
    (lambda: DiT("tiny"), "config"),
])
def test_bad_configs_raise_a_clear_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise_a_clear_error():
    caption = DiT(DiTConfig.tiny(), generator=_gen(0))
    labels = DiT(DiTConfig.tiny(condition="class", num_classes=4), generator=_gen(0))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    cases = [
        (lambda: caption(torch.randn(2, 3, 10, 10), t), "x: expected"),
        (lambda: caption(torch.randn(2, 1, 8, 8), t), "x: expected"),
        (lambda: caption(x, torch.tensor([1, 2, 3])), "t: expected"),
        (lambda: caption(x, t, encode_prompts(["a large red cube"] * 3)), "cond: expected"),  # a caption batch of 3
        (lambda: caption(x, t, encode_prompts(["a large red cube"] * 2).float()), "cond: expected"),
        (lambda: labels(x, t, torch.tensor([0, 5])), r"cond: expected values in 0..4"),
        (lambda: labels(x, t, torch.tensor([0, 1, 2])), "cond: expected 2 values"),
        (lambda: dit.generate(["a big red cube"], caption, steps=2), "unknown word 'big'"),
        (lambda: dit.generate(["a red cube"], labels, steps=2), "caption-conditioned"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
