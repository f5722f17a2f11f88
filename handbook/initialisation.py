"""PyTorch's default initial weights, drawn from a generator: one function every model shares.

``nn.Linear`` and ``nn.Conv2d`` start with weights and biases uniform in +-1/sqrt(fan_in) (fan_in =
inputs x kernel area), which keeps the variance of a layer's output close to its input's. PyTorch
draws them from the global random stream when a layer is built; the models of this package redraw
them from a ``torch.Generator`` instead, so that building a model never moves the global stream and
the same seed gives the same network whatever ran before.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def fan_in_uniform_(layer: nn.Linear | nn.Conv2d, generator: torch.Generator | None = None,
                    bias: bool = True) -> None:
    """Redraw ``layer.weight`` (then ``layer.bias``, if ``bias`` and the layer has one) from
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for Linear and Conv layers."""
    bound = 1.0 / math.sqrt(layer.weight[0].numel())   # fan_in = in_features, or in_channels * kernel area
    nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
    if bias and layer.bias is not None:
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


@torch.no_grad()
def xavier_uniform_linears_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Every ``nn.Linear`` inside ``module``: weights Xavier-uniform, U(+-sqrt(6 / (fan_in + fan_out))),
    biases zero; and every ``nn.Embedding`` N(0, 0.02^2). DiT's basic init (and ViT's, in JAX), which
    the Transformers of chapters 6 and 7 share."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02, generator=generator)
