"""Operator batching, one layer kind at a time on small models: linear layers over sequences,
layer norms, 1-d batch norms, the state a fused module starts from and hands back, and the
timed choice to fuse convolutions. Each merged plan is checked against every trial alone
(outputs, gradients and statistics, after a JSON round trip and code generation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from retiarii_ir import optimizer
import retiarii_ir as ir
from retiarii_ir.optimizer.merge import initial_state
from tests.test_optimizer_plan import ALL, check_plan_matches_trials, describe, make_plan, merged_module

torch.set_num_threads(1)


def _trials(model: nn.Module, x: torch.Tensor, count: int = 3, **data) -> list[optimizer.Trial]:
    graph = ir.trace(model.eval(), (x,))
    return [optimizer.Trial(f"t{k}", graph, data=optimizer.DataSpec(**data),
                            train=optimizer.TrainConfig(seed=k)) for k in range(count)]


def _kinds(p: optimizer.Plan) -> list[str]:
    return sorted(b.kind for b in p.batched)


class SequenceBlock(nn.Module):
    """Per-step layers over [batch, steps, features]: the rank-3 forms of Linear and LayerNorm
    (with its own eps), and an activation with a keyword argument."""

    def __init__(self, slope: float = 0.2):
        super().__init__()
        self.up = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8, eps=0.5)
        self.down = nn.Linear(8, 5, bias=False)
        self.slope = slope

    def forward(self, x):
        return self.down(nn.functional.leaky_relu(self.norm(self.up(x)), negative_slope=self.slope))


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


def _calls(graph: ir.Graph, *targets: str) -> int:
    return sum(n.target in targets for n in graph.nodes)


@pytest.mark.parametrize("passes", [("dedup", "batch"), ALL])
def test_linear_and_layer_norm_over_sequences_batch_and_match_each_trial(passes):
    """The fused region passes one stacked tensor from layer to layer: the trials' inputs are
    stacked once at the start and the result split once at the end."""
    x = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(0))
    p = check_plan_matches_trials(_trials(SequenceBlock(), x), passes, x)
    assert _kinds(p) == ["LayerNorm", "Linear", "Linear", "lane"]
    assert (_calls(p.graph, "torch.stack", "torch.cat"), _calls(p.graph, "torch.unbind", "torch.chunk")) == (1, 1)


def test_trials_with_two_kinds_of_optimizer_keep_their_own_weights_and_still_match():
    """Weights that cannot be stacked (one kind of optimizer per tensor) are joined each step,
    for the rank-3 Linear bias and the LayerNorm scale and shift as well."""
    x = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(5))
    graph = ir.trace(SequenceBlock().eval(), (x,))
    trials = [optimizer.Trial(f"t{k}", graph, train=optimizer.TrainConfig(optimizer=kind, seed=k))
              for k, kind in enumerate(["sgd", "adam", "sgd"])]
    p = check_plan_matches_trials(trials, ("dedup", "batch"), x)
    assert _kinds(p) == ["LayerNorm", "Linear", "Linear", "lane"]
    assert all(ref.rows is None for slot in p.slots for ref in slot.state.values())


def test_an_activation_with_other_arguments_is_not_fused_with_it():
    """Two trials that differ only in a keyword argument of one op run that op apart."""
    x = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(6))
    trials = [optimizer.Trial(f"t{k}", ir.trace(SequenceBlock(slope).eval(), (x,)),
                              train=optimizer.TrainConfig(seed=k)) for k, slope in enumerate([0.2, 0.01])]
    p = check_plan_matches_trials(trials, ("dedup", "batch"), x)
    assert _kinds(p) == ["LayerNorm", "Linear", "Linear"]


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
    """The caller's decision is asked about each convolution exactly as it runs in the merged
    model (how many trials, batch size, channels, spatial size, kernel, stride, padding,
    dilation, groups), and its answer decides."""
    asked = []

    def fuse(group):
        asked.append(group)
        return fusing_wins

    x = torch.randn(2, 4, 10, 10, generator=torch.Generator().manual_seed(4))
    trials = _trials(TwoConvs(), x, count=3, batch_size=16)
    p = optimizer.plan(trials, ("dedup", "batch"), fuse=fuse)
    assert sorted(asked, key=str) == sorted([
        optimizer.ConvFusion(3, 16, 4, 6, (10, 10), (3, 3), (2, 2), (1, 1), (1, 1), 1),
        optimizer.ConvFusion(3, 16, 6, 6, (5, 5), (3, 3), (1, 1), "same", (2, 2), 2)], key=str)
    assert _kinds(p).count("Conv2d") == (2 if fusing_wins else 0)


def test_the_trainers_decision_times_each_shape_on_its_device_and_thread_count(monkeypatch):
    import retiarii_ir.runtime.training.autotune as autotune

    asked = []
    monkeypatch.setattr(autotune, "grouped_conv_wins", lambda *config: asked.append(config) or True)
    group = optimizer.ConvFusion(3, 16, 6, 6, (5, 5), (3, 3), (1, 1), "same", (2, 2), 2)
    assert autotune.fusing_pays("meta")(group) is True
    assert asked == [(3, 16, 6, 6, (5, 5), (3, 3), (1, 1), "same", (2, 2), 2, "meta", torch.get_num_threads())]


class Lanes(nn.Module):
    """Every kind of op a fused region grows through, in both layouts, and ops it must stop at."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 2 * 2, 6)
        self.fc_act = nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        y = self.bn(y) + torch.relu(y)  # the first user of y is a layer of its own, the second a lane
        y = nn.functional.max_pool2d(self.pool(self.act(y)), 2).sigmoid()
        h = self.fc(torch.flatten(y, 1))  # flattening is not applied lane by lane
        return self.fc_act(h).tanh().flatten(1)


def test_fused_regions_grow_through_each_kind_of_op_and_stop_at_others():
    """Functions, modules and methods, element- and channel-wise, in the channel layout of
    convolutions and the leading layout of linear layers; reshaping ops end the region."""
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    p = check_plan_matches_trials(_trials(Lanes(), x), ("dedup", "batch"), x)
    assert [(b.kind, b.members[0]) for b in p.batched] == [
        ("Conv2d", "t0_conv"), ("BatchNorm2d", "t0_bn"), ("lane", "t0_relu"), ("lane", "t0_add"), ("lane", "t0_act"),
        ("lane", "t0_pool"), ("lane", "t0_max_pool2d"), ("lane", "t0_sigmoid"), ("Linear", "t0_fc"),
        ("lane", "t0_fc_act"), ("lane", "t0_tanh")]


class Flagged(nn.Module):
    """Reads of the training flag before and after a fused batch norm, a weight read directly,
    and ops copied as they are with keyword arguments (one of them the flag)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 8))
        self.out = nn.Linear(8, 4)

    def forward(self, x):
        h = self.fc(x) * (2 - self.training)
        h = self.bn(h) * (1 + self.training)
        h = torch.sum(torch.stack([h, h * self.scale], dim=0), dim=0)
        return nn.functional.dropout(self.out(h), p=0.0, training=self.training)


def test_the_training_flag_weights_read_directly_and_copied_ops_stay_right():
    """In train and eval mode every trial computes what it computes alone; the merged graph
    reads the flag once, and batching keeps each node it only copies as it was (arguments,
    scope)."""
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(8))
    trials = _trials(Flagged(), x)
    p = check_plan_matches_trials(trials, ("dedup", "batch"), x)
    assert "BatchNorm1d" in _kinds(p)
    assert sum(n.op == "get_attr" and n.target == ir.node.TRAINING_FLAG for n in p.graph.nodes) == 1
    unbatched = make_plan(trials, ("dedup",)).graph
    copied = [n for n in p.graph.nodes if n.name in unbatched and n.op == "call_function"
              and n.target == unbatched.node(n.name).target]
    assert {n.target for n in copied} >= {"torch.sum", "torch.stack", "torch.nn.functional.dropout"}
    for node in copied:
        assert (node.scope, sorted(node.kwargs)) == (unbatched.node(node.name).scope,
                                                     sorted(unbatched.node(node.name).kwargs)), node.name


class Ordered(nn.Module):
    """Two convolutions of the same shape, applied in either order."""

    def __init__(self, p_first: bool):
        super().__init__()
        self.p, self.q = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.p_first = p_first

    def forward(self, x):
        return self.q(torch.relu(self.p(x))) if self.p_first else self.p(torch.relu(self.q(x)))


def test_layer_groups_that_wait_on_each_other_are_split_and_the_plan_stays_right():
    """Trial 0 runs p then q, trial 1 q then p: fusing both p's and both q's would make each
    fused layer wait for the other. One group is split back into single layers."""
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(9))
    trials = [optimizer.Trial(f"t{k}", ir.trace(Ordered(k == 0).eval(), (x,)), train=optimizer.TrainConfig(seed=k))
              for k in range(2)]
    p = check_plan_matches_trials(trials, ("dedup", "batch"), x)
    assert _kinds(p).count("Conv2d") == 1


def test_planning_is_deterministic():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    trials = _trials(Lanes(), x)
    assert describe(make_plan(trials).graph) == describe(make_plan(trials).graph)


class ReadsWeightsOnly(nn.Module):
    """A layer whose weights are read directly and never called, beside a layer that batches."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.side = nn.Linear(6, 6)

    def forward(self, x):
        return self.fc(x) + nn.functional.linear(x, self.side.weight, self.side.bias)


def test_a_layer_whose_weights_are_only_read_keeps_them():
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(11))
    p = check_plan_matches_trials(_trials(ReadsWeightsOnly(), x), ("dedup", "batch"), x)
    assert "Linear" in _kinds(p) and {"t0.side", "t1.side", "t2.side"} <= set(p.graph.modules)


class Unfusable(nn.Module):
    """Next to a convolution that fuses, layers one fused kernel cannot stand in for: reflect
    padding (a grouped ``conv2d`` pads with zeros), batch norms without a scale, without running
    statistics or with a cumulative average, a layer norm over two dimensions, and a linear
    layer over a rank-4 tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
        self.bn_plain = nn.BatchNorm2d(4, affine=False)
        self.bn_batch_stats = nn.BatchNorm2d(4, track_running_stats=False)
        self.bn_cumulative = nn.BatchNorm2d(4, momentum=None)
        self.ln_2d = nn.LayerNorm([6, 6])
        self.fc_4d = nn.Linear(6, 5)

    def forward(self, x):
        y = self.bn_cumulative(self.bn_batch_stats(self.bn_plain(self.reflect(self.conv(x)))))
        return self.fc_4d(self.ln_2d(y))


class UnfusableVector(nn.Module):
    """Next to a linear layer that fuses: layer norms without scale and shift or without a
    shift, a layer whose weights do not train, a layer no fused kernel exists for, and a layer
    called by keyword."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.ln_plain = nn.LayerNorm(8, elementwise_affine=False)
        self.ln_no_bias = nn.LayerNorm(8, bias=False)
        self.frozen = nn.Linear(8, 8)
        self.prelu = nn.PReLU()
        self.by_keyword = nn.Linear(8, 4)

    def forward(self, x):
        return self.by_keyword(input=self.prelu(self.frozen(self.ln_no_bias(self.ln_plain(self.fc(x))))))


def test_layers_no_fused_kernel_can_stand_in_for_stay_one_per_trial():
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(12))
    p = check_plan_matches_trials(_trials(Unfusable(), x, count=2), ("dedup", "batch"), x)
    assert [(b.kind, b.members) for b in p.batched] == [("Conv2d", ["t0_conv", "t1_conv"])]

    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(13))
    graph = ir.trace(UnfusableVector().eval(), (x,))
    trials = [optimizer.Trial(f"t{k}", graph, frozen=("frozen.weight", "frozen.bias"),
                              train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    p = check_plan_matches_trials(trials, ("dedup", "batch"), x)
    assert [(b.kind, b.members) for b in p.batched] == [("Linear", ["t0_fc", "t1_fc"])]


class Strided(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x))


def test_one_layer_on_inputs_of_different_sizes_is_not_fused():
    """A strided 1x1 convolution maps 8x8 and 7x7 images to 4x4 alike: same layer, same output
    type, but the inputs cannot be stacked, so each trial runs its own."""
    images = [torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size)) for size in (8, 7)]
    trials = [optimizer.Trial(f"t{k}", ir.trace(Strided().eval(), (x,)), train=optimizer.TrainConfig(seed=k))
              for k, x in enumerate(images)]
    p = make_plan(trials, ("dedup", "batch"))
    assert p.batched == [] and len(p.inputs) == 2
    merged = merged_module(p)
    outs = merged(*images)
    for k, trial in enumerate(trials):
        alone = ir.build_module(trial.graph)
        alone.load_state_dict(initial_state(trial))
        torch.testing.assert_close(outs[k], alone(images[k]))


class BatchAlongHeight(nn.Module):
    """A convolution whose input height is the batch size: its work is unknown until it runs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x.transpose(0, 2)).transpose(0, 2)


def test_a_convolution_whose_size_follows_the_batch_fuses_without_timing(monkeypatch):
    """No timing can be run ahead for a size that is known only when the batch arrives: such a
    convolution fuses as it would without timing, and the fused model still matches each trial."""
    asked = []
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(14))
    trials = _trials(BatchAlongHeight(), x, count=2)
    assert str(trials[0].graph.node("conv").args[0].type) == "f32[5,3,B,5]"
    p = optimizer.plan(trials, ("dedup", "batch"), fuse=lambda group: asked.append(group) or False)
    assert asked == [] and _kinds(p) == ["Conv2d"]
    outs = merged_module(p)(x)
    for k, trial in enumerate(trials):
        alone = ir.build_module(trial.graph)
        alone.load_state_dict(initial_state(trial))
        torch.testing.assert_close(outs[k], alone(x), rtol=1e-4, atol=1e-5)


class KeywordValues(nn.Module):
    """Activations whose keyword argument is a value computed in the graph: a slope each trial
    reads from its own buffer, and a scale computed from the input (equal for every trial, so
    common-subgraph elimination computes it once)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("slope", torch.tensor(0.1))

    def forward(self, x):
        y = self.conv(x)
        return (nn.functional.leaky_relu(y, negative_slope=self.slope.item())
                + nn.functional.elu(y, alpha=x.abs().mean().item()))


def test_an_op_fuses_only_if_every_trial_passes_it_the_same_keyword_value():
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(15))
    model = KeywordValues().eval()
    graph = ir.trace(model, (x,))
    trials = []
    for k, slope in enumerate([0.1, 0.3]):
        torch.manual_seed(k)
        state = dict(KeywordValues().state_dict(), slope=torch.tensor(slope))
        trials.append(optimizer.Trial(f"t{k}", graph, initial_state=state, train=optimizer.TrainConfig(seed=k)))
    elu = next(n for n in graph.nodes if n.target == "torch.nn.functional.elu")
    assert isinstance(elu.kwargs["alpha"], ir.Node)
    p = check_plan_matches_trials(trials, ALL, x)
    assert [(b.kind, b.members) for b in p.batched] == [("Conv2d", ["t0_conv", "t1_conv"]),
                                                         ("lane", ["t0_elu", "t1_elu"])]


class NormRowsThenPool(nn.Module):
    """A layer norm over the last dimension of an image, then pooling: the fused layer norm
    stacks the trials in front ([K, B, C, H, W]), which a 2-d pool cannot take."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(6)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(self.norm(x))


def test_pooling_after_a_layer_fused_in_front_of_the_batch_runs_per_trial():
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(16))
    p = check_plan_matches_trials(_trials(NormRowsThenPool(), x, count=2), ("dedup", "batch"), x)
    assert [(b.kind, b.members) for b in p.batched] == [("LayerNorm", ["t0_norm", "t1_norm"])]


class FirstUserNotALane(nn.Module):
    """The first op reading a fused convolution reshapes it (a region stops there); the second
    applies an activation (the region grows through it)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y.flatten(1).sum(1, keepdim=True) + torch.relu(y).mean((1, 2, 3)).unsqueeze(1)


class AddInputByKeyword(nn.Module):
    """A residual addition that passes the input by keyword: [B, C] does not broadcast
    against the fused [B, K*C]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return torch.add(self.conv(x), other=x)


class TwoLayouts(nn.Module):
    """A sum of a convolution (trials fused along channels) and a layer norm over rows (trials
    fused in front): no one layout holds both."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.LayerNorm(6)

    def forward(self, x):
        return self.conv(x) + self.norm(x)


class SharedStatistics(nn.Module):
    """Batch norms over [B, C] plus statistics of the input that every trial shares: a vector
    [C] does not broadcast against the fused [B, K*C], a number does."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(6)
        self.bn2 = nn.BatchNorm1d(6)

    def forward(self, x):
        return (self.bn(x) + x.mean(0)) + self.bn2(x) * x.abs().mean()


@pytest.mark.parametrize("model, shape, passes, batched", [
    (FirstUserNotALane, (2, 3, 6, 6), ("dedup", "batch"), [("Conv2d", "t0_conv"), ("lane", "t0_relu")]),
    (AddInputByKeyword, (2, 3, 6, 6), ("dedup", "batch"), [("Conv2d", "t0_conv")]),
    (TwoLayouts, (2, 3, 6, 6), ("dedup", "batch"), [("Conv2d", "t0_conv"), ("LayerNorm", "t0_norm")]),
    (SharedStatistics, (5, 6), ALL, [("BatchNorm1d", "t0_bn"), ("BatchNorm1d", "t0_bn2"), ("lane", "t0_mul")]),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_regions_grow_only_through_ops_that_take_the_fused_value_as_it_is(model, shape, passes, batched):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(17))
    p = check_plan_matches_trials(_trials(model(), x, count=2), passes, x)
    assert sorted((b.kind, b.members[0]) for b in p.batched) == sorted(batched)


def test_a_fused_lane_node_is_named_and_scoped_after_the_first_trial_it_serves():
    """The report names it and ``nodes_in`` finds it under the first trial; its origin lists all."""
    x = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(0))
    p = make_plan(_trials(SequenceBlock(), x), ("dedup", "batch"))
    lane = next(b for b in p.batched if b.kind == "lane")
    node = p.graph.node(lane.fused)
    assert lane.fused.startswith("t0_") and node.scope == "t0"
    assert node in p.graph.nodes_in("t0") and node not in p.graph.nodes_in("t1")
    assert sorted({trial for trial, _ in node.origin}) == ["t0", "t1", "t2"]
