"""Data factories a test names by reference: good ones with random augmentation, and every way
a user's data can go wrong. They live in a module so loader workers and worker processes import
them by name."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch
from torch.utils.data import Dataset


class Shapes(Dataset):
    """Random 1x8x8 images with a label, augmented with noise and a flip drawn per item."""

    def __init__(self, n: int, seed: int, noise: float = 0.1, fail_at: int | None = None, how: str = "") -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 1, 8, 8, generator=g)
        self.y = (self.x[:, 0, :, :4].mean((1, 2)) > self.x[:, 0, :, 4:].mean((1, 2))).long()
        self.noise, self.fail_at, self.how = noise, fail_at, how

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if i == self.fail_at:
            if self.how == "raise":
                raise ValueError(f"cannot decode image {i}")
            if self.how == "shape":
                return torch.zeros(1, 7, 8), self.y[i]
            if self.how == "dtype":
                return self.x[i].double(), self.y[i]
            if self.how == "crash":
                os._exit(3)
            if self.how == "hang":
                time.sleep(3600)
        x = self.x[i] + self.noise * torch.randn(1, 8, 8)
        return (x.flip(-1) if torch.rand(()) < 0.5 else x), self.y[i]


def shapes(n: int = 256, seed: int = 0):
    return Shapes(n, seed), Shapes(64, seed + 1, noise=0.0)


def failing(how: str, n: int = 256):
    """Shapes whose item 37 (of the training split) goes wrong in the way ``how`` names."""
    return Shapes(n, 0, fail_at=37, how=how), Shapes(64, 1, noise=0.0)


def raising_factory():
    raise FileNotFoundError("no such folder: /data/images")


def wrong_type():
    return [1, 2, 3]


def broken_collate(batch):
    raise RuntimeError("this collate cannot")


class OwnRandomState(Shapes):
    """Draws from a numpy Generator made once: items differ each time they are prepared."""

    def __init__(self, n: int) -> None:
        super().__init__(n, 0)
        self.rng = np.random.default_rng(0)

    def __getitem__(self, i: int):
        return self.x[i] + float(self.rng.normal()), self.y[i]


def own_random_state():
    return OwnRandomState(128), Shapes(32, 1, noise=0.0)


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A loss of the user's own: cross entropy plus a small L1 penalty on the logits."""
    return torch.nn.functional.cross_entropy(output, target) + 1e-3 * output.abs().mean()


def balanced_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """A metric of the user's own: the mean of the per-class recalls."""
    predicted = outputs.argmax(1)
    recalls = [(predicted[targets == c] == c).float().mean().item() for c in targets.unique()]
    return sum(recalls) / len(recalls)


class Slow(Shapes):
    """Items that take ``delay`` seconds each: loader workers stay busy long enough to be seen."""

    def __init__(self, n: int, seed: int, delay: float) -> None:
        super().__init__(n, seed)
        self.delay = delay

    def __getitem__(self, i: int):
        time.sleep(self.delay)
        return super().__getitem__(i)


def slow_shapes(delay: float = 0.05, n: int = 256):
    return Slow(n, 0, delay), Shapes(32, 1, noise=0.0)


class PythonAndNumpyNoise(Shapes):
    """Augmentation drawn from ``random``'s and numpy's global streams (as albumentations does)."""

    def __getitem__(self, i: int):
        x = self.x[i] + 0.1 * float(np.random.normal()) + 0.05 * random.random()
        return x, self.y[i]


def python_and_numpy_noise():
    return PythonAndNumpyNoise(256, 0), Shapes(32, 1, noise=0.0)
