"""Golden files: the exact source emitted for two small graphs, so any change is seen in review.

The test only compares. After an intended change, regenerate the files with
``python -m tests.update_golden`` and review the diff.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from retiarii_ir import codegen
import retiarii_ir as ir
from tests.helpers import max_abs_diff

GOLDEN = Path(__file__).parent / "golden"


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


class TinyResNet(nn.Module):
    """Sequential containers, a residual block class, an in-place ReLU and a raw parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layers = nn.Sequential(Block(8), Block(8))
        self.head = nn.Linear(8, 4)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        x = self.layers(self.stem(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x) * self.scale


class TwoHeads(nn.Module):
    """Several inputs, a keyword default, nested outputs, slices, Ellipsis, dtypes and constants."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.heads = nn.ModuleList([nn.Linear(8, 3), nn.Linear(8, 2)])
        self.register_buffer("offset", torch.arange(3.0), persistent=False)
        self.sign = torch.tensor([1.0, -1.0])  # a plain tensor attribute: a graph constant

    def forward(self, x, y, scale: float = 2.0):
        h = torch.relu(self.embed(x[..., :6]))
        a = self.heads[0](h) + self.offset
        b = (self.heads[1](h) * self.sign).to(torch.float64)
        return {"a": a * scale, "pair": (b, y[:, 1:].sum(dim=-1, keepdim=True))}


CASES = {
    "tiny_resnet": (TinyResNet, lambda: (torch.randn(2, 3, 8, 8),)),
    "two_heads": (TwoHeads, lambda: (torch.randn(2, 7), torch.randn(2, 5))),
}


def emitted(name: str):
    """The model of case ``name`` (seeded weights), its traced graph and the source emitted for it."""
    build, inputs = CASES[name]
    torch.manual_seed(0)
    model = build().eval()
    graph = ir.trace(model, inputs())
    return model, graph, codegen.to_source(graph)


@pytest.mark.parametrize("name", sorted(CASES))
def test_emitted_source_matches_the_golden_file(name):
    model, graph, source = emitted(name)
    golden = GOLDEN / f"{name}.py"
    assert golden.exists(), f"missing {golden}; create it with python -m tests.update_golden"
    assert source == golden.read_text(), f"emitted code for {name} changed; review, then python -m tests.update_golden"
    inputs = CASES[name][1]

    generated = codegen.load(graph)().eval()
    generated.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        args = inputs()
        assert max_abs_diff(generated(*args), model(*args)) <= 1e-6
