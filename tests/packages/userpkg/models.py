"""Models that call their own package's helpers, as public model zoos do."""

import torch
import torch.fx
from torch import nn

from .ops import StochasticDepth


def _relative_bias(table: torch.Tensor, size: int) -> torch.Tensor:
    """A private helper of the model's own module (``_get_relative_position_bias`` style)."""
    index = torch.arange(size)
    return table[(index[:, None] - index[None, :]) + size - 1]


torch.fx.wrap("_relative_bias")


class ResidualBlock(nn.Module):
    """conv + stochastic depth on the branch, plus a relative-position bias from a private helper."""

    def __init__(self, channels: int = 4, size: int = 5, p: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.drop = StochasticDepth(p)
        self.table = nn.Parameter(torch.randn(2 * size - 1))
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.conv(x)) + _relative_bias(self.table, self.size)
