"""Stochastic depth (drop whole residual branches per sample), kept as one graph node."""

import torch
import torch.fx
from torch import nn


def stochastic_depth(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each sample's branch with probability ``p`` while training; identity in eval."""
    if not training or p == 0.0:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype).bernoulli_(1 - p)
    return x * keep / (1 - p)


torch.fx.wrap("stochastic_depth")


class StochasticDepth(nn.Module):
    """The layer form of ``stochastic_depth``; tracing goes through it to the wrapped call."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(x, self.p, self.training)
