"""ResNet (basic and bottleneck blocks) and a squeeze-and-excitation ResNet."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ._base import Case, images


# The ResNet family ships with the package (runtime/models.py); the corpus uses it from there.
from retiarii_ir.runtime.models import BasicBlock, Bottleneck, ResNet, conv1x1, conv3x3, resnet50  # noqa: E402,F401


# Squeeze-and-excitation ResNet ------------------------------------------------------


class SELayer(nn.Module):
    def __init__(self, channel: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SEBasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SELayer(planes, reduction)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.se(out)

        if self.downsample is not None:
            residual = self.downsample(x)

        out += residual
        out = self.relu(out)

        return out


class SEResNet(nn.Module):
    """A CIFAR-sized SE-ResNet: 3x3 stem and three stages, no max-pool."""

    def __init__(
        self,
        layers: list[int],
        num_classes: int = 10,
        width: int = 16,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        self.inplanes = width
        self.reduction = reduction
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes, planes, kernel_size=1, stride=stride, bias=False
                ),
                nn.BatchNorm2d(planes),
            )
        layers = [
            SEBasicBlock(
                self.inplanes, planes, stride, downsample, reduction=self.reduction
            )
        ]
        self.inplanes = planes
        for _ in range(1, blocks):
            layers.append(SEBasicBlock(self.inplanes, planes, reduction=self.reduction))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)

        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        x = self.fc(x)
        return x


CASES = [
    Case(
        name="resnet_basic",
        build=lambda: ResNet(BasicBlock, [2, 1, 1, 1], num_classes=10, width=8),
        example_args=lambda: (images(),),
        tags=("cnn", "residual"),
    ),
    Case(
        name="resnet_bottleneck",
        build=lambda: ResNet(Bottleneck, [1, 2, 1, 1], num_classes=10, width=8),
        example_args=lambda: (images(),),
        tags=("cnn", "residual"),
    ),
    Case(
        name="se_resnet",
        build=lambda: SEResNet([1, 1, 1], num_classes=10, width=16, reduction=4),
        example_args=lambda: (images(),),
        tags=("cnn", "residual", "attention"),
    ),
]
