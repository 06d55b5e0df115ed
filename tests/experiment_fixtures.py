"""A tiny model space and evaluator functions for the experiment tests. They live in a module
(not in a test file) so that worker processes and Ray tasks import them by name."""

import os
import signal
import time

import torch
import torch.nn.functional as F

import retiarii_ir as ir
from retiarii_ir import nn
from retiarii_ir.runtime import report


@nn.model_wrapper
class TinySpace(nn.Module):
    """8x8 one-channel images; 2 widths x 2 ops = 4 architectures."""

    def __init__(self) -> None:
        super().__init__()
        width = nn.ValueChoice([4, 8], label="width")
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.op = nn.LayerChoice({"conv": nn.Conv2d(width, width, 3, padding=1),
                                  "pool": nn.MaxPool2d(3, stride=1, padding=1)}, label="op")
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.op(self.stem(x))), 1), 1))


@nn.model_wrapper
class FrozenStemSpace(nn.Module):
    """A stem loaded from ``stem`` (a state_dict file) and frozen, then 2 searched widths."""

    def __init__(self, stem: str | None = None, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        if stem is not None:
            self.stem.load_state_dict(torch.load(stem, weights_only=True))
        self.stem.requires_grad_(False)
        width = nn.ValueChoice([4, 8], label="width")
        self.body = nn.Conv2d(6, width, 3, padding=1)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.body(F.relu(self.stem(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@nn.model_wrapper
class TiedFrozenSpace(nn.Module):
    """A frozen 1x1 convolution whose weight a second one shares (tied), then a searched width."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)
        self.b.weight = self.a.weight
        with torch.no_grad():
            self.a.weight.fill_(0.5)
        self.a.requires_grad_(False)
        width = nn.ValueChoice([4, 8], label="width")
        self.body = nn.Conv2d(1, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.body(self.b(self.a(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def frozen_stem_state(model: torch.nn.Module) -> dict:
    """What a function evaluator saw: the stem's values and whether they train."""
    report(1.0)
    return {"weight": model.stem.weight.detach().clone(), "trains": model.stem.weight.requires_grad,
            "body_trains": model.body.weight.requires_grad}


SEEN_FROZEN: list[dict] = []  # what spy_frozen saw, for a test in this process (in-process executor)


def spy_frozen(model: torch.nn.Module) -> float:
    SEEN_FROZEN.append(frozen_stem_state(model))
    return 1.0


def tiny_space() -> ir.ModelSpace:
    """The same space, returned ready-made by a factory (no example inputs needed)."""
    return ir.trace_space(TinySpace(), torch.randn(2, 1, 8, 8))


def parameter_count(model: torch.nn.Module, offset: float = 0.0) -> float:
    """A deterministic metric with no training: parameters (and three intermediate reports)."""
    count = sum(p.numel() for p in model.parameters())
    for step in range(3):
        report(count * (step + 1) / 3)
    return count + offset


def behave(model: torch.nn.Module, behaviour: str = "ok", delay: float = 0.0) -> float:
    """Succeed, raise, hang or kill its own process, as the searched ``behaviour`` says."""
    time.sleep(delay)
    if behaviour == "crash":
        raise ValueError("this trial crashes on purpose")
    if behaviour == "hang":
        time.sleep(3600)
    if behaviour == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return float(sum(p.numel() for p in model.parameters()))


def slow_count(model: torch.nn.Module, delay: float = 0.3) -> float:
    """Parameter count after a pause: long enough to kill the experiment mid-run."""
    time.sleep(delay)
    report(1.0)
    return float(sum(p.numel() for p in model.parameters()))


def deadly_data():
    """A data set loader that kills the process loading it (as the out-of-memory killer would)."""
    os.kill(os.getpid(), signal.SIGKILL)


def broken_data():
    """A data set loader that raises, as a user's loader with a wrong path would."""
    raise FileNotFoundError("no such folder: /data/images (the loader of this data set)")


def announced_sleep(model: torch.nn.Module, delay: float = 20.0) -> float:
    """Leaves ``started-PID`` in the current folder, then sleeps: a test sees its trial running."""
    with open(f"started-{os.getpid()}", "w"):
        pass
    time.sleep(delay)
    return float(sum(p.numel() for p in model.parameters()))
