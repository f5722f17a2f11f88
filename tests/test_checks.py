"""The shared input checks (handbook.checks): each accepts what it should, returns what it says, and
refuses the rest with a ValueError that names the argument and says what was expected."""

import math

import pytest
import torch

from handbook import checks


def test_tensor_letters_sizes_and_at_least():
    assert checks.tensor("x", torch.zeros(2, 3, 4, 4), "B C H W", C=3) == (2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"x: expected a 4-D float tensor \(B, C=3, H, W\)"):
        checks.tensor("x", torch.zeros(2, 1, 4, 4), "B C H W", C=3)
    assert checks.tensor("features", torch.zeros(2, 5), "N F", at_least={"N": 2}) == (2, 5)
    with pytest.raises(ValueError, match=r"features: expected a 2-D float tensor \(N>=2, F\)"):
        checks.tensor("features", torch.zeros(1, 5), "N F", at_least={"N": 2})


def test_tensor_index_dtype_is_what_an_embedding_takes():
    for dtype in (torch.int64, torch.int32):
        assert checks.tensor("idx", torch.zeros(2, 3, dtype=dtype), "B T", dtype="index") == (2, 3)
    for dtype in (torch.uint8, torch.int16, torch.float32, torch.bool):
        with pytest.raises(ValueError, match=r"idx: expected a 2-D int64 or int32 tensor \(B, T\)"):
            checks.tensor("idx", torch.zeros(2, 3, dtype=dtype), "B T", dtype="index")


def test_shapes_agree_across_tensors():
    q, k, v = torch.zeros(2, 5, 8), torch.zeros(2, 4, 8), torch.zeros(2, 4, 6)
    assert checks.shapes(q=(q, "... T D"), k=(k, "... S D"), v=(v, "... S Dv")) == {"T": 5, "D": 8, "S": 4, "Dv": 6}
    with pytest.raises(ValueError, match=r"k: .*D=8"):
        checks.shapes(q=(q, "... T D"), k=(torch.zeros(2, 4, 6), "... S D"))
    with pytest.raises(ValueError, match=r"k: expected the leading dimensions \(2,\) of q"):
        checks.shapes(q=(q, "... T D"), k=(torch.zeros(3, 4, 8), "... S D"))


def test_shapes_fixed_sizes():
    x = torch.zeros(2, 5, 8)
    assert checks.shapes(x=(x, "B T D"), c=(torch.zeros(2, 3, 4), "B S C"), sizes={"D": 8, "C": 4})["S"] == 3
    with pytest.raises(ValueError, match=r"x: expected a 3-D float tensor \(B, T, D=6\)"):
        checks.shapes(x=(x, "B T D"), sizes={"D": 6})
    with pytest.raises(ValueError, match=r"c: expected a 3-D float tensor \(B=2, S, C=4\)"):
        checks.shapes(x=(x, "B T D"), c=(torch.zeros(2, 3, 5), "B S C"), sizes={"C": 4})


def test_shapes_masks_broadcast_to_the_letters_found():
    q, k = torch.zeros(2, 5, 8), torch.zeros(2, 4, 8)
    for good in (None, torch.ones(5, 4, dtype=torch.bool), torch.ones(2, 1, 4, dtype=torch.bool)):
        checks.shapes(q=(q, "... T D"), k=(k, "... S D"), masks={"mask": (good, "... T S")})
    for bad in (torch.ones(5, 5, dtype=torch.bool), torch.ones(5, 4), torch.ones(3, 5, 4, dtype=torch.bool)):
        with pytest.raises(ValueError, match=r"mask: expected a bool tensor that broadcasts to \(2, 5, 4\)"):
            checks.shapes(q=(q, "... T D"), k=(k, "... S D"), masks={"mask": (bad, "... T S")})


def test_mask():
    m = torch.ones(4, dtype=torch.bool)
    assert checks.mask("mask", m, (3, 4)) is m and checks.mask("mask", None, (3, 4)) is None
    with pytest.raises(ValueError, match=r"mask: expected a bool tensor that broadcasts to \(3, 4\)"):
        checks.mask("mask", torch.ones(3, 4, 1, dtype=torch.bool), (3, 4))  # would grow the scores


def test_positive_int_maximum_and_none():
    assert checks.positive_int("k", 3, maximum=3) == 3 and checks.positive_int("k", None, none_ok=True) is None
    with pytest.raises(ValueError, match=r"k: expected an int in \[1, 3\], got 4"):
        checks.positive_int("k", 4, maximum=3)
    with pytest.raises(ValueError, match=r"k: expected an int >= 1 or None, got 0"):
        checks.positive_int("k", 0, none_ok=True)
    with pytest.raises(ValueError, match=r"k: expected an int >= 1, got None"):
        checks.positive_int("k", None)


def test_positive_ints():
    checks.positive_ints(a=1, b=2)
    with pytest.raises(ValueError, match=r"b: expected an int >= 1, got True"):
        checks.positive_ints(a=1, b=True)


def test_divisible():
    assert checks.divisible("d_model", 12, "n_heads", 3) == 12
    with pytest.raises(ValueError, match=r"d_model: expected an int >= 1, a multiple of 3 \(n_heads=3\), got 10"):
        checks.divisible("d_model", 10, "n_heads", 3)
    for heads in (0, -2, 2.0):  # the divisor is a positive int too (10 % -2 == 0)
        with pytest.raises(ValueError, match=r"n_heads: expected an int >= 1"):
            checks.divisible("d_model", 10, "n_heads", heads)


def test_int_tuple():
    assert checks.int_tuple("shape", [2, 3]) == (2, 3) and checks.int_tuple("shape", torch.Size([4])) == (4,)
    for bad in ((), (0, 2), (2, 2.0), (True,), 5, "ab"):
        with pytest.raises(ValueError, match=r"shape: expected a non-empty tuple of ints >= 1"):
            checks.int_tuple("shape", bad)


def test_batch():
    assert checks.batch("cond", torch.zeros(3, 7)) == 3 and checks.batch("cond", torch.zeros(2), 2) == 2
    with pytest.raises(ValueError, match=r"cond: expected a tensor with a batch dimension first, got"):
        checks.batch("cond", torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"cond: expected batch size 2 first, got a tensor \(3,\)"):
        checks.batch("cond", torch.zeros(3), 2)
    with pytest.raises(ValueError, match=r"x0: expected a batch of at least 1 first"):
        checks.batch("x0", torch.zeros(0, 2), min_size=1)
    with pytest.raises(ValueError, match=r"pred: expected a tensor with a batch dimension first and at least 2"):
        checks.batch("pred", torch.zeros(4), min_dims=2)


def test_same_shape():
    x = torch.zeros(4, 2)
    assert checks.same_shape(x0=x, eps=torch.ones(4, 2), noise=torch.ones(4, 2)) == (4, 2)
    with pytest.raises(ValueError, match=r"noise: expected the shape of x0 \(4, 2\), got a tensor \(4, 1\)"):
        checks.same_shape(x0=x, eps=x, noise=torch.zeros(4, 1))  # (4, 1) would broadcast silently
    with pytest.raises(ValueError, match=r"eps: expected the shape of x0"):
        checks.same_shape(x0=x, eps=[0.0])
    with pytest.raises(ValueError, match=r"x0: expected a tensor with a batch dimension first"):
        checks.same_shape(x0=[0.0], eps=x)
    with pytest.raises(ValueError, match=r"target: expected the shape of pred \(4, 2\) \(a float tensor\)"):
        checks.same_shape(dtype="float", pred=x, target=torch.zeros(4, 2, dtype=torch.long))


def test_extremes():
    assert checks.extremes(torch.tensor([0.5, -1.0, 2.0])) == "min -1 and max 2"
    assert checks.extremes(torch.zeros(0)) == "no values"


def test_within():
    betas = torch.tensor([0.1, 0.5])
    assert checks.within("betas", betas, 0, 1, open_low=True, open_high=True) is betas
    with pytest.raises(ValueError, match=r"betas: expected finite values in \(0, 1\), got min 0.1 and max 1"):
        checks.within("betas", torch.tensor([0.1, 1.0]), 0, 1, open_low=True, open_high=True)
    with pytest.raises(ValueError, match=r"images: expected finite values in \[0, 1\]"):
        checks.within("images", torch.tensor([0.0, math.nan]), 0, 1)
    with pytest.raises(ValueError, match=r"mu: expected finite values, got"):
        checks.within("mu", torch.tensor([0.0, math.inf]))
    with pytest.raises(ValueError, match=r"idx: expected values in 0\.\.9, got min 0 and max 10"):
        checks.within("idx", torch.tensor([0, 10]), 0, 9)
    checks.within("idx", torch.zeros(0, dtype=torch.long), 0, 9)  # nothing to check


def test_indices():
    assert checks.indices("t", 3, 0, 9).tolist() == 3
    t = checks.indices("t", torch.tensor([1, 2], dtype=torch.int32), 0, 9, batch=2)
    assert t.dtype == torch.long and t.tolist() == [1, 2]
    for bad in (2.0, True, torch.zeros(2), torch.zeros(2, 2, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"t: expected an int or a 1-D integer tensor"):
            checks.indices("t", bad, 0, 9)
    with pytest.raises(ValueError, match=r"t: expected 4 values \(one per batch element\), got 2"):
        checks.indices("t", torch.tensor([1, 2]), 0, 9, batch=4)
    with pytest.raises(ValueError, match=r"t_prev: expected values in -1\.\.9, got min -2"):
        checks.indices("t_prev", -2, -1, 9)


def test_given():
    assert checks.given("null_cond", 0, "for guidance") == 0
    with pytest.raises(ValueError, match=r"null_cond: required for guidance"):
        checks.given("null_cond", None, "for guidance")


def test_item_or_batch():
    cond = torch.tensor([[1, 2], [3, 4], [5, 6]])  # (B=3, 2)
    one = checks.item_or_batch("null_cond", [0, 0], "cond", cond, "for guidance")  # one item for all
    assert one.shape == (3, 2) and one.dtype == cond.dtype and one.eq(0).all()
    each = torch.arange(6).reshape(3, 2)
    assert torch.equal(checks.item_or_batch("null_cond", each, "cond", cond, "for guidance"), each)
    with pytest.raises(ValueError, match=r"cond: expected a tensor \(batch first\) for guidance"):
        checks.item_or_batch("null_cond", 0, "cond", [1, 2], "for guidance")
    with pytest.raises(ValueError, match=r"null_cond: required for guidance"):
        checks.item_or_batch("null_cond", None, "cond", cond, "for guidance")
    with pytest.raises(ValueError, match=r"null_cond's shape: expected one of"):
        checks.item_or_batch("null_cond", [0, 0, 0], "cond", cond, "for guidance")


def test_exclusive():
    checks.exclusive(noise=None, generator=None)
    checks.exclusive(noise=torch.zeros(1), generator=None)
    with pytest.raises(ValueError, match=r"noise and generator: pass at most one of them \(why\)"):
        checks.exclusive("why", noise=torch.zeros(1), generator=torch.Generator())


def test_choices():
    checks.choices(norm=("pre", ("pre", "post")), positional=("learned", ("learned", "sinusoidal")))
    with pytest.raises(ValueError, match=r"positional: expected one of \('learned', 'sinusoidal'\), got 'rotary'"):
        checks.choices(norm=("pre", ("pre", "post")), positional=("rotary", ("learned", "sinusoidal")))


def test_items():
    titles = ["a", "b"]
    assert checks.items("titles", titles, str, 2) is titles and checks.items("titles", None, str, none_ok=True) is None
    with pytest.raises(ValueError, match=r"caches: expected a list of 3 int or None, got list of 2"):
        checks.items("caches", [1, 2], int, 3, none_ok=True)
    with pytest.raises(ValueError, match=r"titles: expected a list of str, got list of 2"):
        checks.items("titles", ["a", 1], str)
    with pytest.raises(ValueError, match=r"titles: expected a list of str, got NoneType"):
        checks.items("titles", None, str)


def test_tensor_hint_ends_the_message():
    with pytest.raises(ValueError, match=r"images: expected a 4-D float tensor \(B, C, Hh=8, Ww=8\), got a tensor "
                                         r"\(1, 3, 4, 4\) float32; use dynamic sizes$"):
        checks.tensor("images", torch.zeros(1, 3, 4, 4), "B C Hh Ww", Hh=8, Ww=8, hint="use dynamic sizes")
    with pytest.raises(ValueError, match=r"float32$"):  # no hint, no tail
        checks.tensor("images", torch.zeros(1, 3, 4, 4), "B C Hh Ww", Hh=8)


def test_within_dims_checks_the_shape_first():
    betas = torch.tensor([0.1, 0.5], dtype=torch.float64)
    assert checks.within("betas", betas, 0, 1, dims="T", at_least={"T": 1}) is betas
    with pytest.raises(ValueError, match=r"betas: expected a 1-D tensor \(T>=1,\), got a tensor \(0,\)"):
        checks.within("betas", torch.zeros(0), 0, 1, dims="T", at_least={"T": 1})
    with pytest.raises(ValueError, match=r"betas: expected a 1-D tensor"):
        checks.within("betas", torch.full((1, 2), 0.5), 0, 1, dims="T")
    with pytest.raises(ValueError, match=r"ids: expected values in 0\.\.9"):  # any dtype
        checks.within("ids", torch.tensor([3, 12]), 0, 9, dims="N")


def test_int_tuple_length():
    assert checks.int_tuple("image_size", (8, 12), length=2) == (8, 12)
    for bad in ((16,), (1, 2, 3), (0, 4), 16):
        with pytest.raises(ValueError, match=r"image_size: expected a tuple of 2 ints >= 1, got"):
            checks.int_tuple("image_size", bad, length=2)


def test_divides():
    assert checks.divides("patch_size", 4, "the image size", (16, 8)) == 4
    with pytest.raises(ValueError, match=r"^patch_size 4 does not divide the image size 16x18$"):
        checks.divides("patch_size", 4, "the image size", (16, 18))
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=r"patch_size: expected an int >= 1"):
            checks.divides("patch_size", bad, "the image size", (16, 16))
    for sizes in ((0, 8), (8, 2.0)):
        with pytest.raises(ValueError, match=r"the image size: expected ints >= 1, got"):
            checks.divides("patch_size", 2, "the image size", sizes)


def test_reals():
    checks.reals(dropout=(0.0, 0, 1, "[)"), s=(0.5, 0, math.inf), beta=(0.1, 0, 1, "()"))
    with pytest.raises(ValueError, match=r"dropout: expected a finite number in \[0, 1\), got 1.0"):
        checks.reals(dropout=(1.0, 0, 1, "[)"))
    with pytest.raises(ValueError, match=r"beta_start: expected a finite number in \(0, inf\), got 0"):
        checks.reals(beta_start=(0, 0, math.inf, "()"), beta_end=(0.02, 0, 1))
    with pytest.raises(ValueError, match=r"beta_end: expected a finite number in \[0.1, 1\), got 0.01"):
        checks.reals(beta_start=(0.1, 0, 1), beta_end=(0.01, 0.1, 1, "[)"))  # a bound may be an earlier value
    with pytest.raises(ValueError, match=r"s: expected a number, got str"):
        checks.reals(s=("big", 0, 1))
    with pytest.raises(ValueError, match=r"s's bounds: expected one of"):
        checks.reals(s=(0.5, 0, 1, "[["))


def test_below():
    t = torch.tensor([5, 3])
    assert checks.below("t_prev", torch.tensor([4, -1]), "t", t).tolist() == [4, -1]
    with pytest.raises(ValueError, match=r"t_prev: expected t_prev < t, got t_prev=\[4, 3\] and t=\[5, 3\]"):
        checks.below("t_prev", torch.tensor([4, 3]), "t", t)
