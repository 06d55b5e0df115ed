"""A MobileNetV3-style space: ValueChoice widths, kernel sizes and expansion ratios,
squeeze-and-excitation on or off, and Repeat depths (down to 0 extra blocks)."""

from __future__ import annotations

import torch
from torch import nn

from retiarii_ir import nn as rnn


def make_divisible(value: float, divisor: int = 4) -> int:
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    def __init__(self, channels) -> None:
        super().__init__()
        squeezed = rnn.ValueChoice.apply(make_divisible, channels // 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = rnn.Conv2d(channels, squeezed, 1)
        self.act = nn.ReLU()
        self.fc2 = rnn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (k x k), optional SE, project (1x1); residual when shapes allow."""

    def __init__(self, c_in, c_out, stride: int, residual: bool, label: str) -> None:
        super().__init__()
        kernel = rnn.ValueChoice([3, 5, 7], label=f"{label}/kernel")
        expand = rnn.ValueChoice([2, 4], label=f"{label}/expand")
        hidden = c_in * expand
        self.residual = residual
        self.expand = nn.Sequential(rnn.Conv2d(c_in, hidden, 1, bias=False), rnn.BatchNorm2d(hidden), nn.Hardswish())
        self.depthwise = nn.Sequential(
            rnn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            rnn.BatchNorm2d(hidden), nn.Hardswish())
        self.se = rnn.LayerChoice({"se": SqueezeExcite(hidden), "none": nn.Identity()}, label=f"{label}/se")
        self.project = nn.Sequential(rnn.Conv2d(hidden, c_out, 1, bias=False), rnn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.residual else out


class MobileNetV3Space(nn.Module):
    """Stem (width chosen), stages of one strided block plus 0-2 repeated blocks, head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        stem_width = rnn.ValueChoice([8, 12], label="stem_width")
        self.stem = nn.Sequential(rnn.Conv2d(3, stem_width, 3, 2, 1, bias=False), rnn.BatchNorm2d(stem_width),
                                  nn.Hardswish())
        stages = []
        c_in = stem_width
        for s, (widths, stride) in enumerate([([8, 16], 1), ([16, 24], 2)]):
            c_out = rnn.ValueChoice(widths, label=f"stage{s}/width")
            first = InvertedResidual(c_in, c_out, stride, False, f"stage{s}/block0")
            rest = rnn.Repeat(lambda i, s=s, c=c_out: InvertedResidual(c, c, 1, True, f"stage{s}/block{i + 1}"),
                              depth=(0, 2), label=f"stage{s}/depth")
            stages.append(nn.Sequential(first, rest))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(rnn.Conv2d(c_in, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
