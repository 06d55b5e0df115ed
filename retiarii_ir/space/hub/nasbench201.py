"""A NAS-Bench-201-style space: a 4-node cell whose 6 edges each choose one of 5 ops."""

from __future__ import annotations

import torch
from torch import nn

from retiarii_ir import nn as rnn

OPS = ("none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3")


class Zero(nn.Module):
    """The 'none' op: the edge carries nothing (zeros of the same shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ReLUConvBN(nn.Module):
    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                                                     bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def make_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "conv_1x1":
        return ReLUConvBN(channels, 1)
    if name == "conv_3x3":
        return ReLUConvBN(channels, 3)
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class NB201Cell(nn.Module):
    """Node i (1..3) sums op_{i<-j}(node j) over j < i; the cell returns node 3."""

    def __init__(self, channels: int, prefix: str) -> None:
        super().__init__()
        self.edges = nn.ModuleDict()
        for i in range(1, 4):
            for j in range(i):
                self.edges[f"{i}_{j}"] = rnn.LayerChoice({name: make_op(name, channels) for name in OPS},
                                                         label=f"{prefix}/edge_{i}_{j}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for i in range(1, 4):
            total = self.edges[f"{i}_0"](nodes[0])
            for j in range(1, i):
                total = total + self.edges[f"{i}_{j}"](nodes[j])
            nodes.append(total)
        return nodes[3]


class NasBench201(nn.Module):
    """Stem, one searched cell, a stride-2 residual block, a second cell sharing the first's
    choices (same labels: one genotype, as in NAS-Bench-201), and a classifier."""

    def __init__(self, channels: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.cell1 = NB201Cell(channels, "cell")
        self.reduce = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1, bias=False),
                                    nn.BatchNorm2d(2 * channels))
        self.cell2 = NB201Cell(2 * channels, "cell")
        self.head = nn.Sequential(nn.BatchNorm2d(2 * channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(2 * channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cell2(self.reduce(self.cell1(self.stem(x)))))
