"""Operator batching, one layer kind at a time on small models: linear layers over sequences,
layer norms, 1-d batch norms, the state a fused module starts from and hands back, and the
timed choice to fuse convolutions. Each merged plan is checked against every trial alone
(outputs, gradients and statistics, after a JSON round trip and code generation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optimizer
import retiarii_ir as ir
from optimizer.merge import initial_state
from tests.test_optimizer_plan import ALL, check_plan_matches_trials, make_plan, merged_module

torch.set_num_threads(1)


def _trials(model: nn.Module, x: torch.Tensor, count: int = 3, **data) -> list[optimizer.Trial]:
    graph = ir.trace(model.eval(), (x,))
    return [optimizer.Trial(f"t{k}", graph, data=optimizer.DataSpec(**data),
                            train=optimizer.TrainConfig(seed=k)) for k in range(count)]


def _kinds(p: optimizer.Plan) -> list[str]:
    return sorted(b.kind for b in p.batched)


class SequenceBlock(nn.Module):
    """Per-step layers over [batch, steps, features]: the rank-3 forms of Linear and LayerNorm."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.down = nn.Linear(8, 5, bias=False)

    def forward(self, x):
        return self.down(nn.functional.gelu(self.norm(self.up(x))))


class VectorBlock(nn.Module):
    """The rank-2 forms, and a 1-d batch norm between them."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(6, 8, bias=False)
        self.norm = nn.LayerNorm(8)
        self.bn = nn.BatchNorm1d(8)
        self.down = nn.Linear(8, 5)

    def forward(self, x):
        return self.down(torch.relu(self.bn(self.norm(self.up(x)))))


class ChannelSequence(nn.Module):
    """A 1-d batch norm over [batch, channels, length]."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return torch.tanh(self.bn(x)) * 2


@pytest.mark.parametrize("passes", [("dedup", "batch"), ALL])
def test_linear_and_layer_norm_over_sequences_batch_and_match_each_trial(passes):
    x = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(0))
    p = check_plan_matches_trials(_trials(SequenceBlock(), x), passes, x)
    assert _kinds(p) == ["LayerNorm", "Linear", "Linear", "lane"]


def test_linear_layer_norm_and_batch_norm_on_vectors_batch_and_match_each_trial():
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    p = check_plan_matches_trials(_trials(VectorBlock(), x), ("dedup", "batch"), x)
    assert _kinds(p) == ["BatchNorm1d", "LayerNorm", "Linear", "Linear", "lane"]


def test_batch_norm_over_channels_and_length_batches_and_matches_each_trial():
    x = torch.randn(3, 4, 9, generator=torch.Generator().manual_seed(2))
    p = check_plan_matches_trials(_trials(ChannelSequence(), x, count=2), ("dedup", "batch"), x)
    assert "BatchNorm1d" in _kinds(p)


def test_a_fused_module_starts_and_hands_back_state_like_the_trials_alone():
    """Built fresh, a fused batch norm's statistics are those of new batch norms (mean 0,
    variance 1, no batches counted); each trial's state comes back with the keys, shapes and
    dtypes of its own module's."""
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    trials = _trials(VectorBlock(), x)
    p = make_plan(trials, ("dedup", "batch"))
    fresh = ir.build_module(p.graph)
    fused = {k: v for k, v in fresh.state_dict().items()
             if k.startswith("fused.") and (".running_" in k or k.endswith("num_batches_tracked"))}
    new = nn.BatchNorm1d(8 * len(trials)).state_dict()
    assert {k.rpartition(".")[2] for k in fused} == {"running_mean", "running_var", "num_batches_tracked"}
    for key, value in fused.items():
        expected = new[key.rpartition(".")[2]]
        assert value.dtype == expected.dtype and torch.equal(value, expected), key
    merged = merged_module(p)
    for k, trial in enumerate(trials):
        own, back = initial_state(trial), p.trial_state(merged, k)
        assert list(back) == list(own)
        for key in own:
            assert (back[key].shape, back[key].dtype) == (own[key].shape, own[key].dtype), key
            assert torch.equal(back[key], own[key]), key


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.b = nn.Conv2d(6, 6, 3, padding="same", dilation=2, groups=2, bias=False)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("fusing_wins", [True, False])
def test_convolutions_fuse_only_where_timing_on_their_real_shapes_says_so(monkeypatch, fusing_wins):
    """The timing is asked about each convolution exactly as it runs in the merged model (how
    many trials, batch size, channels, spatial size, kernel, stride, padding, dilation,
    groups), and its answer decides."""
    import optimizer.autotune

    asked = []

    def timing(*config):
        asked.append(config)
        return fusing_wins

    monkeypatch.setattr(optimizer.autotune, "grouped_conv_wins", timing)
    x = torch.randn(2, 4, 10, 10, generator=torch.Generator().manual_seed(4))
    trials = _trials(TwoConvs(), x, count=3, batch_size=16)
    p = optimizer.plan(trials, ("dedup", "batch"), autotune=True)
    threads = torch.get_num_threads()
    assert sorted(asked, key=str) == sorted([
        (3, 16, 4, 6, (10, 10), (3, 3), (2, 2), (1, 1), (1, 1), 1, "cpu", threads),
        (3, 16, 6, 6, (5, 5), (3, 3), (1, 1), "same", (2, 2), 2, "cpu", threads)], key=str)
    assert _kinds(p).count("Conv2d") == (2 if fusing_wins else 0)
