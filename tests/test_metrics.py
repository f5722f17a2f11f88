"""Metrics: PSNR values, the Frechet distance against closed forms, judge accuracy and the FID."""

import math

import numpy as np
import pytest
import torch

from handbook.device import make_generator
from handbook.metrics import (
    feature_statistics,
    frechet_distance,
    judge_accuracy,
    judge_features,
    psnr,
    reference_fid,
    shapeworld_fid,
)

# ----------------------------------------------------------------------------------------- psnr


def test_psnr_known_values():
    target = torch.zeros(3, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1] += 0.5  # MSE 0.25 -> 10 log10(4) = 6.02 dB
    out = psnr(pred, target)
    assert out.shape == (3,)
    assert out[0].item() == pytest.approx(20.0, abs=1e-4)
    assert out[1].item() == pytest.approx(10 * math.log10(4), abs=1e-4)
    assert math.isinf(out[2].item()) and out[2] > 0  # identical images
    # The peak value scales the ratio: max 255 on 0.1 * 255 errors is the same 20 dB.
    assert psnr(pred[:1] * 255, target[:1], max_value=255.0).item() == pytest.approx(20.0, abs=1e-3)


def test_psnr_rejects_bad_input():
    with pytest.raises(ValueError, match="target: expected the shape of pred"):
        psnr(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="pred"):
        psnr(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="max_value"):
        psnr(torch.zeros(2, 3), torch.zeros(2, 3), max_value=0)


# ------------------------------------------------------------------------------ frechet distance


def _random_cov(dim, seed, rank=None):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, rank or dim))
    return a @ a.T / (rank or dim)


def test_frechet_distance_equals_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2.0, size=5), rng.uniform(0.1, 2.0, size=5)  # standard deviations
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_the_eigenvalues_of_c1_c2_for_full_covariances():
    # tr sqrt(C1 C2) = sum of square roots of the (real, non-negative) eigenvalues of C1 C2.
    c1, c2 = _random_cov(6, 1), _random_cov(6, 2)
    mu = np.zeros(6)
    eig = np.linalg.eigvals(c1 @ c2).real
    expected = np.trace(c1) + np.trace(c2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum()
    assert frechet_distance(mu, c1, mu, c2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_is_zero_for_identical_stats_symmetric_and_positive():
    c1, c2 = _random_cov(8, 3), _random_cov(8, 4)
    mu1, mu2 = np.arange(8.0), np.arange(8.0) + 0.1
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)
    d12 = frechet_distance(mu1, c1, mu2, c2)
    assert d12 > 0.01
    assert d12 == pytest.approx(frechet_distance(mu2, c2, mu1, c1), rel=1e-9)
    # torch tensors are accepted and give the same float.
    assert frechet_distance(torch.tensor(mu1), torch.tensor(c1), torch.tensor(mu2), torch.tensor(c2)) == pytest.approx(d12)


def test_frechet_distance_is_stable_for_singular_covariances():
    # Rank 3 in 16 dimensions, as when there are fewer samples than features.
    c1, c2 = _random_cov(16, 5, rank=3), _random_cov(16, 6, rank=3)
    mu = np.zeros(16)
    d = frechet_distance(mu, c1, mu, c2)
    assert math.isfinite(d) and d > 0
    assert frechet_distance(mu, c1, mu, c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_rejects_bad_input():
    mu, cov = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="mu1"):
        frechet_distance(np.zeros((3, 1)), cov, mu, cov)
    with pytest.raises(ValueError, match="mu2"):
        frechet_distance(mu, cov, np.zeros(4), cov)
    with pytest.raises(ValueError, match="cov2"):
        frechet_distance(mu, cov, mu, np.eye(4))
    with pytest.raises(ValueError, match="cov1: expected a symmetric"):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, cov)
    with pytest.raises(ValueError, match="cov1: expected a positive semi-definite"):
        frechet_distance(mu, -np.eye(3), mu, cov)
    with pytest.raises(ValueError, match="mu1: expected finite values"):
        frechet_distance(np.array([0.0, np.nan, 0.0]), cov, mu, cov)


def test_feature_statistics_and_bad_input():
    feats = torch.randn(500, 4, generator=make_generator(0), dtype=torch.float64)
    mu, cov = feature_statistics(feats)
    assert mu.shape == (4,) and cov.shape == (4, 4)
    np.testing.assert_allclose(mu, feats.mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(feats.numpy(), rowvar=False), atol=1e-12)
    with pytest.raises(ValueError, match="features"):
        feature_statistics(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="features"):
        feature_statistics(torch.zeros(10))


# ------------------------------------------------------------------------ judge-based metrics


@pytest.fixture(scope="module")
def judge():
    from handbook import zoo

    return zoo.load("judge")


@pytest.fixture(scope="module")
def test_renders():
    from handbook.shapeworld import load_images

    return load_images("test", n=600, resolution=32, seed=0)


def test_judge_accuracy_on_judge_perfect_inputs(judge, test_renders):
    # Keep the renders the judge gets right: asking for their true labels must score exactly 1,
    # and asking for a wrong colour must score 0 on colour (and on both).
    images = test_renders.images
    with torch.no_grad():
        pred = {k: v.argmax(-1) for k, v in judge(images).items()}
    right = (pred["shape"] == test_renders.shape) & (pred["colour"] == test_renders.colour)
    images, shape, colour = images[right], test_renders.shape[right], test_renders.colour[right]
    assert len(images) > 500
    assert judge_accuracy(images, shape, colour, judge=judge) == {"shape": 1.0, "colour": 1.0, "both": 1.0}
    wrong_colour = (colour + 1) % 6
    acc = judge_accuracy(images, shape, wrong_colour, judge=judge)
    assert acc["shape"] == 1.0 and acc["colour"] == 0.0 and acc["both"] == 0.0


def test_judge_accuracy_takes_names_and_single_labels(judge):
    from handbook.shapeworld import render

    image = render("cube", "red", "large", resolution=32).image[None]  # (1, 3, 32, 32)
    assert judge_accuracy(image, "cube", "red", judge=judge, size="large") == {
        "shape": 1.0, "colour": 1.0, "both": 1.0, "size": 1.0,
    }
    assert judge_accuracy(image, "sphere", "red", judge=judge)["both"] == 0.0


def test_judge_accuracy_rejects_bad_input(judge):
    images = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match="shape: expected one of .*'cube'.*got 'hexagon'"):
        judge_accuracy(images, "hexagon", 0, judge=judge)
    with pytest.raises(ValueError, match="colour"):
        judge_accuracy(images, 0, torch.zeros(3, dtype=torch.long), judge=judge)
    with pytest.raises(ValueError, match="colour"):
        judge_accuracy(images, 0, 6, judge=judge)
    with pytest.raises(ValueError, match="images"):
        judge_accuracy(torch.rand(4, 32, 32), 0, 0, judge=judge)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        judge_accuracy(images * 2, 0, 0, judge=judge)


def test_shapeworld_fid_separates_real_from_corrupted(judge, test_renders):
    a, b = test_renders.images[:300], test_renders.images[300:600]
    real_vs_real = shapeworld_fid(a, b, judge=judge)
    assert shapeworld_fid(a, a, judge=judge) == pytest.approx(0.0, abs=1e-6)
    noisy = (b + 0.2 * torch.randn(b.shape, generator=make_generator(0))).clamp(0, 1)
    assert shapeworld_fid(a, noisy, judge=judge) > 2 * real_vs_real
    # A FID is biased upwards on small sets, so the recorded 2k-vs-2k real floor lies below this one.
    assert 0 < reference_fid() < real_vs_real
    # The default judge is the shipped one.
    assert shapeworld_fid(a, b) == pytest.approx(real_vs_real, rel=1e-6)
    # Features do not depend on the batch they are computed in (GroupNorm, not BatchNorm).
    torch.testing.assert_close(judge_features(a[:7], judge), judge_features(a, judge, batch_size=64)[:7])


def test_shapeworld_fid_rejects_bad_input(judge):
    good = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match="images_a"):
        shapeworld_fid(good[:1], good, judge=judge)
    with pytest.raises(ValueError, match="images_b"):
        shapeworld_fid(good, torch.rand(4, 1, 32, 32), judge=judge)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        shapeworld_fid(good, torch.rand(4, 3, 64, 64), judge=judge)
    with pytest.raises(ValueError, match="batch_size"):
        judge_features(good, judge, batch_size=0)


def test_median_seconds_warms_up_once_then_times_each_call():
    from handbook.metrics import median_seconds

    calls = []
    seconds = median_seconds(lambda: calls.append(1), repeats=3)
    assert len(calls) == 4 and 0 <= seconds < 0.1
    median_seconds(lambda: calls.append(1), repeats=2, warmup=False)
    assert len(calls) == 6
    with pytest.raises(ValueError, match="repeats"):
        median_seconds(lambda: None, repeats=0)
