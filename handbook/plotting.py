"""Plots every chapter needs: a grid of images and training-loss curves.

Both functions return the matplotlib ``Figure`` they draw, made with pyplot. In a notebook it
appears below the cell when the cell ends (no ``plt.show()`` needed): write ``fig = show_images(...)``
or end the line with ``;``, because a Figure left as the cell's last value is shown a second time.
In a script, save it with ``fig.savefig(...)`` and close it with ``plt.close(fig)``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["show_images", "plot_losses", "moving_average"]


def _as_numpy(x, name: str) -> np.ndarray:
    """A float64 numpy copy of a tensor, array or nested sequence; ValueError naming ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        if x.dtype == torch.bool:
            x = x.float()
        x = x.double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected numbers (a tensor, array or sequence), got {type(x).__name__}") from err
    return arr


# Titles are drawn at 8 pt: about 16 characters fit in an inch, and a line takes 0.15 inch.
_TITLE_FONT_SIZE = 8
_TITLE_CHARS_PER_INCH = 16
_TITLE_LINE_INCHES = 0.15


def show_images(
    images,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    scale: float = 1.5,
    title: str | None = None,
    cmap: str = "gray",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    colorbar: bool = False,
) -> Figure:
    """Draw a batch of images in a grid and return the figure.

    images: (B, 3, Hh, Ww) RGB in [0, 1], or (B, Hh, Ww) / (B, 1, Hh, Ww) single-channel maps
        (greyscale images, masks, depth, signed distances, ...). A tensor, numpy array or list.
        A single image must keep its batch axis: ``images[None]``.
    titles: one title per image (e.g. the captions; long ones are wrapped), or None.
    ncols: images per row (fewer if the batch is smaller); scale: inches per image.
    title: a title for the whole figure.
    cmap, vmin, vmax: how single-channel maps are coloured. Values are clamped to [vmin, vmax];
        pass ``vmin=None, vmax=None`` for a heat-map whose range is the finite range of the whole
        batch (shared, so the panels are comparable). RGB images are always clamped to [0, 1].
        Non-finite values (e.g. depth +inf on the background) are left blank.
    colorbar: add one colour bar for single-channel maps.
    """
    arr = _as_numpy(images, "images")
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]  # (B, Hh, Ww)
    if arr.ndim == 4:
        if arr.shape[1] != 3:
            raise ValueError(f"images: expected (B, 3, Hh, Ww) or (B, Hh, Ww), got shape {tuple(arr.shape)}")
        rgb = True
    elif arr.ndim == 3:
        rgb = False
    else:
        raise ValueError(
            f"images: expected (B, 3, Hh, Ww) RGB or (B, Hh, Ww) maps, got shape {tuple(arr.shape)} "
            "(a single image needs a batch axis: images[None])"
        )
    B = arr.shape[0]
    if B == 0 or arr.shape[-1] == 0 or arr.shape[-2] == 0:
        raise ValueError(f"images: expected at least one non-empty image, got shape {tuple(arr.shape)}")
    if titles is not None:
        if not isinstance(titles, str):
            try:
                titles = list(titles)
            except TypeError as err:
                raise ValueError(f"titles: expected a list of {B} strings, got {type(titles).__name__}") from err
        if isinstance(titles, str) or len(titles) != B:
            raise ValueError(f"titles: expected a list of {B} strings (one per image), got {titles!r}")
    if not isinstance(ncols, int) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"ncols: expected a positive int, got {ncols!r}")
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale: expected a positive number, got {scale!r}")

    if not rgb:
        finite = arr[np.isfinite(arr)]
        lo = vmin if vmin is not None else (finite.min() if finite.size else 0.0)
        hi = vmax if vmax is not None else (finite.max() if finite.size else 1.0)
        if hi <= lo:
            if vmin is not None and vmax is not None:
                raise ValueError(f"vmin, vmax: expected vmin < vmax, got {vmin!r}, {vmax!r}")
            hi = lo + 1.0  # a constant map: any range shows it as one colour
        arr = np.where(np.isfinite(arr), np.clip(arr, lo, hi), np.nan)  # NaN is drawn blank

    ncols = min(ncols, B)
    nrows = math.ceil(B / ncols)
    # Long titles (captions) are wrapped to the width of one image, and room is left for them.
    chars_per_line = max(8, int(scale * _TITLE_CHARS_PER_INCH))
    if titles is not None:
        titles = [textwrap.fill(str(t), chars_per_line) for t in titles]
    lines = max((t.count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    title_room = _TITLE_LINE_INCHES * lines + (0.1 if lines else 0.0)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(scale * ncols, (scale + title_room) * nrows + (0.4 if title else 0.0)), squeeze=False
    )
    last = None
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= B:
            continue
        if rgb:
            img = np.clip(np.nan_to_num(arr[i], nan=0.0), 0.0, 1.0).transpose(1, 2, 0)  # (Hh, Ww, 3)
            ax.imshow(img, interpolation="nearest")
        else:
            last = ax.imshow(arr[i], cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=_TITLE_FONT_SIZE)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if colorbar and last is not None:
        fig.colorbar(last, ax=axes.ravel().tolist(), shrink=0.8)
    return fig


def moving_average(values, window: int) -> np.ndarray:
    """The mean of each run of ``window`` consecutive values (length ``len(values) - window + 1``)."""
    arr = _as_numpy(values, "values").ravel()
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window: expected a positive int, got {window!r}")
    if window > arr.size:
        raise ValueError(f"window: expected at most len(values) = {arr.size}, got {window}")
    csum = np.cumsum(np.concatenate([[0.0], arr]))
    return (csum[window:] - csum[:-window]) / window


def plot_losses(
    losses,
    smooth: int = 0,
    title: str | None = None,
    log: bool = False,
    xlabel: str = "step",
    ylabel: str = "loss",
) -> Figure:
    """Plot one loss curve, or several on the same axes, and return the figure.

    losses: a sequence / 1-D tensor / array of values (one per step), an object with a ``losses``
        attribute (``handbook.training.History``), or a dict name -> one of those (one curve each,
        with a legend).
    smooth: if > 1, also draw the moving average over ``smooth`` steps (the raw curve stays,
        faint, behind it) - training losses are noisy and the trend is what matters.
    log: use a logarithmic y axis (every value must then be positive).
    """
    if isinstance(losses, Mapping):
        curves = dict(losses)
        if not curves:
            raise ValueError("losses: expected at least one curve, got an empty dict")
    else:
        curves = {None: losses}
    if not isinstance(smooth, int) or isinstance(smooth, bool) or smooth < 0:
        raise ValueError(f"smooth: expected a non-negative int (moving-average window), got {smooth!r}")

    arrays = {}
    for name, values in curves.items():
        label = "losses" if name is None else f"losses[{name!r}]"
        values = getattr(values, "losses", values)  # a training History
        arr = _as_numpy(values, label)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{label}: expected a non-empty 1-D sequence of numbers, got shape {tuple(arr.shape)}")
        if log and np.any(arr[np.isfinite(arr)] <= 0):
            raise ValueError(f"{label}: log=True needs positive values, got min {arr.min():g}")
        arrays[name] = arr

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, (name, arr) in enumerate(arrays.items()):
        colour = f"C{k}"
        steps = np.arange(arr.size)
        if smooth > 1 and arr.size >= smooth:
            ax.plot(steps, arr, color=colour, alpha=0.25, linewidth=0.8)
            # The average over steps [i - smooth + 1, i] is drawn at step i.
            ax.plot(steps[smooth - 1 :], moving_average(arr, smooth), color=colour, label=name)
        else:
            ax.plot(steps, arr, color=colour, label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if any(name is not None for name in arrays):
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
