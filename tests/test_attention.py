"""Attention: parity with PyTorch's reference implementations, masks, and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from handbook.attention import KVCache, MultiHeadAttention, causal_mask, scaled_dot_product_attention
from handbook.embeddings import sinusoidal_positional_encoding


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_causal_mask_is_lower_triangle_with_diagonal():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert m.tolist() == [[True, False, False, False], [True, True, False, False],
                          [True, True, True, False], [True, True, True, True]]
    with pytest.raises(ValueError, match="T"):
        causal_mask(0)


@pytest.mark.parametrize("mask_kind", ["none", "causal", "random"])
def test_attention_equals_torch_sdpa(mask_kind):
    q, k, v = _randn(2, 3, 5, 8, seed=1), _randn(2, 3, 7, 8, seed=2), _randn(2, 3, 7, 4, seed=3)
    if mask_kind == "none":
        mask = None
    elif mask_kind == "causal":
        q = _randn(2, 3, 7, 8, seed=1)
        mask = causal_mask(7)
    else:
        mask = _randn(2, 1, 5, 7, seed=4) > 0
        mask[..., 0] = True  # every query may attend somewhere: the reference is NaN otherwise
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    if mask is not None:
        assert (weights[~mask.expand_as(weights)] == 0).all(), "masked keys must get exactly zero weight"


def test_fully_masked_query_gets_zero_output_and_finite_gradients():
    q = _randn(1, 3, 4, seed=5).requires_grad_()
    k, v = _randn(1, 5, 4, seed=6).requires_grad_(), _randn(1, 5, 2, seed=7).requires_grad_()
    mask = torch.ones(1, 3, 5, dtype=torch.bool)
    mask[0, 1] = False  # query 1 may attend to nothing
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    assert (out[0, 1] == 0).all() and (weights[0, 1] == 0).all()
    torch.testing.assert_close(weights[0, [0, 2]].sum(-1), torch.ones(2))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[0, 1] == 0).all(), "a query that sees nothing has no influence on the output"


def test_scaling_keeps_score_variance_near_one():
    # Why 1/sqrt(D): unit-variance q and k give dot products of variance D.
    D = 256
    q, k = _randn(1, 512, D, seed=8), _randn(1, 512, D, seed=9)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    assert 0.8 < scores.var().item() < 1.2


@pytest.mark.parametrize("bad_mask, message", [
    (torch.ones(3, 4, dtype=torch.bool), "mask"),          # Tq wrong
    (torch.ones(5, 5, dtype=torch.bool), "mask"),          # Tk wrong
    (torch.ones(5, 4), "mask: expected a bool tensor"),    # not boolean
    (torch.ones(7, 5, 4, dtype=torch.bool), "mask"),       # leading axis does not broadcast
])
def test_bad_masks_are_rejected(bad_mask, message):
    q, k, v = _randn(2, 5, 8), _randn(2, 4, 8), _randn(2, 4, 8)
    with pytest.raises(ValueError, match=message):
        scaled_dot_product_attention(q, k, v, mask=bad_mask)


def test_mismatched_q_k_v_are_rejected():
    with pytest.raises(ValueError, match=r"k: .*D=8"):  # k must be as wide as q
        scaled_dot_product_attention(_randn(2, 5, 8), _randn(2, 4, 6), _randn(2, 4, 6))
    with pytest.raises(ValueError, match=r"v: .*S=4"):  # one value per key
        scaled_dot_product_attention(_randn(2, 5, 8), _randn(2, 4, 8), _randn(2, 3, 8))


def _copy_into_torch_mha(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    D, H = ours.d_model, ours.n_heads
    same_dims = ours.d_context is None
    ref = nn.MultiheadAttention(D, H, batch_first=True, kdim=ours.d_context, vdim=ours.d_context)
    with torch.no_grad():
        if same_dims:
            ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        else:
            ref.q_proj_weight.copy_(ours.q_proj.weight)
            ref.k_proj_weight.copy_(ours.k_proj.weight)
            ref.v_proj_weight.copy_(ours.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_equals_torch(causal):
    torch.manual_seed(0)
    ours = MultiHeadAttention(16, 4)
    ref = _copy_into_torch_mha(ours)
    x = _randn(3, 6, 16, seed=10)
    mask = causal_mask(6) if causal else None
    y, w = ours(x, mask=mask, return_weights=True)
    # nn.MultiheadAttention's boolean mask means True = *blocked*: the opposite polarity.
    y_ref, w_ref = ref(x, x, x, attn_mask=None if mask is None else ~mask, average_attn_weights=False)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, w_ref, atol=1e-6, rtol=1e-5)


def test_cross_attention_equals_torch_with_other_key_width():
    torch.manual_seed(1)
    ours = MultiHeadAttention(16, 2, d_context=10)
    ref = _copy_into_torch_mha(ours)
    x, context = _randn(2, 5, 16, seed=11), _randn(2, 3, 10, seed=12)
    y = ours(x, context=context)
    y_ref, _ = ref(x, context, context)
    assert y.shape == (2, 5, 16)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="context"):
        ours(x)  # built for cross-attention: a context is required
    with pytest.raises(ValueError, match="context"):
        ours(x, context=_randn(2, 3, 16))


def test_multi_head_attention_bad_input():
    with pytest.raises(ValueError, match="d_model.*n_heads"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="x"):
        mha(_randn(2, 5, 6))
    with pytest.raises(ValueError, match="mask"):
        mha(_randn(2, 5, 8), mask=torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        mha(_randn(2, 5, 8), mask=torch.ones(3, 5, 5, dtype=torch.bool))  # (B=3, T, S) but B is 2


def test_per_sequence_mask_is_shared_by_heads():
    torch.manual_seed(2)
    mha = MultiHeadAttention(8, 2)
    x = _randn(2, 4, 8, seed=13)
    keep = torch.tensor([[True, True, True, True], [True, True, False, False]])  # sequence 2 is padded
    mask = keep[:, None, :].expand(2, 4, 4)  # (B, T, S)
    _, w = mha(x, mask=mask, return_weights=True)
    assert (w[1, :, :, 2:] == 0).all() and (w[0, :, :, 2:] > 0).all()


def test_kv_cache_gives_the_same_outputs_as_full_attention():
    torch.manual_seed(3)
    mha = MultiHeadAttention(8, 2).eval()
    x = _randn(2, 6, 8, seed=14)
    full = mha(x, mask=causal_mask(6))
    cache = KVCache()
    prefix = mha(x[:, :4], mask=causal_mask(4), cache=cache)
    steps = [mha(x[:, t:t + 1], cache=cache) for t in (4, 5)]
    assert cache.length == 6
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, atol=1e-6, rtol=1e-5)


def test_sinusoidal_encoding_is_interleaved_sin_cos():
    pe = sinusoidal_positional_encoding(50, 16)
    assert pe.shape == (50, 16)
    pos, i = 7, 3
    angle = pos / 10000 ** (2 * i / 16)
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert (pe[0, 0::2] == 0).all() and (pe[0, 1::2] == 1).all()
    # Relative positions are linear: every (sin, cos) pair of PE[pos + k] is PE[pos]'s pair rotated.
    k = 5
    for j in range(8):
        w = 1 / 10000 ** (2 * j / 16)
        rot = torch.tensor([[math.cos(k * w), -math.sin(k * w)], [math.sin(k * w), math.cos(k * w)]])
        torch.testing.assert_close(pe[10:20, 2 * j:2 * j + 2] @ rot, pe[15:25, 2 * j:2 * j + 2], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="d_model"):
        sinusoidal_positional_encoding(5, 7)
