"""Numbers that say how good a model is: PSNR, judge accuracy and the ShapeWorld FID.

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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # only for type hints: importing the judge module here costs nothing
    from handbook.judge import Judge

# Images are passed through the judge in chunks of this many, to bound memory on a laptop.
DEFAULT_BATCH_SIZE = 500
# A covariance may be asymmetric or have negative eigenvalues by this much (relative to its
# largest entry) from float rounding; beyond that it is not a covariance and we say so.
_COV_RELATIVE_TOLERANCE = 1e-6


def psnr(pred: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """PSNR in dB per item, (B,): ``10 log10(max_value^2 / MSE)``; ``inf`` where pred == target."""
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor) or t.ndim < 2:
            raise ValueError(f"{name}: expected a tensor of shape (B, ...) with at least 2 dims")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target: expected the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if not (isinstance(max_value, (int, float)) and max_value > 0):
        raise ValueError(f"max_value: expected a positive number, got {max_value!r}")
    diff = pred.double() - target.double()
    mse = diff.pow(2).flatten(1).mean(dim=1)  # (B,)
    return (10.0 * torch.log10(max_value**2 / mse)).float()  # mse == 0 gives +inf, as it should


def _default_judge() -> "Judge":
    # Imported on first use: the shipped judge is needed only when the caller passes none.
    from handbook import zoo

    return zoo.load("judge")


def _label_tensor(labels: Any, names: tuple[str, ...], n: int, arg: str) -> torch.Tensor:
    """An int, a name, or a (B,) tensor/sequence of either -> (B,) long tensor of indices."""
    if isinstance(labels, (str, numbers.Integral)) and not isinstance(labels, bool):
        labels = [labels] * n
    elif isinstance(labels, torch.Tensor) and labels.ndim == 1:
        labels = labels.tolist()
    if not isinstance(labels, (list, tuple)) or len(labels) != n:
        got = f"shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else (
            f"{len(labels)} labels" if isinstance(labels, (list, tuple)) else repr(labels))
        raise ValueError(f"{arg}: expected an index, a name, or one label per image ({n}), got {got}")
    indices = []
    for label in labels:
        if isinstance(label, str):
            if label not in names:
                raise ValueError(f"{arg}: unknown name {label!r}, expected one of {names}")
            label = names.index(label)
        if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < len(names):
            raise ValueError(f"{arg}: expected indices in [0, {len(names)}) or names in {names}, got {label!r}")
        indices.append(int(label))
    return torch.tensor(indices, dtype=torch.long)


def _check_images(images: Any, arg: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{arg}: expected a float tensor (N, 3, H, W) in [0, 1], got {shape}")


@torch.no_grad()
def _run_judge(images: torch.Tensor, judge: "Judge | None", fn: str, batch_size: int) -> list[Any]:
    """Apply ``judge.<fn>`` to ``images`` in chunks, in eval mode, on the judge's device."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    judge = judge if judge is not None else _default_judge()
    device = next(judge.parameters()).device
    was_training = judge.training
    judge.eval()
    try:
        return [getattr(judge, fn)(chunk.to(device)) for chunk in images.split(batch_size)]
    finally:
        judge.train(was_training)


def judge_predictions(
    images: torch.Tensor, judge: "Judge | None" = None, batch_size: int = DEFAULT_BATCH_SIZE
) -> dict[str, torch.Tensor]:
    """The judge's label indices for each image: dict shape/colour/size of (N,) long tensors (CPU)."""
    _check_images(images)
    chunks = _run_judge(images, judge, "predict", batch_size)
    return {k: torch.cat([c[k] for c in chunks]).cpu() for k in ("shape", "colour", "size")}


def judge_accuracy(
    images: torch.Tensor,
    shape: Any,
    colour: Any,
    judge: "Judge | None" = None,
    size: Any = None,
) -> dict[str, float]:
    """Fraction of ``images`` the judge recognises as the requested ``shape``, ``colour`` and both.

    ``shape``/``colour`` (and the optional ``size``) are each an index or a name (``"cube"``,
    ``"red"``), the same for every image, or a (N,) tensor or list of them. The default judge is the
    shipped one, ``handbook.zoo.load("judge")``. Returns ``{"shape", "colour", "both"}`` (plus
    ``"size"`` when ``size`` is given).
    """
    from handbook.shapeworld import COLOURS, SHAPES, SIZES

    _check_images(images)
    n = images.shape[0]
    if n == 0:
        raise ValueError("images: expected at least one image")
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


def _as_float64(x: Any, arg: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{arg}: expected an array of numbers, got {type(x).__name__}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{arg}: contains NaN or inf")
    return arr


def _check_covariance(cov: np.ndarray, dim: int, arg: str) -> None:
    if cov.shape != (dim, dim):
        raise ValueError(f"{arg}: expected shape ({dim}, {dim}) to match the mean, got {cov.shape}")
    scale = max(float(np.abs(cov).max()), 1.0)
    if np.abs(cov - cov.T).max() > _COV_RELATIVE_TOLERANCE * scale:
        raise ValueError(f"{arg}: expected a symmetric covariance matrix")
    if np.linalg.eigvalsh(cov).min() < -_COV_RELATIVE_TOLERANCE * scale * dim:
        raise ValueError(f"{arg}: expected a positive semi-definite covariance (it has a negative eigenvalue)")


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via its eigen-decomposition (negative rounding -> 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    ``d^2 = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr(sqrt(sqrt(C1) C2 sqrt(C1)))``, in float64.
    Accepts numpy arrays or tensors: means (D,), covariances (D, D), symmetric PSD.
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    cov1, cov2 = _as_float64(cov1, "cov1"), _as_float64(cov2, "cov2")
    if mu1.ndim != 1:
        raise ValueError(f"mu1: expected a vector (D,), got shape {mu1.shape}")
    if mu2.shape != mu1.shape:
        raise ValueError(f"mu2: expected shape {mu1.shape} like mu1, got {mu2.shape}")
    dim = mu1.shape[0]
    _check_covariance(cov1, dim, "cov1")
    _check_covariance(cov2, dim, "cov2")
    cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2  # exactly symmetric for eigh

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
    feats = _as_float64(features, "features")
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features: expected shape (N, F) with N >= 2, got {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False).reshape(feats.shape[1], feats.shape[1])


def judge_features(
    images: torch.Tensor, judge: "Judge | None" = None, batch_size: int = DEFAULT_BATCH_SIZE
) -> torch.Tensor:
    """The judge's penultimate features of ``images`` (N, F), on the CPU."""
    _check_images(images)
    return torch.cat([f.cpu() for f in _run_judge(images, judge, "features", batch_size)])


def shapeworld_fid(images_a: torch.Tensor, images_b: torch.Tensor, judge: "Judge | None" = None) -> float:
    """The Frechet distance between the judge features of two image sets (each (N, 3, 32, 32)).

    Lower is better; 0 means identical feature statistics. The value depends on N (it is biased
    upwards for small sets), so compare FIDs computed on the same number of images, and against
    the real-vs-real reference recorded in the judge's manifest.
    """
    _check_images(images_a, "images_a")
    _check_images(images_b, "images_b")
    for arg, images in (("images_a", images_a), ("images_b", images_b)):
        if images.shape[0] < 2:
            raise ValueError(f"{arg}: expected at least 2 images to estimate a covariance, got {images.shape[0]}")
    judge = judge if judge is not None else _default_judge()
    mu_a, cov_a = feature_statistics(judge_features(images_a, judge))
    mu_b, cov_b = feature_statistics(judge_features(images_b, judge))
    return frechet_distance(mu_a, cov_a, mu_b, cov_b)


def reference_fid() -> float:
    """The shipped judge's FID between two disjoint sets of real test renders: "as good as real".

    Read from the judge's manifest, which also says how many images each set had
    (``metrics.reference_fid_images``); compare a model's FID on that many images with it.
    """
    from handbook import zoo

    return float(zoo.manifest("judge")["metrics"]["reference_fid"])


__all__ = [
    "psnr", "judge_predictions", "judge_accuracy", "frechet_distance",
    "feature_statistics", "judge_features", "shapeworld_fid", "reference_fid",
]
