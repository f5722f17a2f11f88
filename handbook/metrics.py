"""Numbers that say how good a model is: PSNR, judge accuracy and the ShapeWorld FID (and how fast: ``median_seconds``).

- ``psnr``: peak signal-to-noise ratio, ``10 log10(MAX^2 / MSE)`` in decibels, per image. The
  measure for reconstructions (a denoiser, an autoencoder): +6 dB means the error amplitude halved.
- ``judge_accuracy``: generate "a red cube" and ask the judge (``handbook.judge``) what it sees;
  the fraction of samples recognised as the requested shape, colour, and both at once.
- ``frechet_distance`` and ``shapeworld_fid``: the Frechet distance between two Gaussians,

      d^2 = ||mu_1 - mu_2||^2 + tr(C_1) + tr(C_2) - 2 tr((C_1^{1/2} C_2 C_1^{1/2})^{1/2}),

  fitted to the judge's features of two image sets (the FID of Heusel et al. 2017, with the
  ShapeWorld judge in place of the ImageNet Inception network). It measures quality and variety
  at once: a model that draws only perfect red cubes has a good accuracy and a bad FID. A FID is
  only comparable with one computed by the same judge on the same number of images; the judge's
  manifest records the FID between two disjoint sets of real test renders, the floor a perfect
  model would reach (``reference_fid()``).

Why the square-root form: ``tr(sqrt(C_1 C_2))`` is often computed with ``scipy.linalg.sqrtm`` of
the non-symmetric product ``C_1 C_2``, which can return complex numbers and NaNs for nearly
singular covariances. ``C_1^{1/2} C_2 C_1^{1/2}`` has the same eigenvalues, but it is symmetric
and positive semi-definite, so a symmetric eigen-decomposition (``eigh``) in float64 is both
exact and stable, and needs no scipy.
"""

from __future__ import annotations

import numbers
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn

# One way only: the zoo imports no model and nothing of this module, so both can be imported here.
from handbook import checks, zoo
from handbook.shapeworld import COLOURS, SHAPES, SIZES

# Images are passed through the judge in chunks of this many, to bound memory on a laptop.
DEFAULT_BATCH_SIZE = 500
# A covariance may be asymmetric or have negative eigenvalues by this much (relative to its
# largest entry) from float rounding; beyond that it is not a covariance and we say so.
_COV_RELATIVE_TOLERANCE = 1e-6
_IMAGES = "N 3 Hh Ww"  # what every judge-based metric reads: RGB in [0, 1], the judge's resolution


def median_seconds(fn, repeats: int = 3, warmup: bool = True) -> float:
    """The median wall-clock time of ``fn()`` over ``repeats`` calls, after one warm-up call (first-call
    allocations) unless ``warmup`` is False."""
    checks.positive_int("repeats", repeats)
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def psnr(pred: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """PSNR in dB per item, (B,): ``10 log10(max_value^2 / MSE)``; ``inf`` where pred == target."""
    checks.same_shape(min_dims=2, pred=pred, target=target)  # (B, ...)
    checks.real("max_value", max_value, 0, open_low=True)
    diff = pred.double() - target.double()
    mse = diff.pow(2).flatten(1).mean(dim=1)  # (B,)
    return (10.0 * torch.log10(max_value**2 / mse)).float()  # mse == 0 gives +inf, as it should


def _judge(judge: nn.Module | None) -> nn.Module:
    """``judge``, or the shipped judge when it is None."""
    return judge if judge is not None else zoo.load("judge")


def _label_index(label: Any, names: tuple[str, ...], arg: str) -> int:
    """The index of one label, given as an index into ``names`` or as one of the names."""
    if isinstance(label, numbers.Integral) and not isinstance(label, bool):
        label = int(label)  # numpy integers too
    # Position i of (0, ..., K-1, names[0], ..., names[K-1]) stands for label i % K in both halves.
    return checks.choice(arg, label, (*range(len(names)), *names)) % len(names)


def _label_tensor(labels: Any, names: tuple[str, ...], n: int, arg: str) -> torch.Tensor:
    """One label for all n images, or one per image (a (N,) tensor or a list) -> (N,) long indices."""
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()  # a 0-D tensor gives one label, a (N,) tensor a list of them
    if not isinstance(labels, (list, tuple)):
        labels = [labels] * n
    if len(labels) != n:
        raise ValueError(f"{arg}: expected an index, a name, or one label per image ({n}), got {len(labels)} labels")
    return torch.tensor([_label_index(label, names, arg) for label in labels], dtype=torch.long)


@torch.no_grad()
def _run_judge(images: torch.Tensor, judge: nn.Module | None, fn: str, batch_size: int) -> list[Any]:
    """Apply ``judge.<fn>`` to ``images`` in chunks, in eval mode, on the judge's device."""
    checks.tensor("images", images, _IMAGES)
    checks.positive_int("batch_size", batch_size)
    judge = _judge(judge)
    device = next(judge.parameters()).device
    was_training = judge.training
    judge.eval()
    try:
        return [getattr(judge, fn)(chunk.to(device)) for chunk in images.split(batch_size)]
    finally:
        judge.train(was_training)


def judge_predictions(
    images: torch.Tensor, judge: nn.Module | None = None, batch_size: int = DEFAULT_BATCH_SIZE
) -> dict[str, torch.Tensor]:
    """The judge's label indices for each image: dict shape/colour/size/view of (N,) long tensors (CPU)."""
    chunks = _run_judge(images, judge, "predict", batch_size)
    return {k: torch.cat([c[k] for c in chunks]).cpu() for k in chunks[0]}


def judge_accuracy(
    images: torch.Tensor,
    shape: Any,
    colour: Any,
    judge: nn.Module | None = None,
    size: Any = None,
) -> dict[str, float]:
    """Fraction of ``images`` the judge recognises as the requested ``shape``, ``colour`` and both.

    ``shape``/``colour`` (and the optional ``size``) are each an index or a name (``"cube"``,
    ``"red"``), the same for every image, or a (N,) tensor or list of them. The default judge is the
    shipped one, ``handbook.zoo.load("judge")``. Returns ``{"shape", "colour", "both"}`` (plus
    ``"size"`` when ``size`` is given).
    """
    n = checks.tensor("images", images, _IMAGES, at_least={"N": 1})[0]
    want_shape = _label_tensor(shape, SHAPES, n, "shape")
    want_colour = _label_tensor(colour, COLOURS, n, "colour")
    got = judge_predictions(images, judge)
    shape_ok = got["shape"] == want_shape
    colour_ok = got["colour"] == want_colour
    result = {
        "shape": shape_ok.float().mean().item(),
        "colour": colour_ok.float().mean().item(),
        "both": (shape_ok & colour_ok).float().mean().item(),
    }
    if size is not None:
        result["size"] = (got["size"] == _label_tensor(size, SIZES, n, "size")).float().mean().item()
    return result


def _float64(x: Any, arg: str, dims: str, at_least: dict[str, int] | None = None, **sizes: int) -> np.ndarray:
    """``x`` (a tensor, an array or nested lists of numbers) as a finite float64 numpy array shaped ``dims``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{arg}: expected an array of numbers, got {type(x).__name__}") from None
    values = torch.tensor(arr)
    checks.tensor(arg, values, dims, at_least=at_least, **sizes)
    checks.within(arg, values)  # no NaN or inf
    return arr


def _covariance(cov: Any, arg: str, D: int) -> np.ndarray:
    """``cov`` as a float64 (D, D) covariance matrix, made exactly symmetric for ``eigh``. It must be
    symmetric and positive semi-definite up to float rounding (relative to its largest entry)."""
    cov = _float64(cov, arg, "D D", D=D)
    scale = max(float(np.abs(cov).max()), 1.0)
    if np.abs(cov - cov.T).max() > _COV_RELATIVE_TOLERANCE * scale:
        raise ValueError(f"{arg}: expected a symmetric covariance matrix")
    if np.linalg.eigvalsh(cov).min() < -_COV_RELATIVE_TOLERANCE * scale * len(cov):
        raise ValueError(f"{arg}: expected a positive semi-definite covariance (it has a negative eigenvalue)")
    return (cov + cov.T) / 2


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via its eigen-decomposition (negative rounding -> 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    ``d^2 = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr(sqrt(sqrt(C1) C2 sqrt(C1)))``, in float64.
    Accepts numpy arrays or tensors: means (D,), covariances (D, D), symmetric PSD.
    """
    mu1 = _float64(mu1, "mu1", "D")
    D = len(mu1)
    mu2 = _float64(mu2, "mu2", "D", D=D)
    cov1, cov2 = _covariance(cov1, "cov1", D), _covariance(cov2, "cov2", D)

    sqrt_cov1 = _sqrt_psd(cov1)
    middle = sqrt_cov1 @ cov2 @ sqrt_cov1  # symmetric PSD, same eigenvalues as C1 C2
    middle = (middle + middle.T) / 2
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum()
    diff = mu1 - mu2
    d2 = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt
    # Identical statistics give 0 up to rounding (about 1e-12 of the traces); never report < 0.
    return max(float(d2), 0.0)


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), in float64 numpy."""
    feats = _float64(features, "features", "N F", at_least={"N": 2})  # two rows to estimate a covariance
    return feats.mean(axis=0), np.cov(feats, rowvar=False).reshape(feats.shape[1], feats.shape[1])


def judge_features(
    images: torch.Tensor, judge: nn.Module | None = None, batch_size: int = DEFAULT_BATCH_SIZE
) -> torch.Tensor:
    """The judge's penultimate features of ``images`` (N, F), on the CPU."""
    return torch.cat([f.cpu() for f in _run_judge(images, judge, "features", batch_size)])


def shapeworld_fid(images_a: torch.Tensor, images_b: torch.Tensor, judge: nn.Module | None = None) -> float:
    """The Frechet distance between the judge features of two image sets (each (N, 3, 32, 32)).

    Lower is better; 0 means identical feature statistics. The value depends on N (it is biased
    upwards for small sets), so compare FIDs computed on the same number of images, and against
    the real-vs-real reference recorded in the judge's manifest.
    """
    for arg, images in (("images_a", images_a), ("images_b", images_b)):
        checks.tensor(arg, images, _IMAGES, at_least={"N": 2})  # two images to estimate a covariance
    judge = _judge(judge)
    mu_a, cov_a = feature_statistics(judge_features(images_a, judge))
    mu_b, cov_b = feature_statistics(judge_features(images_b, judge))
    return frechet_distance(mu_a, cov_a, mu_b, cov_b)


def reference_fid() -> float:
    """The shipped judge's FID between two disjoint sets of real test renders: "as good as real".

    Read from the judge's manifest, which also says how many images each set had
    (``metrics.reference_fid_images``); compare a model's FID on that many images with it.
    """
    return float(zoo.manifest("judge")["metrics"]["reference_fid"])


__all__ = [
    "psnr", "judge_predictions", "judge_accuracy", "frechet_distance",
    "feature_statistics", "judge_features", "shapeworld_fid", "reference_fid",
]
