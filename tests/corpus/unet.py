"""U-Net encoder/decoder with skip connections."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import Case, images

# U-Net ------------------------------------------------------------------------------


class DoubleConv(nn.Module):
    """(convolution => [BN] => ReLU) * 2"""

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: int | None = None
    ) -> None:
        super().__init__()
        if not mid_channels:
            mid_channels = out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """Downscaling with maxpool then double conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(
            nn.MaxPool2d(2), DoubleConv(in_channels, out_channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Upscale (nearest or transposed conv), concatenate the skip, then double conv."""

    def __init__(
        self, in_channels: int, out_channels: int, transpose: bool = False
    ) -> None:
        super().__init__()
        if transpose:
            self.up = nn.ConvTranspose2d(
                in_channels, in_channels // 2, kernel_size=2, stride=2
            )
            self.conv = DoubleConv(in_channels, out_channels)
        else:
            self.up = None
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        if self.up is not None:
            x1 = self.up(x1)
        else:
            x1 = F.interpolate(x1, scale_factor=2, mode="nearest")
        # the input is CHW; pad the upsampled map when the skip is one pixel larger
        diffY = x2.size()[2] - x1.size()[2]
        diffX = x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, [diffX // 2, diffX - diffX // 2, diffY // 2, diffY - diffY // 2])
        x = torch.cat([x2, x1], dim=1)
        return self.conv(x)


class UNet(nn.Module):
    def __init__(
        self,
        n_channels: int = 3,
        n_classes: int = 2,
        base: int = 8,
        transpose: bool = False,
    ) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.n_classes = n_classes
        factor = 1 if transpose else 2
        self.inc = DoubleConv(n_channels, base)
        self.down1 = Down(base, base * 2)
        self.down2 = Down(base * 2, base * 4)
        self.down3 = Down(base * 4, base * 8 // factor)
        self.up1 = Up(base * 8, base * 4 // factor, transpose)
        self.up2 = Up(base * 4, base * 2 // factor, transpose)
        self.up3 = Up(base * 2, base, transpose)
        self.outc = nn.Conv2d(base, n_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(x4, x3)
        x = self.up2(x, x2)
        x = self.up3(x, x1)
        logits = self.outc(x)
        return logits


CASES = [
    Case(
        name="unet",
        build=lambda: UNet(n_channels=3, n_classes=2, base=8, transpose=False),
        # 36 -> 18 -> 9 -> 4: the deepest skip needs one pixel of padding
        example_args=lambda: (images(size=36),),
        tags=("cnn", "encoder-decoder"),
    ),
    Case(
        name="unet_transpose",
        build=lambda: UNet(n_channels=1, n_classes=3, base=8, transpose=True),
        example_args=lambda: (images(channels=1, size=32),),
        tags=("cnn", "encoder-decoder"),
    ),
]
