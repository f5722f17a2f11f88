"""The GPT of chapter 2: shapes, causality, the KV cache, bad input, and that it learns captions."""

import pytest
import torch

from handbook import shapeworld as sw
from handbook.device import make_generator
from handbook.language import (caption_corpus, evaluate_loss, random_windows, sample_captions, token_stream,
                               train_language_model, valid_fraction)
from handbook.transformer import GPT, GPTConfig, TransformerBlock, sample_next_token


def _model(**overrides):
    torch.manual_seed(0)
    config = dict(vocab_size=11, block_size=16, n_layer=2, n_heads=2, d_model=16)
    return GPT(GPTConfig(**{**config, **overrides}))


@pytest.mark.parametrize("overrides", [{}, {"positional": "sinusoidal"}, {"norm": "post"}, {"residual": False}])
def test_forward_shapes_and_loss(overrides):
    model = _model(**overrides)
    idx = torch.randint(11, (3, 9), generator=make_generator(0))
    logits, loss = model(idx)
    assert logits.shape == (3, 9, 11) and loss is None
    targets = torch.randint(11, (3, 9), generator=make_generator(1))
    logits, loss = model(idx, targets=targets)
    # A new model knows nothing: its loss is close to that of a uniform guess, log(V) (the
    # sinusoidal variant's unit-scale embeddings give it logits of about unit spread: a bit above).
    tolerance = 1.0 if overrides.get("positional") == "sinusoidal" else 0.3
    assert loss.item() == pytest.approx(torch.log(torch.tensor(11.0)).item(), abs=tolerance)


def test_every_parameter_gets_a_gradient():
    model = _model()
    idx = torch.randint(11, (2, 8), generator=make_generator(1))
    model(idx, targets=idx)[1].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_output_head_is_tied_to_the_token_embedding():
    model = _model()
    assert model.lm_head.weight is model.token_embedding.weight
    assert model.num_parameters() == sum(p.numel() for p in set(model.parameters()))


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_causality_changing_token_k_leaves_earlier_logits_bit_identical(positional):
    model = _model(positional=positional).eval()
    idx = torch.randint(11, (2, 12), generator=make_generator(2))
    changed = idx.clone()
    k = 7
    changed[:, k] = (idx[:, k] + 1) % 11
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :k], b[:, :k]), "logits before position k must not depend on token k"
    assert not torch.allclose(a[:, k:], b[:, k:]), "logits from position k on must depend on token k"


def test_a_generator_fixes_the_weights_and_leaves_the_global_stream_alone():
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_heads=2, d_model=16, positional="sinusoidal")
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a = GPT(config, generator=make_generator(1))
    assert torch.equal(torch.rand(3), expected), "building with a generator must not move the global stream"
    b, c = GPT(config, generator=make_generator(1)), GPT(config, generator=make_generator(2))
    for name, weight in a.state_dict().items():
        assert torch.equal(weight, b.state_dict()[name]), name
    for name in ("token_embedding.weight", "blocks.0.attn.q_proj.weight", "blocks.1.mlp.fc2.weight"):
        assert not torch.equal(a.state_dict()[name], c.state_dict()[name]), name
    with pytest.raises(ValueError, match="generator"):
        GPT(config, generator=0)


# GPT(config) after torch.manual_seed(0), recorded before GPT took a generator: the notebook's quoted
# numbers depend on these weights. The numbers that follow on the global stream after building
# (how many draws building made) must match exactly; the weights within a rounding error, since
# normal_ rounds differently on CPUs with and without AVX2 (other draws differ in the first digit).
RECORDED_SEED_0 = {
    "learned": {"token_embedding.weight": [0.0071778609, 0.0078189513, 0.0150498729],
                "blocks.0.attn.q_proj.weight": [-0.0118403025, -0.0334314629, 0.0030433647],
                "blocks.1.mlp.fc2.weight": [-0.0033307313, 0.0079011461, -0.0103883119],
                "next": [0.3604159951, 0.4234471917, 0.4759244919]},
    "sinusoidal": {"token_embedding.weight": [0.1741606891, 0.1282334030, 0.1518874019],
                   "blocks.0.attn.q_proj.weight": [0.0211739540, 0.0603277609, 0.0457802229],
                   "blocks.1.mlp.fc2.weight": [-0.0019048674, -0.0076594660, 0.0006401562],
                   "next": [0.7679477930, 0.4391274452, 0.0458340645]},
}


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_without_a_generator_the_weights_are_those_gpt_always_had(positional):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_heads=2, d_model=16, positional=positional))
    recorded = RECORDED_SEED_0[positional]
    assert torch.rand(3).tolist() == pytest.approx(recorded["next"], rel=1e-7, abs=0)
    for name, weight in model.state_dict().items():
        if name in recorded:
            assert weight[0, :3].tolist() == pytest.approx(recorded[name], rel=1e-5, abs=1e-9), name


def test_attention_maps_are_taken_in_eval_mode_and_not_kept():
    model = _model(dropout=0.5).train()
    idx = torch.randint(11, (2, 6), generator=make_generator(8))
    maps = model.attention_maps(idx)
    assert model.training, "attention_maps must give the model back in the mode it found it"
    assert all(block.last_attention is None for block in model.blocks), "a batch's maps must not stay in the model"
    assert len(maps) == 2 and all(m.shape == (2, 2, 6, 6) for m in maps)
    # Dropout off (eval mode): every row of weights sums to 1, and a second call gives the same maps.
    for m, again in zip(maps, model.attention_maps(idx)):
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 2, 6))
        assert torch.equal(m, again) and not m.requires_grad
    model.eval().attention_maps(idx)
    assert not model.training


def test_cached_and_uncached_generation_give_the_same_tokens():
    model = _model()
    prompt = torch.randint(11, (4, 3), generator=make_generator(3))
    for kwargs in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": 5}):
        fast = model.generate(prompt, 12, generator=make_generator(4), use_cache=True, **kwargs)
        slow = model.generate(prompt, 12, generator=make_generator(4), use_cache=False, **kwargs)
        assert fast.shape == (4, 15) and torch.equal(fast[:, :3], prompt)
        assert torch.equal(fast, slow)


def test_generation_is_reproducible_with_a_generator():
    model = _model()
    prompt = torch.zeros(2, 1, dtype=torch.long)
    a = model.generate(prompt, 10, generator=make_generator(5))
    b = model.generate(prompt, 10, generator=make_generator(5))
    c = model.generate(prompt, 10, generator=make_generator(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generation_stops_at_eos_when_every_sequence_has_ended():
    model = _model()
    with torch.no_grad():  # make token 2 overwhelmingly likely after anything
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(torch.nn.functional.one_hot(torch.tensor(0), 16).float())  # the head sees e_0
        model.lm_head.weight[2, 0] = 10.0
    out = model.generate(torch.zeros(3, 1, dtype=torch.long), 10, temperature=0.0, eos_id=2)
    assert out.shape[1] < 11 and (out[:, -1] == 2).all()


def test_top_k_and_temperature():
    logits = torch.tensor([[0.0, 1.0, 5.0, 2.0]])
    draws = torch.cat([sample_next_token(logits, top_k=2, generator=make_generator(s)) for s in range(50)])
    assert set(draws.flatten().tolist()) <= {2, 3}, "top-k=2 keeps only the two largest logits"
    assert sample_next_token(logits, temperature=0.0).item() == 2
    hot = torch.cat([sample_next_token(logits, temperature=100.0, generator=make_generator(s)) for s in range(200)])
    assert len(set(hot.flatten().tolist())) == 4, "a high temperature flattens the distribution"


def test_bad_input_is_rejected_with_clear_errors():
    with pytest.raises(ValueError, match="d_model.*n_heads"):
        GPTConfig(vocab_size=5, block_size=8, n_heads=3, d_model=16)
    with pytest.raises(ValueError, match="positional"):
        GPTConfig(vocab_size=5, block_size=8, positional="rotary")
    with pytest.raises(ValueError, match="norm"):
        GPTConfig(vocab_size=5, block_size=8, norm="sandwich")
    with pytest.raises(dataclasses_frozen_error()):
        GPTConfig(vocab_size=5, block_size=8).n_layer = 3
    model = _model()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.full((1, 4), 11, dtype=torch.long))
    with pytest.raises(ValueError, match="idx"):
        model(torch.zeros(4))
    with pytest.raises(ValueError, match="targets"):
        model(torch.zeros(1, 4, dtype=torch.long), targets=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.zeros(1, 10, dtype=torch.long), 7)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 2, top_k=0)


def dataclasses_frozen_error():
    import dataclasses
    return dataclasses.FrozenInstanceError


def test_post_ln_and_no_residual_blocks_behave_as_documented():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, generator=make_generator(7))
    post = TransformerBlock(8, 2, norm="post")
    y = post(x)
    # post-LN ends in a LayerNorm (weight 1, bias 0 at init): every token has mean 0, variance 1.
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    block = TransformerBlock(8, 2, residual=False)
    with torch.no_grad():
        block.mlp.fc2.weight.zero_()
        block.mlp.fc2.bias.zero_()
    assert (block(x) == 0).all(), "without a residual, a block whose MLP writes zeros outputs zeros"


def test_language_data_windows_are_shifted_by_one():
    tok = sw.CaptionTokenizer()
    stream = token_stream(caption_corpus(50, make_generator(0)), tok)
    assert stream[0] == tok.bos_id
    x, y = random_windows(stream, 4, 10, make_generator(1))
    assert x.shape == y.shape == (4, 10)
    assert torch.equal(x[:, 1:], y[:, :-1])


@pytest.mark.slow
def test_a_small_gpt_learns_the_caption_grammar():
    tok = sw.CaptionTokenizer()
    g = make_generator(0)
    stream = token_stream(caption_corpus(4000, g), tok)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_heads=2, d_model=32))
    before = valid_fraction(sample_captions(model, tok, 100, make_generator(1)))
    train_language_model(model, stream, 150, g, batch_size=16, progress=False)
    captions = sample_captions(model, tok, 200, make_generator(2))
    assert before < 0.05
    assert valid_fraction(captions) > 0.85, captions[:10]
    assert evaluate_loss(model, stream, 32, make_generator(3)) < 1.0
