"""Models that exercise calling conventions and state.

Nested tuple and dict outputs, keyword arguments with defaults, registered buffers,
parameters used directly in ``forward`` and constant tensors.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import BATCH, Case, images, sequences


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=1,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# Nested tuple output ----------------------------------------------------------------


class MultiTaskNet(nn.Module):
    """A small CNN with a main classifier and an auxiliary head on a middle stage.

    Returns ``logits, (features, aux_logits)``.
    """

    def __init__(
        self, num_classes: int = 10, aux_classes: int = 4, width: int = 16
    ) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, width)
        self.stage1 = nn.Sequential(
            conv_bn_relu(width, width * 2, stride=2), conv_bn_relu(width * 2, width * 2)
        )
        self.stage2 = nn.Sequential(
            conv_bn_relu(width * 2, width * 4, stride=2),
            conv_bn_relu(width * 4, width * 4),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)
        self.aux_head = nn.Sequential(
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(width * 2 * 4, aux_classes),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x = self.stem(x)
        mid = self.stage1(x)
        x = self.stage2(mid)
        features = torch.flatten(self.pool(x), 1)
        logits = self.fc(features)
        aux = self.aux_head(mid)
        return logits, (features, aux)


# Dict output (segmentation style) ---------------------------------------------------


class FCNHead(nn.Sequential):
    def __init__(self, in_channels: int, channels: int) -> None:
        inter_channels = in_channels // 2
        super().__init__(
            nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter_channels, channels, 1),
        )


class SimpleSegmentationModel(nn.Module):
    """Backbone with a main and an auxiliary head, both upsampled to the input size."""

    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict(
            {
                "layer1": nn.Sequential(
                    conv_bn_relu(3, width, stride=2), conv_bn_relu(width, width)
                ),
                "layer2": nn.Sequential(
                    conv_bn_relu(width, width * 2, stride=2),
                    conv_bn_relu(width * 2, width * 2),
                ),
                "layer3": nn.Sequential(conv_bn_relu(width * 2, width * 4, stride=2)),
            }
        )
        self.classifier = FCNHead(width * 4, num_classes)
        self.aux_classifier = FCNHead(width * 2, num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        input_shape = x.shape[-2:]
        features = OrderedDict()
        out = x
        for name, layer in self.backbone.items():
            out = layer(out)
            features[name] = out

        result = OrderedDict()
        x = self.classifier(features["layer3"])
        x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
        result["out"] = x

        x = self.aux_classifier(features["layer2"])
        x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
        result["aux"] = x
        return result


# Keyword arguments with defaults ----------------------------------------------------


class MaskedAttentionPooling(nn.Module):
    """Attention pooling over a padded sequence; ``mask`` is 1 at real positions."""

    def __init__(
        self, in_features: int = 12, hidden: int = 24, num_classes: int = 3
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, hidden)
        self.score = nn.Linear(hidden, 1)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(
        self, x: Tensor, mask: Optional[Tensor] = None, scale: float = 1.0
    ) -> Tensor:
        h = torch.tanh(self.proj(x))
        scores = self.score(h).squeeze(-1) * scale
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e9)
        weights = scores.softmax(dim=-1)
        pooled = torch.bmm(weights.unsqueeze(1), h).squeeze(1)
        return self.head(self.norm(pooled))


def _masked_kwargs(length: int = 8) -> dict:
    mask = torch.ones(BATCH, length, dtype=torch.long)
    mask[0, length - 2 :] = 0
    return {"mask": mask}


# Buffers, raw parameters and constants ----------------------------------------------


class NormalizedCoordNet(nn.Module):
    """Normalises its input with registered buffers, appends coordinate channels
    built with ``torch.arange`` and a fixed Sobel edge map, and scales activations
    with raw parameters.
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1)
        )
        self.register_buffer(
            "std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1)
        )
        self.register_buffer("class_prior", torch.zeros(num_classes), persistent=False)

        self.conv1 = nn.Conv2d(3 + 2 + 1, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width * 2, kernel_size=3, stride=2, padding=1)
        self.scale = nn.Parameter(torch.ones(1, width * 2, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, width * 2, 1, 1))
        self.fc = nn.Linear(width * 2, num_classes)
        self.logit_scale = nn.Parameter(torch.tensor(0.5))

        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.conv2.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.scale, mean=1.0, std=0.1)
        nn.init.normal_(self.shift, std=0.1)
        with torch.no_grad():
            self.class_prior.copy_(torch.linspace(-0.5, 0.5, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        b, _, h, w = x.shape

        # normalised pixel coordinates in [-1, 1]
        ys = torch.arange(h, dtype=x.dtype, device=x.device) / (h - 1) * 2 - 1
        xs = torch.arange(w, dtype=x.dtype, device=x.device) / (w - 1) * 2 - 1
        yy = ys.view(1, 1, h, 1).expand(b, 1, h, w)
        xx = xs.view(1, 1, 1, w).expand(b, 1, h, w)

        # fixed horizontal Sobel filter on the grey image
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        gray = x.mean(dim=1, keepdim=True)
        edges = F.conv2d(gray, sobel.view(1, 1, 3, 3).to(x.dtype), padding=1)

        x = torch.cat([x, yy, xx, edges], dim=1)
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = self.conv2(x)
        x = x * self.scale + self.shift
        x = F.relu(x)
        x = x.mean(dim=(2, 3))
        logits = self.fc(x) * self.logit_scale.exp() + self.class_prior
        return logits


CASES = [
    Case(
        name="tuple_output",
        build=lambda: MultiTaskNet(num_classes=10, aux_classes=4, width=8),
        example_args=lambda: (images(),),
        tags=("cnn", "multi-output"),
    ),
    Case(
        name="dict_output",
        build=lambda: SimpleSegmentationModel(num_classes=3, width=8),
        example_args=lambda: (images(size=24),),
        tags=("cnn", "multi-output", "encoder-decoder"),
    ),
    Case(
        name="kwargs_masked_pooling",
        build=lambda: MaskedAttentionPooling(in_features=12, hidden=24, num_classes=3),
        example_args=lambda: (sequences(8, 12),),
        example_kwargs=_masked_kwargs,
        tags=("kwargs", "attention"),
    ),
    Case(
        name="buffers_and_params",
        build=lambda: NormalizedCoordNet(num_classes=10, width=8),
        example_args=lambda: (images(),),
        tags=("cnn", "buffers"),
    ),
]
