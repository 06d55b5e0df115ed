"""Inspecting a graph must not move the global random stream: a user's seeded run (dropout masks,
later initialisations) draws the same numbers whether or not types were inferred, a plan was made
or a merged module was built in between."""

from __future__ import annotations

import torch
from torch import nn

from retiarii_ir import optimizer
import retiarii_ir as ir
from retiarii_ir.optimizer import DataSpec, TrainConfig, Trial
from retiarii_ir.runtime.training.trainer import build_merged_module


class WithDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.drop(self.conv(x)), 1), 1))


def draws_after(action) -> torch.Tensor:
    torch.manual_seed(123)
    action()
    return torch.rand(5)


def test_type_inference_planning_and_building_leave_the_random_stream_alone():
    torch.manual_seed(0)
    graph = ir.trace(WithDropout(), (torch.randn(2, 1, 8, 8),))
    trials = [Trial(f"t{k}", graph, DataSpec(), TrainConfig(seed=k)) for k in range(2)]
    untouched = draws_after(lambda: None)
    assert not torch.equal(untouched, draws_after(lambda: torch.rand(1)))  # the probe can see a draw
    assert torch.equal(draws_after(graph.infer_types), untouched)
    assert torch.equal(draws_after(lambda: optimizer.plan(trials)), untouched)
    assert torch.equal(draws_after(lambda: build_merged_module(graph)), untouched)
