"""optimizer.plan: the merged graph validates, round-trips JSON, generates code, and gives every
trial exactly what the trial's own graph gives alone (outputs, gradients, BN statistics)."""

from __future__ import annotations

import inspect
import json
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from retiarii_ir import codegen
from retiarii_ir import optimizer
import retiarii_ir as ir
from retiarii_ir.optimizer.merge import initial_state
from retiarii_ir.node import map_args
from retiarii_ir.space.hub.digits import DigitsSpace
from tests import spaces
from tests.helpers import assert_same_graph

ALL = ("dedup", "cse", "batch")
PASS_SETS = [("dedup",), ("cse",), ("batch",), ALL]
DIGITS_INPUT = (2, 1, 8, 8)


# ---------------------------------------------------------------------- helpers
def make_plan(trials, passes=ALL):
    """plan() without timing-dependent choices, so what gets batched is the same on every machine."""
    kwargs = {"autotune": False} if "autotune" in inspect.signature(optimizer.plan).parameters else {}
    return optimizer.plan(trials, passes, **kwargs)


_SPACES: dict[str, ir.ModelSpace] = {}


def traced_space(name: str) -> ir.ModelSpace:
    if name not in _SPACES:
        torch.manual_seed(0)
        _SPACES[name] = (ir.trace_space(DigitsSpace(), torch.randn(*DIGITS_INPUT)) if name == "digits"
                         else spaces.trace_case(spaces.SPACES[name]))
    return _SPACES[name]


def example_batch(name: str, batch: int = 3, seed: int = 1) -> torch.Tensor:
    shape = DIGITS_INPUT[1:] if name == "digits" else spaces.SPACES[name].example_input().shape[1:]
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def trials_of(space: ir.ModelSpace, samples, **trial_kwargs) -> list[optimizer.Trial]:
    return [optimizer.Trial(f"trial{k}", space.freeze(s), train=optimizer.TrainConfig(seed=k), **trial_kwargs)
            for k, s in enumerate(samples)]


def without_dropout(module: nn.Module) -> nn.Module:
    """Dropout draws random numbers in train mode: no merged run can match those draws."""
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
    return module


def standalone(trial: optimizer.Trial) -> nn.Module:
    """The trial alone, through the interpreter (independent of the generated merged code)."""
    module = ir.build_module(trial.graph)
    module.load_state_dict(initial_state(trial), strict=True)
    return without_dropout(module)


def merged_module(p: optimizer.Plan) -> nn.Module:
    module = without_dropout(codegen.load(p.graph, formatted=False)())
    p.initialise(module)
    return module


def feed(p: optimizer.Plan, per_trial: list[torch.Tensor]) -> list[torch.Tensor]:
    """The merged forward's arguments: each merged input gets the batch of the trials reading it."""
    by_name = {}
    for slot, x in zip(p.slots, per_trial):
        assert by_name.setdefault(slot.inputs[0], x) is x, "one merged input read by trials with different data"
    return [by_name[name] for name in p.inputs]


def describe(graph: ir.Graph) -> dict:
    """Everything a graph holds, as plain comparable data."""
    ref = lambda n: ("node", n.name)  # noqa: E731
    nodes = [(n.name, n.op, n.target, repr(map_args(n.args, ref)), repr(map_args(n.kwargs, ref)), str(n.type),
              n.scope, n.origin) for n in graph.nodes]
    attributes = {k: (a.kind, tuple(a.shape), a.dtype, a.requires_grad, a.persistent,
                      None if a.value is None else (a.value.dtype, a.value.tolist()))
                  for k, a in graph.attributes.items()}
    return {"name": graph.name, "nodes": nodes, "modules": {k: repr(v) for k, v in graph.modules.items()},
            "attributes": attributes, "aliases": dict(graph.aliases), "module_types": dict(graph.module_types),
            "constants": {k: (v.dtype, v.tolist()) for k, v in graph.constants.items()}}


def check_equal(actual, expected, exact: bool, what: str) -> None:
    if exact:
        assert torch.equal(actual, expected), f"{what}: max diff {(actual - expected).abs().max().item():.3e}"
    else:
        assert_close(actual, expected, rtol=1e-4, atol=1e-5, msg=lambda m: f"{what}: {m}")


def check_plan_matches_trials(trials: list[optimizer.Trial], passes, x: torch.Tensor) -> optimizer.Plan:
    """Build the plan, round-trip its graph through JSON and generated code, and check every trial's
    outputs (train and eval mode), gradients and BN statistics against the trial alone."""
    p = make_plan(trials, passes)
    p.graph.validate()
    again = ir.Graph.from_json(p.graph.to_json())
    assert_same_graph(again, p.graph)
    p.graph = again  # everything below runs the graph that came back from JSON
    merged = merged_module(p)
    alone = [standalone(t) for t in trials]
    exact = "batch" not in passes
    xs = [x + 0.1 * k for k in range(len(trials))] if "dedup" not in passes else [x] * len(trials)

    merged.train()
    outs = merged(*feed(p, xs))
    assert isinstance(outs, tuple) and len(outs) == len(trials)
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(k)) for k, o in enumerate(outs)]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    named = dict(merged.named_parameters())
    for k, (trial, module) in enumerate(zip(trials, alone)):
        ref = module.train()(xs[k])
        check_equal(outs[k].detach(), ref.detach(), exact, f"{passes} {trial.name} train-mode output")
        (ref * weights[k]).sum().backward()
        for key, param in module.named_parameters():
            if key in trial.frozen:  # a shared frozen weight collects every trial's gradient; it never steps
                continue
            place = p.slots[k].state[key]  # a whole tensor, or the trial's rows of a stacked one
            assert exact or place.rows is None or place.key.startswith("fused."), place
            whole = named[place.key].grad
            assert whole is not None, f"{passes} {trial.name} {key}: no gradient in the merged module"
            grad = place.read({place.key: whole})
            assert_close(grad, param.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{passes} {trial.name} {key}: {m}")
        state = p.trial_state(merged, k)
        for key, value in module.state_dict().items():  # BN running statistics after one train step
            check_equal(state[key], value, exact or not value.is_floating_point(), f"{passes} {trial.name} {key}")

    merged.eval()
    with torch.no_grad():
        outs = merged(*feed(p, xs))
        for k, (trial, module) in enumerate(zip(trials, alone)):
            check_equal(outs[k], module.eval()(xs[k]), exact, f"{passes} {trial.name} eval-mode output")
    return p


# ---------------------------------------------------------------------- every pass, real spaces
SPACE_SAMPLES = {"digits": (0, 1, 2, 3), "nasbench201": (0, 1, 2), "mobilenetv3": (0, 1, 2), "darts": (1, 2)}
SPACE_PASSES = {"digits": PASS_SETS, "nasbench201": PASS_SETS, "mobilenetv3": [("cse",), ALL], "darts": [ALL]}  # time


@pytest.mark.parametrize("space_name", sorted(SPACE_SAMPLES))
def test_each_pass_and_all_together_match_every_trial_alone(space_name):
    space = traced_space(space_name)
    trials = trials_of(space, [space.random_sample(s) for s in SPACE_SAMPLES[space_name]])
    x = example_batch(space_name)
    for passes in SPACE_PASSES[space_name]:
        check_plan_matches_trials(trials, passes, x)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(seeds=st.lists(st.integers(0, 10_000), min_size=2, max_size=4), passes=st.sampled_from(PASS_SETS))
def test_random_digits_samples_match_alone(seeds, passes):
    space = traced_space("digits")
    check_plan_matches_trials(trials_of(space, [space.random_sample(s) for s in seeds]), passes,
                              example_batch("digits", batch=2, seed=seeds[0]))


def test_formatted_source_of_the_merged_graph_runs_like_the_loaded_class():
    space = traced_space("nasbench201")
    p = make_plan(trials_of(space, [space.random_sample(s) for s in (0, 1)]))
    source = codegen.to_source(p.graph)
    namespace: dict = {"__name__": "merged_source"}
    exec(compile(source, "<merged>", "exec"), namespace)  # noqa: S102 - our own generated code
    classes = [v for v in namespace.values()
               if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == "merged_source"]
    ours = classes[-1]()
    reference = merged_module(p).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = example_batch("nasbench201")
    with torch.no_grad():
        for a, b in zip(ours.eval()(*[x] * len(p.inputs)), reference(*[x] * len(p.inputs))):
            assert torch.equal(a, b)


def test_trial_state_loads_strictly_into_the_generated_standalone_module():
    space = traced_space("mobilenetv3")
    trials = trials_of(space, [space.random_sample(s) for s in (0, 1, 2)])
    p = make_plan(trials)
    merged = merged_module(p).train()
    x = example_batch("mobilenetv3")
    with torch.no_grad():
        merged(*[x] * len(p.inputs))  # move the BN statistics away from their initial values
        outs = merged.eval()(*[x] * len(p.inputs))
    for k, trial in enumerate(trials):
        alone = codegen.load(trial.graph, formatted=False)()
        alone.load_state_dict(p.trial_state(merged, k), strict=True)
        with torch.no_grad():
            assert_close(alone.eval()(x), outs[k], rtol=1e-4, atol=1e-5)
    # and back in: every trial's state written into a fresh merged module gives the same outputs
    fresh = codegen.load(p.graph, formatted=False)()
    for k in range(len(trials)):
        p.load_trial_state(fresh, k, p.trial_state(merged, k))
    with torch.no_grad():
        for a, b in zip(fresh.eval()(*[x] * len(p.inputs)), outs):
            assert torch.equal(a, b)


# ---------------------------------------------------------------------- the report and what was done
def _report_numbers(text: str, pattern: str) -> tuple[int, ...] | None:
    match = re.search(pattern, text)
    return tuple(int(g) for g in match.groups()) if match else None


@pytest.mark.parametrize("passes", [(), ("dedup",), ("dedup", "cse"), ("batch",), ALL])
def test_report_counts_match_the_plan(passes):
    space = traced_space("nasbench201")
    trials = trials_of(space, [space.random_sample(s) for s in (0, 1, 2)])
    p = make_plan(trials, passes)
    text = str(p)
    assert _report_numbers(text, r"plan: (\d+) trials") == (len(trials),)
    assert _report_numbers(text, r"merged graph (\d+) nodes") == (len(p.graph.nodes),)
    assert _report_numbers(text, r"inputs: (\d+) for (\d+) trials") == (len(p.graph.inputs), len(trials))
    assert len(p.graph.inputs) == (1 if "dedup" in passes else len(trials))
    shared_lines = re.findall(r"^    shared: (.*)$", text, re.M)
    across = [s for s in p.shared if len({t for t, _ in s.origin}) > 1]
    assert len(shared_lines) == len(across)  # one line per node computed once for several trials
    for line, node in zip(shared_lines, across):
        assert len(line.split(", ")) == len(node.origin)  # naming each trial's own node
    batched_lines = re.findall(r"^    batched \((\w+) x(\d+)\): (.*)$", text, re.M)
    assert [(kind, int(width)) for kind, width, _ in batched_lines] == [(b.kind, b.width) for b in p.batched]
    if p.batched:
        replaced = sum(b.width for b in p.batched)
        assert _report_numbers(text, r"batched: (\d+) fused nodes replace (\d+)") == (len(p.batched), replaced)
        names = {n.name: n for n in p.graph.nodes}
        for b in p.batched:
            assert b.width == len(b.members) >= 2
            fused = names[b.fused]
            assert len({trial for trial, _ in fused.origin}) == b.width, "a fused node serves one slot per trial"
            for member in b.members:  # replaced: at most a per-trial slice of the fused value keeps the name
                assert member not in names or names[member].target == "operator.getitem"
        # independently: the convolutions left as modules are the ones no group took
        unbatched = make_plan(trials, tuple(q for q in passes if q != "batch"))
        assert _conv_modules(p.graph) == _conv_modules(unbatched.graph) - sum(
            b.width for b in p.batched if b.kind == "Conv2d")
    else:
        assert "batched:" not in text
    assert ("batch" in passes) == bool(p.batched)
    assert ("cse" in passes) == bool(p.shared)  # NB201 cells apply ReLU to one node on several edges


def _conv_modules(graph: ir.Graph) -> int:
    return sum(1 for n in graph.nodes if n.op == "call_module" and graph.modules[n.target].class_name == "Conv2d")


def _node_named(trial: optimizer.Trial, target: str) -> str:
    return next(n.name for n in trial.graph.nodes if n.op == "call_module" and n.target == target)


def test_samples_differing_in_one_choice_still_batch_the_layers_they_share():
    space = traced_space("digits")
    a = {"width": 16, "op": "conv3x3", "depth": 1}
    trials = trials_of(space, [a, dict(a, op="conv5x5"), dict(a, width=32)])
    p = check_plan_matches_trials(trials, ALL, example_batch("digits"))
    assert p.batched
    groups = {tuple(sorted(origin for origin in _fused_origin(p, b))): b for b in p.batched}
    first, second = trials[0], trials[1]
    for target, kind in (("stem.0", "Conv2d"), ("stem.1", "BatchNorm2d"), ("blocks.0.0", "Conv2d"),
                         ("blocks.0.1", "BatchNorm2d"), ("head", "Linear")):
        key = tuple(sorted([(first.name, _node_named(first, target)), (second.name, _node_named(second, target))]))
        assert key in groups and groups[key].kind == kind, f"{target} of the two width-16 samples is not batched"
    # the choice that differs (3x3 vs 5x5) and the other width are not fused with anything
    for trial in trials:
        op = (trial.name, _node_named(trial, "op.0"))
        assert not any(op in _fused_origin(p, b) for b in p.batched)
    assert not any(trials[2].name in {t for t, _ in _fused_origin(p, b)} for b in p.batched)


def _weight_joins(graph: ir.Graph) -> list[ir.Node]:
    """Nodes that join parameters read from the module (a per-step copy of K trials' weights)."""
    return [n for n in graph.nodes if n.target in ("torch.cat", "torch.stack")
            and all(isinstance(a, ir.Node) and a.op == "get_attr" for a in n.args[0])]


def test_batched_layers_keep_their_trials_weights_as_rows_of_one_stacked_tensor():
    """Trial k's slice of a fused parameter is exactly trial k's own tensor, and nothing joins
    weights at each step."""
    space = traced_space("digits")
    sample = {"width": 16, "op": "conv3x3", "depth": 1}
    trials = trials_of(space, [sample] * 3)
    p = check_plan_matches_trials(trials, ALL, example_batch("digits"))
    assert {b.kind for b in p.batched} >= {"Conv2d", "BatchNorm2d", "Linear"}
    assert _weight_joins(p.graph) == []
    merged = merged_module(p)
    named = dict(merged.named_parameters())
    own = [initial_state(t) for t in trials]
    for key in ("stem.0.weight", "head.weight", "head.bias", "blocks.0.1.weight"):
        refs = [p.slots[k].state[key] for k in range(3)]
        assert len({r.key for r in refs}) == 1 and refs[0].key.startswith("fused."), refs
        rows = own[0][key].shape[0]
        assert [r.rows for r in refs] == [(0, rows), (rows, 2 * rows), (2 * rows, 3 * rows)]
        stacked = named[refs[0].key]
        assert stacked.shape == (3 * rows, *own[0][key].shape[1:])
        for k in range(3):  # the trial's rows hold its own initial weights
            assert torch.equal(stacked[refs[k].rows[0]:refs[k].rows[1]].detach(), own[k][key])


def test_weights_that_cannot_be_stacked_stay_each_trials_own_and_are_joined_per_step():
    """Trials with different kinds of optimizer cannot step one tensor, and a weight the model
    also reads directly (tied weights) must stay where that read finds it: both keep whole
    tensors per trial, joined when the fused layer runs."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            x = torch.relu(self.conv(x)).mean((2, 3))
            return self.fc(x) + nn.functional.linear(x, self.fc.weight.t())

    graph = ir.trace(Tied(), (torch.randn(2, 3, 8, 8),))
    kinds = ["sgd", "adam"]
    trials = [optimizer.Trial(f"t{k}", graph, train=optimizer.TrainConfig(optimizer=kinds[k], seed=k)) for k in range(2)]
    p = check_plan_matches_trials(trials, ("dedup", "batch"), torch.randn(2, 3, 8, 8))
    assert {b.kind for b in p.batched} >= {"Conv2d", "Linear"}
    assert all(ref.rows is None for slot in p.slots for ref in slot.state.values())
    assert len(_weight_joins(p.graph)) >= 3
    same = [optimizer.Trial(f"s{k}", graph, train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    q = check_plan_matches_trials(same, ("dedup", "batch"), torch.randn(2, 3, 8, 8))
    assert q.slots[1].state["conv.weight"].rows == (4, 8)  # used once: stacked
    assert q.slots[1].state["fc.weight"].rows is None  # also read directly: its own tensor


class TiedLinears(nn.Module):
    """Two linear layers sharing one weight (``fc2.weight = fc1.weight``)."""

    def __init__(self, bias: bool = True, fc2_calls: int = 1):
        super().__init__()
        self.fc2_calls = fc2_calls
        self.fc1 = nn.Linear(64, 64, bias=bias)
        self.fc2 = nn.Linear(64, 64, bias=bias)
        self.fc2.weight = self.fc1.weight
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        h = self.fc2(torch.relu(self.fc1(x.flatten(1))))
        if self.fc2_calls == 2:
            h = self.fc2(h)
        return self.head(torch.relu(h))


@pytest.mark.parametrize("bias, fc2_calls", [(True, 1), (False, 1), (True, 2)])
def test_tied_weights_stay_one_tensor_per_trial_when_their_layers_batch(bias, fc2_calls):
    """A weight two layers share must stay one tensor: stacking each layer's copy would untie
    it (each half would get part of the gradient), and moving one of them must not leave the
    other's tie pointing at nothing."""
    torch.manual_seed(0)
    graph = ir.trace(TiedLinears(bias, fc2_calls), (torch.randn(2, 1, 8, 8),))
    assert graph.aliases == {"fc2.weight": "fc1.weight"}
    trials = [optimizer.Trial(f"t{k}", graph, train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    p = check_plan_matches_trials(trials, ALL, torch.randn(3, 1, 8, 8))
    assert any(b.kind == "Linear" for b in p.batched)
    for slot in p.slots:
        assert slot.state["fc1.weight"].rows is None
        assert slot.state["head.weight"].rows is not None  # untied layers still stack
    merged = merged_module(p)
    for k in range(2):
        state = p.trial_state(merged, k)
        assert torch.equal(state["fc1.weight"], state["fc2.weight"])


def _fused_origin(p: optimizer.Plan, b) -> list[tuple[str, str]]:
    return next(n.origin for n in p.graph.nodes if n.name == b.fused)


def test_dedup_gives_one_input_per_distinct_data_spec():
    space = traced_space("digits")
    samples = [space.random_sample(s) for s in range(4)]
    data = [optimizer.DataSpec(), optimizer.DataSpec(), optimizer.DataSpec(batch_size=32),
            optimizer.DataSpec(shuffle_seed=1)]
    trials = [optimizer.Trial(f"t{k}", space.freeze(s), data=d, train=optimizer.TrainConfig(seed=k))
              for k, (s, d) in enumerate(zip(samples, data))]
    p = make_plan(trials, ("dedup",))
    assert len(p.inputs) == 3
    assert p.slots[0].inputs == p.slots[1].inputs
    assert len({p.slots[k].inputs[0] for k in (0, 2, 3)}) == 3
    assert set(p.inputs) == {s.inputs[0] for s in p.slots}
    assert len(make_plan(trials, ()).inputs) == 4
    # each trial's output comes from its own data
    shared, second, third = (example_batch("digits", seed=k) for k in (1, 2, 3))
    xs = [shared, shared, second, third]
    merged = merged_module(p).eval()
    with torch.no_grad():
        outs = merged(*feed(p, xs))
        for k, trial in enumerate(trials):
            assert torch.equal(outs[k], standalone(trial).eval()(xs[k]))


def test_dedup_does_not_depend_on_the_forward_argument_name():
    class Images(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, images):
            return self.fc(images)

    class Features(Images):
        def forward(self, x):
            return self.fc(x)

    example = (torch.randn(2, 4),)
    trials = [optimizer.Trial("a", ir.trace(Images(), example)), optimizer.Trial("b", ir.trace(Features(), example))]
    assert len(make_plan(trials, ("dedup",)).inputs) == 1


# ---------------------------------------------------------------------- CSE over a frozen backbone
class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x)))))


class BackboneAndHead(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.backbone = Backbone()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.backbone(x)), 1))


def backbone_trials(same_backbone: bool = True, frozen: bool = True, hidden=(16, 16, 32)) -> list[optimizer.Trial]:
    torch.manual_seed(42)
    pretrained = Backbone().state_dict()
    pretrained["bn.running_mean"] += 0.1  # a "pretrained" BN: statistics away from their defaults
    trials = []
    for k, h in enumerate(hidden):
        torch.manual_seed(k)
        model = BackboneAndHead(h)
        state = model.state_dict()
        backbone = pretrained if same_backbone else Backbone().state_dict()
        state.update({f"backbone.{key}": v.clone() for key, v in backbone.items()})
        graph = ir.trace(model, (torch.randn(*DIGITS_INPUT),))
        keys = tuple(key for key in state if key.startswith("backbone.")) if frozen else ()
        trials.append(optimizer.Trial(f"head{h}_{k}", graph, train=optimizer.TrainConfig(seed=k), frozen=keys,
                                      initial_state=state))
    return trials


@pytest.mark.parametrize("passes", [("dedup", "cse"), ALL])
def test_a_frozen_equal_backbone_is_computed_once(passes):
    trials = backbone_trials()
    assert _conv_modules(trials[0].graph) == 2
    p = check_plan_matches_trials(trials, passes, example_batch("digits"))
    assert _conv_modules(p.graph) == 2, "the backbone's two convolutions should exist once, not once per trial"
    assert p.shared
    assert max(len({t for t, _ in s.origin}) for s in p.shared) == len(trials)
    conv_origins = [n.origin for n in p.graph.nodes
                    if n.op == "call_module" and p.graph.modules[n.target].class_name == "Conv2d"]
    assert len(conv_origins) == 2
    assert all({t for t, _ in origin} == {t.name for t in trials} for origin in conv_origins)
    # every trial's backbone entries point at one place; the heads stay apart and train
    places = [{p.slots[k].state[key].key for key in t.frozen} for k, t in enumerate(trials)]
    assert places[0] == places[1] == places[2]
    merged = merged_module(p)
    for k, trial in enumerate(trials):
        trainable = {id(t.param) for t in p.trial_parameters(merged, k)}
        named = dict(merged.named_parameters())
        assert not any(id(named[p.slots[k].state[key].key]) in trainable for key in trial.frozen
                       if p.slots[k].state[key].key in named)
        assert len(trainable) == 4  # the head's two weights and two biases


@pytest.mark.parametrize("same_backbone, frozen", [(False, True), (True, False)])
def test_a_backbone_that_differs_or_trains_is_not_shared(same_backbone, frozen):
    trials = backbone_trials(same_backbone=same_backbone, frozen=frozen)
    p = check_plan_matches_trials(trials, ("dedup", "cse"), example_batch("digits"))
    assert p.shared == []
    assert _conv_modules(p.graph) == 2 * len(trials)


def test_random_ops_are_never_shared():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.drop, self.fc2 = nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(self.drop(self.fc1(x)))

    torch.manual_seed(0)
    model = Net()
    graph = ir.trace(model, (torch.randn(2, 4),))
    trials = [optimizer.Trial(name, graph, frozen=tuple(model.state_dict()), initial_state=model.state_dict())
              for name in ("a", "b")]
    p = make_plan(trials, ("dedup", "cse"))
    kinds = [p.graph.modules[n.target].class_name for n in p.graph.nodes if n.op == "call_module"]
    assert sorted(kinds) == ["Dropout", "Dropout", "Linear", "Linear", "Linear"]
    module = codegen.load(p.graph, formatted=False)()
    p.initialise(module)
    torch.manual_seed(3)
    a, b = module.train()(torch.ones(64, 4))
    assert not torch.equal(a, b), "two trials drew the same dropout mask"


# ---------------------------------------------------------------------- batching hazards
def test_a_residual_add_of_the_shared_input_batches_correctly():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(x) + x

    graph = ir.trace(Residual(), (torch.randn(2, 3, 8, 8),))
    trials = [optimizer.Trial(f"t{k}", graph, train=optimizer.TrainConfig(seed=k)) for k in range(2)]
    p = check_plan_matches_trials(trials, ("dedup", "batch"), torch.randn(2, 3, 8, 8))
    assert any(b.kind == "Conv2d" for b in p.batched)


def test_a_residual_add_of_the_shared_input_in_the_leading_layout_is_right():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.fc(x)) + x

    graph = ir.trace(Residual(), (torch.randn(2, 4),))
    trials = [optimizer.Trial(f"t{k}", graph, train=optimizer.TrainConfig(seed=k)) for k in range(3)]
    p = check_plan_matches_trials(trials, ("dedup", "batch"), torch.randn(5, 4))
    assert any(b.kind == "Linear" for b in p.batched)


# ---------------------------------------------------------------------- bad input
def _digits_trial(name: str = "a", **kwargs) -> optimizer.Trial:
    space = traced_space("digits")
    return optimizer.Trial(name, space.freeze(space.default_sample()), **kwargs)


@pytest.mark.parametrize("trials, passes, message", [
    (lambda: [_digits_trial()], ("dedup", "fuse"), "unknown passes"),
    (lambda: [_digits_trial()], ("batching",), "unknown passes"),
    (lambda: [], ALL, "at least one trial"),
    (lambda: [_digits_trial("a"), _digits_trial("b"), _digits_trial("a")], ALL, "unique"),
])
def test_plans_that_cannot_be_made_raise_plan_error(trials, passes, message):
    with pytest.raises(optimizer.PlanError, match=message):
        optimizer.plan(trials(), passes)


@pytest.mark.parametrize("make", [
    lambda: optimizer.TrainConfig(loss="l1"),
    lambda: optimizer.TrainConfig(optimizer="rmsprop"),
    lambda: optimizer.TrainConfig(lr=-0.1),
    lambda: optimizer.TrainConfig(lr=float("nan")),
    lambda: optimizer.TrainConfig(lr=float("inf")),
    lambda: optimizer.TrainConfig(lr="0.1"),
    lambda: optimizer.TrainConfig(momentum=-1),
    lambda: optimizer.TrainConfig(weight_decay=float("nan")),
    lambda: optimizer.TrainConfig(epochs=0),
    lambda: optimizer.TrainConfig(epochs=1.5),
    lambda: optimizer.TrainConfig(epochs=True),
    lambda: optimizer.TrainConfig(max_steps=0),
    lambda: optimizer.TrainConfig(grad_clip=0),
    lambda: optimizer.TrainConfig(grad_clip=-1.0),
    lambda: optimizer.DataSpec(dataset=""),
    lambda: optimizer.DataSpec(dataset=3),
    lambda: optimizer.DataSpec(batch_size=0),
    lambda: optimizer.DataSpec(batch_size=8.0),
    lambda: optimizer.DataSpec(shuffle_seed="0"),
    lambda: optimizer.Trial("", _digits_trial().graph),
    lambda: optimizer.Trial("a", "not a graph"),
])
def test_malformed_trial_specs_raise_trial_spec_error(make):
    with pytest.raises(optimizer.TrialSpecError):
        make()


@pytest.mark.parametrize("betas", [(1.5, 0.999), (0.9, -0.1), (0.9,)])
def test_bad_adam_betas_raise_trial_spec_error(betas):
    with pytest.raises(optimizer.TrialSpecError):
        optimizer.TrainConfig(optimizer="adam", betas=betas)


def test_trial_json_round_trip():
    trial = _digits_trial(
        "best-so-far", data=optimizer.DataSpec("digits", batch_size=32, shuffle_seed=3, drop_last=True),
        train=optimizer.TrainConfig(loss="cross_entropy", optimizer="adamw", lr=0.003, momentum=0.5,
                                    weight_decay=0.01, betas=(0.8, 0.99), epochs=3, max_steps=7, seed=11,
                                    grad_clip=1.5),
        frozen=("stem.0.weight",))
    text = trial.to_json()
    json.loads(text)  # plain JSON
    back = optimizer.Trial.from_json(text)
    assert (back.name, back.data, back.train, back.frozen) == (trial.name, trial.data, trial.train, trial.frozen)
    assert isinstance(back.train.betas, tuple)
    assert_same_graph(back.graph, trial.graph)


@pytest.mark.parametrize("edit, message", [
    (lambda d: "{not json", "not valid"),
    (lambda d: json.dumps([d]), "JSON object"),
    (lambda d: json.dumps(dict(d, train=dict(d["train"], lr="fast"))), "lr"),
    (lambda d: json.dumps(dict(d, train=dict(d["train"], learning_rate=0.1))), "unknown fields"),
    (lambda d: json.dumps(dict(d, data=dict(d["data"], batch_size=-1))), "batch_size"),
    (lambda d: json.dumps(dict(d, data=[1, 2])), "DataSpec"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "name"}), "name"),
])
def test_malformed_trial_json_raises_trial_spec_error(edit, message):
    data = json.loads(_digits_trial().to_json())
    with pytest.raises(optimizer.TrialSpecError, match=message):
        optimizer.Trial.from_json(edit(data))


def test_trial_json_with_a_hostile_graph_is_refused():
    data = json.loads(_digits_trial().to_json())
    node = next(n for n in data["graph"]["nodes"] if n["op"] == "call_function")
    node["target"] = "os.system"
    with pytest.raises(ir.IRError, match="os.system"):
        optimizer.Trial.from_json(json.dumps(data))
