"""A plan a user reads: per trial, its own nodes, the nodes computed once with others and those
batched with others, by the trial's own module paths; the plans a training used; and the
packages a merged model may build from (``trust=``)."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import retiarii_ir as ir
from retiarii_ir import optimizer
from retiarii_ir.errors import IRError
from retiarii_ir.optimizer import PASSES, DataSpec, TrainConfig, Trial
from retiarii_ir.runtime.training import train_trials

sys.path.insert(0, str(Path(__file__).parent / "packages"))
from userpkg.ops import StochasticDepth  # noqa: E402

SPEC = DataSpec("digits", batch_size=16)


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class Net(nn.Module):
    """A frozen stem (shared when its weights are equal), a block that trains (batched when
    the shapes match), and a head."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = Stem()
        self.block = nn.Conv2d(4, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def _two_trials(width_b: int = 6) -> list[Trial]:
    torch.manual_seed(0)
    a = Net(6)
    b = Net(width_b)
    b.stem.load_state_dict(a.stem.state_dict())
    frozen = ("stem.conv.weight", "stem.conv.bias")
    return [Trial("a", ir.trace(a, torch.randn(2, 1, 8, 8)), SPEC, TrainConfig(seed=0), frozen=frozen),
            Trial("b", ir.trace(b, torch.randn(2, 1, 8, 8)), SPEC, TrainConfig(seed=1), frozen=frozen,
                  initial_state=b.state_dict())]


def test_the_per_trial_table_of_two_trials():
    plan = optimizer.plan(_two_trials(), PASSES)
    a, b = plan.trial_views()
    assert (a.name, a.starts_from, b.starts_from) == ("a", "traced model", "initial_state")
    assert sorted(a.shared) == sorted(b.shared) == ["stem.conv", "stem: relu"]
    assert sorted(a.batched) == sorted(b.batched) == ["block", "head"]
    assert a.own == b.own == ["mean"]
    assert (a.shared_with, a.batched_with, b.shared_with, b.batched_with) == (["b"], ["b"], ["a"], ["a"])
    text = str(plan)
    assert "  a      traced model     1       2        2  b            b" in text
    assert "    shared: a: stem.conv, b: stem.conv" in text
    assert "    batched (Conv2d x2): a: block, b: block" in text
    assert "  b alone: mean" in text
    assert "t1_" not in text  # merged names stay out of the user's view


def test_a_trial_that_matches_nothing_has_only_its_own_nodes():
    plan = optimizer.plan(_two_trials(width_b=5), PASSES)
    a, b = plan.trial_views()
    assert sorted(a.batched) == [] and sorted(b.batched) == []
    assert sorted(a.own) == ["block", "head", "mean"]
    assert a.shared_with == ["b"] and a.batched_with == []


def test_train_trials_returns_the_plans_it_trained_with():
    trials = _two_trials()
    for t in trials:
        t.train = TrainConfig(seed=t.train.seed, max_steps=2)
    results = train_trials(trials, PASSES, autotune=False)
    assert [r.status for r in results] == ["succeeded", "succeeded"]
    assert len(results.plans) == 1 and results.plans[0].trials == trials and results.plans[0].batched
    alone = train_trials(trials, independent=True)
    assert [p.trials for p in alone.plans] == [[trials[0]], [trials[1]]]


class WithUserLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.drop = StochasticDepth(0.0)

    def forward(self, x):
        return self.drop(self.fc(torch.flatten(x, 1)))


def test_trust_reaches_the_planner():
    graph = ir.trace(WithUserLayer(), torch.randn(2, 1, 8, 8), leaf_modules=[StochasticDepth])
    assert "userpkg" in graph.trust  # tracing trusts the model's own package...
    config = TrainConfig(max_steps=2)
    traced = [Trial(f"t{k}", graph, SPEC, config) for k in range(2)]
    assert [r.status for r in train_trials(traced)] == ["succeeded"] * 2  # ...and the merged model inherits it
    untrusted = graph.copy()
    untrusted.trust = ()  # a graph that trusts nothing of its own (built by hand, or from JSON without trust)
    trials = [Trial(f"t{k}", untrusted, SPEC, config) for k in range(2)]
    with pytest.raises(IRError, match="userpkg"):
        ir.build_module(optimizer.plan(trials).graph)
    plan = optimizer.plan(trials, trust=["userpkg"])
    assert "userpkg" in plan.graph.trust
    ir.build_module(plan.graph)
    results = train_trials(trials, trust=["userpkg"])
    assert [r.status for r in results] == ["succeeded"] * 2
    refused = train_trials(trials)
    assert all(r.status == "failed" and "userpkg" in r.error for r in refused)
    with pytest.raises(IRError, match="list of package names"):
        train_trials(trials, trust="userpkg")
