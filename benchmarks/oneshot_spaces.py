"""Planted-answer spaces for one-shot search, and the data that plants the answer.

Each space holds one architecture that clearly wins on its data; ``prove`` trains every
architecture of the space alone over several seeds and shows that it leads by more than the
seed-to-seed noise. Written the way a user would write them: ``NoisyViewSpace`` has an
InputChoice before the mixed op and a BatchNorm right after it, with parameter-free
candidates (pools, identity) that a collapsing DARTS picks.
"""

from __future__ import annotations

import itertools
import math
import statistics
from typing import NamedTuple

import torch
from torch.nn import functional as F

import retiarii_ir
from retiarii_ir import nn
from retiarii_ir.runtime.training.data import dataset


def noisy_digits(noise: float = 0.8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Digits with two channels: the clean image and the same image under fixed Gaussian noise."""
    d = dataset("digits")
    generator = torch.Generator().manual_seed(seed)

    def two_views(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x + noise * torch.randn(x.shape, generator=generator)], dim=1)

    return two_views(d.train_x), d.train_y, two_views(d.val_x), d.val_y


@nn.model_wrapper
class NoisyViewSpace(nn.Module):
    """Which view (clean or noisy) and which op; the op's output goes straight into a BatchNorm.

    Planted answer: the clean view and the 3x3 convolution (the only candidate that adds a
    trained layer before global pooling).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.view = nn.InputChoice(2, 1, label="view")
        self.op = nn.LayerChoice({"conv3x3": nn.Conv2d(width, width, 3, padding=1),
                                  "maxpool": nn.MaxPool2d(3, 1, 1),
                                  "avgpool": nn.AvgPool2d(3, 1, 1),
                                  "identity": nn.Identity()}, label="op")
        self.norm = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [torch.relu(self.stem(x[:, :1])), torch.relu(self.stem(x[:, 1:]))]
        x = torch.relu(self.norm(self.op(self.view(views))))
        return self.head(x.mean((2, 3)))


@nn.model_wrapper
class TwoLayerSpace(nn.Module):
    """Two stacked mixed ops, each candidate with its own BatchNorm, and a width choice.

    Planted answer: width 16 and a 3x3 convolution in both places. The pooling candidate
    averages: with max pooling second, trained alone, the model tied two convolutions (0.988
    against 0.992 over 5 seeds, within the seed-to-seed spread), so no winner was proved.
    """

    def __init__(self) -> None:
        super().__init__()
        width = nn.ValueChoice([8, 16], label="width")
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.first = nn.LayerChoice({
            "conv3x3": nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()),
            "conv1x1": nn.Sequential(nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU()),
            "avgpool": nn.AvgPool2d(3, 1, 1),
            "identity": nn.Identity()}, label="first")
        self.second = nn.LayerChoice({
            "conv3x3": nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()),
            "conv1x1": nn.Sequential(nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU()),
            "avgpool": nn.AvgPool2d(3, 1, 1),
            "identity": nn.Identity()}, label="second")
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.second(self.first(self.stem(x)))
        return self.head(x.mean((2, 3)))


def plain_digits() -> tuple[torch.Tensor, ...]:
    d = dataset("digits")
    return d.train_x, d.train_y, d.val_x, d.val_y


SPACES = {
    "noisy_view": (NoisyViewSpace, noisy_digits, {"view": 0, "op": "conv3x3"}),
    "two_layer": (TwoLayerSpace, plain_digits, {"width": 16, "first": "conv3x3", "second": "conv3x3"}),
}


def build(name: str):
    """(space, model, data, planted sample) of a named planted space."""
    cls, data, planted = SPACES[name]
    torch.manual_seed(0)
    model = cls()
    train_x = data()[0]
    return retiarii_ir.trace_space(model, train_x[:2]), model, data(), planted


def train_alone(space, sample, data, epochs: int = 12, seed: int = 0) -> float:
    """Validation accuracy of ``sample`` trained from scratch (Adam with a cosine decay to 0, fixed
    seed and batches); without the decay, seeds of one architecture spread over 10 points."""
    train_x, train_y, val_x, val_y = data
    torch.manual_seed(seed)
    model = retiarii_ir.build_module(space.freeze(sample))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batches = -(-len(train_x) // 64)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * batches)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(0, len(order), 64):
            index = order[i:i + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        return (model(val_x).argmax(1) == val_y).float().mean().item()


def every_sample(space) -> list[dict]:
    """Every architecture of a space without nested choices."""
    choices = space.choices()
    return [dict(zip(choices, values)) for values in itertools.product(*choices.values())]


class Proof(NamedTuple):
    """Every architecture trained alone: (mean, per-seed accuracies, sample), best first."""

    scored: list[tuple[float, list[float], dict]]

    @property
    def margin(self) -> float:
        """The winner's mean minus the runner-up's."""
        return self.scored[0][0] - self.scored[1][0]

    @property
    def standard_error(self) -> float:
        """Of that difference of means, from the two architectures' seed-to-seed spread."""
        return _standard_error(self.scored[0][1], self.scored[1][1])

    def holds(self, planted: dict) -> bool:
        """The planted architecture is first, ahead of every other one by more than 2 standard
        errors of the difference (which takes at least 2 seeds to know)."""
        (best, accs, sample), others = self.scored[0], self.scored[1:]
        return sample == planted and len(accs) > 1 and all(
            best - mean > 2 * _standard_error(accs, other) for mean, other, _ in others)


def _standard_error(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum(statistics.variance(accs) / len(accs) if len(accs) > 1 else 0.0 for accs in (a, b)))


def prove(name: str, seeds: int = 3, epochs: int = 12) -> Proof:
    """Every architecture of the space trained alone over ``seeds`` seeds, best mean first."""
    space, _, data, _ = build(name)
    scored = []
    for sample in every_sample(space):
        accs = [train_alone(space, sample, data, epochs, seed) for seed in range(seeds)]
        scored.append((statistics.mean(accs), accs, space.validate(sample)))
    return Proof(sorted(scored, key=lambda t: -t[0]))
