"""Common-subgraph elimination on small models: what may be computed once for several trials
(equal values from equal frozen weights) and what never may (random draws, values an op
changes in place). Plans are checked against every trial alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from retiarii_ir import optimizer
import retiarii_ir as ir
from retiarii_ir.optimizer.merge import initial_state
from tests.test_optimizer_plan import check_plan_matches_trials, make_plan

torch.set_num_threads(1)
X = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))


def _frozen_trials(model: nn.Module, count: int = 2) -> list[optimizer.Trial]:
    """Trials of one model with the same frozen weights: whatever they compute alike may be shared."""
    torch.manual_seed(0)
    graph = ir.trace(model.eval(), (X,))
    state = model.state_dict()
    return [optimizer.Trial(f"t{k}", graph, frozen=tuple(state), initial_state=state) for k in range(count)]


def _targets(graph: ir.Graph) -> list[str]:
    return [n.target for n in graph.nodes if n.op not in ("input", "output")]


class Op(nn.Module):
    """``op(x)`` next to ``torch.relu(x)``, which every trial computes alike and so shares."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op(x), torch.relu(x)


RANDOM = {
    "torch.rand_like": lambda x: torch.rand_like(x) + x,
    "torch.nn.functional.dropout": lambda x: nn.functional.dropout(x, 0.5),
    "torch.ops.aten.bernoulli.default": lambda x: torch.ops.aten.bernoulli.default(x.sigmoid()),
    "torch.ops.aten.rand_like.default": lambda x: torch.ops.aten.rand_like.default(x),
    "torch.ops.aten.native_dropout.default": lambda x: torch.ops.aten.native_dropout.default(x, 0.5, True)[0],
    "uniform_": lambda x: x.clone().uniform_(),
    "bernoulli": lambda x: x.sigmoid().bernoulli(),
    "RReLU": nn.RReLU(),
    "Dropout": nn.Dropout(0.5),
}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_draws_are_never_shared(name):
    """Functions, aten operators, methods and modules that draw random numbers stay one per trial."""
    trials = _frozen_trials(Op(RANDOM[name]))
    p = make_plan(trials, ("dedup", "cse"))
    merged = _targets(p.graph)
    if name in ("RReLU", "Dropout"):
        merged = [p.graph.modules[t].class_name if t in p.graph.modules else t for t in merged]
    assert merged.count(name) == 2, merged
    assert merged.count("torch.relu") == 1, "the deterministic op is shared"


DETERMINISTIC = {
    "torch.ops.aten.relu.default": lambda x: torch.ops.aten.relu.default(x),
    "sigmoid": lambda x: x.sigmoid(),
    "torch.tanh": torch.tanh,
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_ops_of_each_kind_are_shared(name):
    trials = _frozen_trials(Op(DETERMINISTIC[name]), count=3)
    p = make_plan(trials, ("dedup", "cse"))
    assert _targets(p.graph).count(name) == 1


class EncodeTwice(nn.Module):
    """A frozen encoder applied to the input (equal for every trial) and again after a layer
    that trains (different for every trial)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.enc(self.fc(self.enc(x)))


def test_a_frozen_layer_shared_for_one_call_keeps_its_weights_for_the_other():
    torch.manual_seed(0)
    model = EncodeTwice()
    graph = ir.trace(model.eval(), (X,))
    state = model.state_dict()
    trials = [optimizer.Trial(f"t{k}", graph, frozen=("enc.weight", "enc.bias"), initial_state=state,
                              train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    p = check_plan_matches_trials(trials, ("dedup", "cse"), X)
    assert [n.target for n in p.graph.nodes if n.op == "call_module"] == ["t0.enc", "t0.fc", "t0.enc", "t1.fc", "t1.enc"]
    assert {"t0.enc", "t1.enc"} <= set(p.graph.modules)


class SharedModule(nn.Module):
    """One layer under two names (``b`` is ``a``), applied twice."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.b(self.a(x)))


def test_a_frozen_layer_with_a_second_name_is_shared_and_both_names_still_find_it():
    torch.manual_seed(0)
    model = SharedModule()
    graph = ir.trace(model.eval(), (X,))
    assert graph.aliases == {"b": "a"}
    state = model.state_dict()
    trials = [optimizer.Trial(f"t{k}", graph, frozen=("a.weight", "a.bias", "b.weight", "b.bias"),
                              initial_state=state, train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    p = check_plan_matches_trials(trials, ("dedup", "cse"), X)
    assert [n.target for n in p.graph.nodes if n.op == "call_module"] == ["t0.a", "t0.a", "t0.head", "t1.head"]


class Bumped(nn.Module):
    """A copy of the input, changed in place or not, then a layer that trains."""

    def __init__(self, bump: bool):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bump = bump

    def forward(self, x):
        y = x.clone()
        if self.bump:
            y.add_(1)
        return self.fc(y * 2)


def test_a_value_changed_in_place_is_not_shared():
    """The copy of the input used to be shared, so the ``add_`` of one trial changed it for the
    others. Every trial, with and without the in-place op, must compute what it computes alone."""
    trials = [optimizer.Trial(f"t{k}", ir.trace(Bumped(bump), (X,)), train=optimizer.TrainConfig(seed=k))
              for k, bump in enumerate([True, False, True])]
    p = check_plan_matches_trials(trials, ("dedup", "cse"), X)
    assert _targets(p.graph).count("add_") == 2 and _targets(p.graph).count("clone") == 3


# ---------------------------------------------------------------------- inputs
class Scaled(nn.Module):
    """A data input and an input with a default value."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.fc = nn.Linear(width, 4)

    def forward(self, x, scale: float = 2.0):
        return self.fc(x) * scale


def test_merged_inputs_keep_defaults_record_their_trial_and_are_shared_only_between_equal_types():
    """Trials reading one data set share its input only where the types agree; every merged
    input keeps its default value and names the first trial that reads it."""
    narrow, wide = ir.trace(Scaled(4), (torch.randn(2, 4),)), ir.trace(Scaled(6), (torch.randn(2, 6),))
    trials = [optimizer.Trial(f"t{k}", graph, train=optimizer.TrainConfig(seed=k))
              for k, graph in enumerate([narrow, wide, narrow])]
    p = make_plan(trials, ("dedup",))
    inputs = [(n.name, str(n.type), n.args, n.origin) for n in p.graph.inputs]
    assert inputs == [("x", "f32[B,4]", (), [("t0", "x")]), ("t0_scale", "float", (2.0,), [("t0", "scale")]),
                      ("t1_x", "f32[B,6]", (), [("t1", "x")])]
    assert [slot.inputs for slot in p.slots] == [["x", "t0_scale"], ["t1_x", "t0_scale"], ["x", "t0_scale"]]

    same = [optimizer.Trial(f"s{k}", narrow, train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    p = make_plan(same, ("dedup",))
    module = merged_module_of(p)
    outs = module(torch.ones(3, 4))  # the scale input keeps its default
    for k, trial in enumerate(same):
        alone = ir.build_module(trial.graph)
        alone.load_state_dict(initial_state(trial), strict=True)
        torch.testing.assert_close(outs[k], alone(torch.ones(3, 4)))


def merged_module_of(p: optimizer.Plan) -> nn.Module:
    from retiarii_ir import codegen

    module = codegen.load(p.graph)()
    p.initialise(module)
    return module


def test_an_initial_state_that_lacks_entries_is_refused_by_name():
    model = Scaled()
    state = {k: v for k, v in model.state_dict().items() if k != "fc.bias"}
    trial = optimizer.Trial("t", ir.trace(model, (torch.randn(2, 4),)), initial_state=state)
    with pytest.raises(optimizer.merge.MergeError, match=r"trial 't': initial_state lacks \['fc.bias'\]"):
        initial_state(trial)


class WithConstant(nn.Module):
    """A tensor constant and a submodule, so that merged nodes carry constants and scopes."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def forward(self, x):
        return self.block(x) + torch.tensor([1.0, 2.0, 3.0, 4.0])


def test_merged_trials_keep_their_constants_and_live_under_their_own_prefix():
    """Trial k's nodes, modules and constants sit under ``t{k}``: ``nodes_in("t1")`` is exactly
    what trial 1 computes, with its scopes kept below the prefix."""
    graph = ir.trace(WithConstant(), (X,))
    trials = [optimizer.Trial(f"t{k}", graph, train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    p = check_plan_matches_trials(trials, ("dedup",), X)
    assert sorted(p.graph.constants) == ["t0__tensor_constant0", "t1__tensor_constant0"]
    for k in range(2):
        mine = [n for n in p.graph.nodes if n.op not in ("input", "output") and n.origin[0][0] == f"t{k}"]
        assert [n.name for n in p.graph.nodes_in(f"t{k}")] == [n.name for n in mine]
        assert [n.scope for n in mine] == [f"t{k}.{n.scope}" if n.scope else f"t{k}" for n in graph.nodes
                                          if n.op not in ("input", "output")]


def test_a_frozen_layer_every_trial_shares_leaves_one_copy_in_the_merged_module():
    """The copies CSE stops calling go, unless another name still refers to them (``b`` is ``a``)."""
    torch.manual_seed(0)
    model = SharedModule()
    trials = _frozen_trials(model)
    p = check_plan_matches_trials(trials, ("dedup", "cse"), X)
    assert [n.target for n in p.graph.nodes if n.op == "call_module"] == ["t0.a", "t0.a", "t0.head"]
    assert sorted(p.graph.modules) == ["t0.a", "t0.head", "t1.a"]


class EncodeTwiceThenProject(nn.Module):
    """A frozen encoder applied to the input and again after a layer that trains, and a frozen
    projection of the input: the encoder's copies stay (the second call differs per trial),
    the projection's do not."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 4)
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        return self.enc(self.fc(self.enc(x))) + self.proj(x)


def test_each_layer_shared_by_every_trial_is_dropped_after_one_that_must_stay():
    torch.manual_seed(0)
    model = EncodeTwiceThenProject()
    graph = ir.trace(model.eval(), (X,))
    frozen = ("enc.weight", "enc.bias", "proj.weight", "proj.bias")
    trials = [optimizer.Trial(f"t{k}", graph, frozen=frozen, initial_state=model.state_dict(),
                              train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    p = check_plan_matches_trials(trials, ("dedup", "cse"), X)
    assert sorted(p.graph.modules) == ["t0.enc", "t0.fc", "t0.proj", "t1.enc", "t1.fc"]
    assert {key: ref.key for key, ref in p.slots[1].state.items() if key.startswith("proj.")} == {
        "proj.weight": "t0.proj.weight", "proj.bias": "t0.proj.bias"}
    assert p.slots[1].state["enc.weight"].key == "t1.enc.weight"


class TrainingScaled(nn.Module):
    """A layer that trains, scaled by a number computed from the training flag alone."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * (2 - self.training)


def test_the_training_flag_and_what_follows_from_it_alone_are_computed_once():
    trials = [optimizer.Trial(f"t{k}", ir.trace(TrainingScaled(), (X,)), train=optimizer.TrainConfig(seed=k))
              for k in range(3)]
    p = check_plan_matches_trials(trials, ("dedup", "cse"), X)
    flags = [n for n in p.graph.nodes if n.op == "get_attr" and n.target == ir.node.TRAINING_FLAG]
    assert len(flags) == 1 and len(flags[0].origin) == 3
    assert _targets(p.graph).count("operator.sub") == 1 and _targets(p.graph).count("operator.mul") == 3


class EncodeAndReadBack(nn.Module):
    """A frozen encoder whose weight is also read directly (a transposed decoder)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return nn.functional.linear(self.fc(self.enc(x)), self.enc.weight.t())


class EncodeAndTiedDecode(nn.Module):
    """A frozen encoder whose weight a decoder shares (``dec.weight`` is ``enc.weight``)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 4)
        self.dec = nn.Linear(4, 4)
        self.dec.weight = self.enc.weight

    def forward(self, x):
        return self.dec(self.fc(self.enc(x)))


@pytest.mark.parametrize("model, frozen, modules", [
    # the direct read of an equal frozen weight is shared too: nothing reaches t1's copy any more
    (EncodeAndReadBack, ("enc.weight", "enc.bias"), ["t0.enc", "t0.fc", "t1.fc"]),
    (EncodeAndTiedDecode, ("enc.weight", "enc.bias", "dec.weight"),
     ["t0.dec", "t0.enc", "t0.fc", "t1.dec", "t1.enc", "t1.fc"]),
])
def test_a_shared_layer_whose_weight_is_still_read_keeps_its_copy(model, frozen, modules):
    """The encoder's call is computed once; a trial's copy stays while a tie still reaches its
    weight (dropping it used to leave the graph unbuildable), and goes once nothing does."""
    torch.manual_seed(0)
    model = model()
    graph = ir.trace(model.eval(), (X,))
    trials = [optimizer.Trial(f"t{k}", graph, frozen=frozen, initial_state=model.state_dict(),
                              train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    p = check_plan_matches_trials(trials, ("dedup", "cse"), X)
    assert [n.target for n in p.graph.nodes if n.op == "call_module"].count("t0.enc") == 1
    assert "t1.enc" not in [n.target for n in p.graph.nodes if n.op == "call_module"]
    assert sorted(p.graph.modules) == modules
