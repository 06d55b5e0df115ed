"""The digits spaces: small CNN spaces for scikit-learn's 8x8 digits (one channel), the ones the
demo and the experiment examples search. ``DigitsSpace`` searches width, one block's op and the
number of extra blocks; ``PretrainedDigitsSpace`` searches the same on top of a pretrained
feature extractor it loads and freezes (the transfer-learning set-up)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import nn


def searched_layers(width, num_classes: int) -> tuple[nn.LayerChoice, nn.Repeat, nn.Linear]:
    """The searched part of the digits spaces, after their stem: one block's op, 0-2 extra
    conv blocks, and the linear head."""
    op = nn.LayerChoice({
        "conv3x3": nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU()),
        "conv5x5": nn.Sequential(nn.Conv2d(width, width, 5, padding=2), nn.ReLU()),
        "sepconv": nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=width),
                                 nn.Conv2d(width, width, 1), nn.ReLU()),
        "maxpool": nn.MaxPool2d(3, stride=1, padding=1),
    }, label="op")
    blocks = nn.Repeat(
        lambda i: nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                nn.ReLU()), depth=(0, 2), label="depth")
    return op, blocks, nn.Linear(width, num_classes)


@nn.model_wrapper
class DigitsSpace(nn.Module):
    """A small CNN space for 8x8 digits: width, one block's op, depth of extra blocks."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        width = nn.ValueChoice([16, 32], label="width")
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.op, self.blocks, self.head = searched_layers(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.op(self.stem(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def digits_features() -> nn.Sequential:
    """Three convolutions and a pooling: 8x8 digits to 128 channels of 4x4 features."""
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


@nn.model_wrapper
class PretrainedDigitsSpace(nn.Module):
    """The search on top of a pretrained feature extractor, the common transfer-learning set-up:
    the extractor is loaded from ``features`` (a state_dict file) and frozen; width, one
    block's op and the number of extra blocks are searched."""

    def __init__(self, features: str | None = None, num_classes: int = 10) -> None:
        super().__init__()
        self.features = digits_features()
        if features is not None:
            self.features.load_state_dict(torch.load(features, weights_only=True))
        self.features.requires_grad_(False)  # every trial starts from these weights and never trains them
        width = nn.ValueChoice([16, 32], label="width")
        self.stem = nn.Sequential(nn.Conv2d(128, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.op, self.blocks, self.head = searched_layers(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.op(self.stem(self.features(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
