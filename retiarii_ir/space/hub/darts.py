"""A DARTS-style space: normal and reduction cells built with ``retiarii_ir.nn.Cell``.

Each node reads two predecessors (an InputChoice each) through an op chosen per edge
(a LayerChoice nested under the input choice); ops reading the cell inputs of a
reduction cell have stride 2. Cells concatenate their nodes.
"""

from __future__ import annotations

import torch
from torch import nn

from retiarii_ir import nn as rnn

OPS = ("sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


class SepConv(nn.Module):
    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False),
                                nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, stride, 2, dilation=2, groups=c, bias=False),
                                nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convs (DARTS' skip in reductions)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "sep_conv_3x3":
        return SepConv(c, stride)
    if name == "dil_conv_3x3":
        return DilConv(c, stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c)


class DartsCell(nn.Module):
    """Preprocess both inputs to ``c`` channels, then a searched ``rnn.Cell``."""

    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, label: str,
                 num_nodes: int) -> None:
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else nn.Sequential(
            nn.ReLU(), nn.Conv2d(c_pp, c, 1, bias=False), nn.BatchNorm2d(c))
        self.pre1 = nn.Sequential(nn.ReLU(), nn.Conv2d(c_p, c, 1, bias=False), nn.BatchNorm2d(c))
        stride_of = lambda k: 2 if reduction and k < 2 else 1
        ops = {name: (lambda k, name=name: make_op(name, c, stride_of(k))) for name in OPS}
        self.cell = rnn.Cell(ops, num_nodes=num_nodes, num_ops_per_node=2, num_predecessors=2, label=label)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        return self.cell(self.pre0(s0), self.pre1(s1))


class DartsSpace(nn.Module):
    """Stem, a normal cell, a reduction cell, a normal cell (sharing the first's choices), classifier."""

    def __init__(self, c: int = 4, num_nodes: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), nn.BatchNorm2d(3 * c))
        c_pp, c_p = 3 * c, 3 * c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i, (channels, reduction) in enumerate([(c, False), (2 * c, True), (2 * c, False)]):
            label = "reduce" if reduction else "normal"  # one genotype per cell kind, as in DARTS
            self.cells.append(DartsCell(c_pp, c_p, channels, reduction, reduction_prev, label, num_nodes))
            c_pp, c_p = c_p, num_nodes * channels
            reduction_prev = reduction
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_p, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.head(s1)
