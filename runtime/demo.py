"""``retiarii demo``: the system end to end on real data (scikit-learn's digits)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

import retiarii_ir as ir


class DigitsNet(nn.Module):
    """A small residual CNN for 8x8 digit images, written the usual way."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.block(x) + x)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load_digits_tensors(seed: int = 0):
    """Digits as (train_x, train_y, val_x, val_y) tensors, images scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("the demo needs scikit-learn: pip install -e '.[demo]'") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(x))
    return x[order[:split]], y[order[:split]], x[order[split:]], y[order[split:]]


def train(model: nn.Module, data, epochs: int = 3, seed: int = 0) -> float:
    """Train with a fixed recipe; returns validation accuracy."""
    torch.manual_seed(seed)
    train_x, train_y, val_x, val_y = data
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(train_x), 64):
            optimizer.zero_grad()
            F.cross_entropy(model(train_x[i:i + 64]), train_y[i:i + 64]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(val_x).argmax(1) == val_y).float().mean().item()


def run_demo(quick: bool = False) -> int:
    torch.manual_seed(0)
    data = load_digits_tensors()
    print(f"digits: {len(data[0])} training and {len(data[2])} validation images of 8x8")

    model = DigitsNet().eval()
    start = time.perf_counter()
    graph = ir.trace(model, (data[0][:4],))
    print(f"\n1. traced {type(model).__name__} into {len(graph)} typed nodes "
          f"in {time.perf_counter() - start:.2f}s:\n{graph}")

    graph.validate()
    text = graph.to_json()
    assert ir.Graph.from_json(text).to_json() == text
    print(f"\n2. validated; JSON round trip exact ({len(text) / 1e3:.1f} kB)")

    rebuilt = ir.build_module(ir.Graph.from_json(text))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        diff = (rebuilt(data[2]) - model(data[2])).abs().max().item()
    print(f"3. module rebuilt from the JSON alone, original weights loaded strictly: max |diff| = {diff:.1e}")

    accuracy = train(rebuilt, data, epochs=1 if quick else 3)
    print(f"4. trained the rebuilt module on digits: validation accuracy {accuracy:.3f}")
    return 0
