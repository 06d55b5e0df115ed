"""Custom mutators: deciding through choice(), editing through public Graph methods, and
composing with the built-in choices of a space."""

from __future__ import annotations

import pytest
import torch
from torch import nn as tnn

import retiarii_ir
from retiarii_ir import InvalidSampleError, ModuleSpec, Mutator, nn, trace, trace_space
from tests.helpers import assert_same_graph

torch.set_num_threads(1)
X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
ACTIVATIONS = {"relu": "torch.nn.ReLU", "gelu": "torch.nn.GELU", "silu": "torch.nn.SiLU"}


class ActivationSwap(Mutator):
    """One decision for the whole model: which activation every activation layer uses."""

    def mutate(self, graph):
        kind = self.choice(list(ACTIVATIONS), label="activation")
        for node in graph.nodes:
            spec = graph.modules.get(node.target) if node.op == "call_module" else None
            if spec is not None and spec.type in ACTIVATIONS.values():
                graph.set_module(node.target, ModuleSpec(ACTIVATIONS[kind], {}))


class SkipAroundBody(Mutator):
    """Optionally add a residual edge from the stem output to the body output."""

    def mutate(self, graph):
        if self.choice([False, True], label="skip"):
            graph.add_edge(graph.node("stem_1"), graph.node("body_1"))


@nn.model_wrapper
class Net(tnn.Module):
    def __init__(self):
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.ReLU())
        self.body = tnn.Sequential(nn.LayerChoice({"conv": tnn.Conv2d(8, 8, 3, padding=1),
                                                   "pool": tnn.AvgPool2d(3, 1, 1)}, label="body_op"), tnn.ReLU())
        self.head = tnn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


class HandBuilt(tnn.Module):
    """What Net with a given sample, GELU activations and the skip edge should compute."""

    def __init__(self, op: str):
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.GELU())
        self.body = tnn.Sequential(tnn.Conv2d(8, 8, 3, padding=1) if op == "conv" else tnn.AvgPool2d(3, 1, 1),
                                   tnn.GELU())
        self.head = tnn.Linear(8, 4)

    def forward(self, x):
        s = self.stem(x)
        return self.head((self.body(s) + s).mean((2, 3)))


@pytest.fixture(scope="module")
def space():
    return trace_space(Net(), X, mutators=[ActivationSwap(), SkipAroundBody()])


def test_custom_mutators_join_the_search_space(space):
    assert space.choices() == {"body_op": ["conv", "pool"], "activation": ["relu", "gelu", "silu"],
                               "skip": [False, True]}
    assert space.size == 12
    assert len(list(space.grid())) == 12


@pytest.mark.parametrize("op", ["conv", "pool"])
def test_builtin_and_custom_mutators_compose(space, op):
    graph = space.freeze({"body_op": op, "activation": "gelu", "skip": True})
    assert [h["mutator"] for h in graph.meta["history"]] == ["LayerChoiceMutator", "ActivationSwap", "SkipAroundBody"]
    assert graph.meta["history"][1]["choices"] == {"activation": "gelu"}
    assert {graph.modules[q].type for q in ("stem.1", "body.1")} == {"torch.nn.GELU"}
    reference = HandBuilt(op).eval()
    module = retiarii_ir.build_module(graph).eval()
    module.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(module(X), reference(X))


def test_history_entries_name_the_mutator_its_label_and_the_graph_it_came_from():
    graph = trace(HandBuilt("conv"), X)
    source = {"graph": graph.name, "structural_hash": retiarii_ir.structural_hash(graph)[:16]}
    entry = ActivationSwap(label="acts").apply(graph, {"activation": "relu"}).meta["history"][-1]
    assert entry == {"mutator": "ActivationSwap", "choices": {"activation": "relu"}, "label": "acts", "from": source}
    entry = ActivationSwap().apply(graph, {"activation": "relu"}).meta["history"][-1]
    assert entry == {"mutator": "ActivationSwap", "choices": {"activation": "relu"}, "from": source}
    assert repr(ActivationSwap(label="acts")) == "ActivationSwap(label='acts')"


def test_a_built_in_mutator_applies_alone_to_the_base_graph(space):
    """Applied on its own, a choice's mutator resolves only that choice; the graph still holds
    other choice points, so it is not re-typed (it could not run)."""
    body = next(m for m in space.mutators if m.label == "body_op")
    graph = body.apply(space.base, {"body_op": "pool"})
    assert graph.modules["body.0"].type == "torch.nn.AvgPool2d"
    assert graph.meta["history"][-1] == {
        "mutator": "LayerChoiceMutator", "choices": {"body_op": "pool"}, "label": "body_op", "site": "body.0",
        "from": {"graph": space.base.name, "structural_hash": retiarii_ir.structural_hash(space.base)[:16]}}


def test_apply_works_on_a_copy_and_records_history():
    model = HandBuilt("conv")
    graph = trace(model, X)
    before = graph.copy()
    swapped = ActivationSwap().apply(graph, {"activation": "silu"})
    assert_same_graph(graph, before)
    assert swapped.modules["stem.1"].type == "torch.nn.SiLU"
    entry = swapped.meta["history"][-1]
    assert entry["mutator"] == "ActivationSwap" and entry["choices"] == {"activation": "silu"}
    assert entry["from"]["graph"] == graph.name and len(entry["from"]["structural_hash"]) == 16
    assert str(swapped.output.type) == "f32[B,4]"  # re-typed after the mutation


def test_dry_run_records_the_decisions():
    graph = trace(HandBuilt("pool"), X)
    choices = SkipAroundBody().dry_run(graph.copy())
    assert [(c.label, c.values) for c in choices] == [("skip", (False, True))]
    assert choices[0].kind == "mutator"


def test_dry_run_edits_the_graph_with_the_first_candidates():
    graph = trace(HandBuilt("pool"), X)  # GELU activations
    ActivationSwap().dry_run(graph)
    assert {graph.modules[q].type for q in ("stem.1", "body.1")} == {"torch.nn.ReLU"}


def test_a_custom_mutator_alone_makes_the_search_space():
    """A model with no built-in choices: the custom mutator's decisions are the whole space."""
    space = trace_space(HandBuilt("conv"), X, mutators=[ActivationSwap()])
    assert space.search_space.choices == {"activation": retiarii_ir.Choice(
        "activation", ("relu", "gelu", "silu"), None, "mutator")}
    assert space.freeze({"activation": "silu"}).modules["stem.1"].type == "torch.nn.SiLU"


class Widths(Mutator):
    """Two decisions without labels: the mutator numbers them."""

    def mutate(self, graph):
        for path in ("stem.0", "body.0"):
            width = self.choice([8, 4])
            spec = graph.modules[path]
            graph.set_module(path, ModuleSpec(spec.type, {**spec.kwargs, "out_channels": width}))


class ThreeFlags(Mutator):
    def mutate(self, graph):
        for _ in range(3):
            self.choice([False, True])


def test_unlabelled_decisions_are_numbered_per_mutator():
    graph = trace(HandBuilt("conv"), X)
    assert [c.label for c in ThreeFlags().dry_run(graph.copy())] == ["ThreeFlags/0", "ThreeFlags/1", "ThreeFlags/2"]
    labelled = ThreeFlags(label="f")
    assert [c.label for c in labelled.dry_run(graph.copy())] == ["f/0", "f/1", "f/2"]
    assert [c.label for c in labelled.dry_run(graph.copy())] == ["f/0", "f/1", "f/2"], "numbering restarts each run"
    widened = Widths().apply(graph, {"Widths/0": 8, "Widths/1": 4}, infer=False)
    assert [widened.modules[q].kwargs["out_channels"] for q in ("stem.0", "body.0")] == [8, 4]


def test_one_label_asked_twice_must_keep_its_candidates():
    class Twice(Mutator):
        def __init__(self, second):
            super().__init__()
            self.second = second

        def mutate(self, graph):
            self.choice([1, 2], label="n")
            self.choice(self.second, label="n")

    graph = trace(HandBuilt("pool"), X)
    assert [(c.label, c.values) for c in Twice([1, 2]).dry_run(graph.copy())] == [("n", (1, 2))]
    with pytest.raises(retiarii_ir.IRError, match=r"asks for label 'n' twice with different candidates"):
        Twice([1, 2, 3]).dry_run(graph.copy())


def test_mutator_asking_for_a_label_the_sample_lacks():
    graph = trace(HandBuilt("pool"), X)
    with pytest.raises(InvalidSampleError, match=r"ActivationSwap asks for label 'activation'.*sample labels: \['act'\]"):
        ActivationSwap().apply(graph, {"act": "gelu"})
    with pytest.raises(InvalidSampleError, match=r"valid values: \['relu', 'gelu', 'silu'\]"):
        ActivationSwap().apply(graph, {"activation": "tanh"})


def test_choice_outside_mutate_and_non_json_candidates_are_rejected():
    with pytest.raises(retiarii_ir.IRError, match="may only be called from mutate"):
        ActivationSwap().choice([1, 2], "x")

    class BadCandidates(Mutator):
        def mutate(self, graph):
            self.choice([tnn.ReLU, tnn.GELU], label="cls")

    with pytest.raises(retiarii_ir.IRError, match=r"BadCandidates: candidates of 'cls' must be JSON values"):
        BadCandidates().dry_run(trace(HandBuilt("pool"), X))

    class NoCandidates(Mutator):
        def mutate(self, graph):
            self.choice([], label="empty")

    with pytest.raises(retiarii_ir.IRError, match=r"NoCandidates asks for label 'empty' with no candidates"):
        NoCandidates().dry_run(trace(HandBuilt("pool"), X))


def test_custom_mutator_shape_error_names_label_and_node():
    class Widen(Mutator):
        def mutate(self, graph):
            width = self.choice([8, 16], label="stem_width")
            spec = graph.modules["stem.0"]
            graph.set_module("stem.0", ModuleSpec(spec.type, {**spec.kwargs, "out_channels": width}))
            for node in graph.nodes:
                if node.op == "call_module" and node.target == "stem.0":
                    node.meta.setdefault("mutated_by", []).append("stem_width")

    graph = trace(HandBuilt("conv"), X)
    with pytest.raises(retiarii_ir.ShapeMismatchError) as info:
        Widen().apply(graph, {"stem_width": 16})
    assert info.value.labels == ["stem_width"] and info.value.node_name == "body_0"
    assert "node 'body_0' (call_module body.0) fails (" in str(info.value)
    assert "it reads stem_1, given (float32[2, 16, 8, 8])" in str(info.value)
    assert str(info.value).endswith('Labels involved (nearest first): {"stem_width": 16}')
    unchecked = Widen().apply(graph, {"stem_width": 16}, infer=False)  # no re-typing: no error yet
    assert unchecked.modules["stem.0"].kwargs["out_channels"] == 16


def test_shape_error_with_no_labelled_node_shows_the_whole_sample_and_every_input():
    """A mutator that marks nothing: no label reaches the failing node, so the message shows
    the whole sample; the failing node reads two values, both named."""
    class WidenResidual(Mutator):
        def mutate(self, graph):
            if self.choice([False, True], label="wide"):
                spec = graph.modules["body.0"]
                graph.set_module("body.0", ModuleSpec(spec.type, {**spec.kwargs, "out_channels": 16}))
                graph.set_module("body.1", ModuleSpec("torch.nn.ReLU", {}))

    class Residual(tnn.Module):
        def __init__(self):
            super().__init__()
            self.body = tnn.Sequential(tnn.Conv2d(3, 3, 1), tnn.ReLU())

        def forward(self, x):
            return self.body(x) + x

    with pytest.raises(retiarii_ir.ShapeMismatchError) as info:
        WidenResidual().apply(trace(Residual(), X), {"wide": True})
    assert info.value.labels == [] and info.value.node_name == "add"
    assert "it reads body_1, x, given (" in str(info.value)
    assert str(info.value).endswith('Labels involved (nearest first): {"wide": true}')


def test_graph_edits_insert_replace_and_bypass():
    graph = trace(HandBuilt("pool"), X)
    stem, body = graph.node("stem_1"), graph.node("body_0")
    scaled = graph.insert_on_edge(stem, body, "call_function", "operator.mul", (stem, 2.0))
    assert body.args[0] is scaled and scaled.args[0] is stem
    graph.replace_op(scaled, "call_function", "operator.add", (stem, 1.0))
    graph.bypass(graph.node("body_1"))
    assert graph.node("add").args == (graph.node("body_0"), graph.node("stem_1"))
    graph.validate(check_types=False)
    graph.infer_types()
    reference = HandBuilt("pool").eval()
    module = retiarii_ir.build_module(graph).eval()
    module.load_state_dict(reference.state_dict(), strict=True)
    s = reference.stem(X)
    expected = reference.head((reference.body[0](s + 1.0) + s).mean((2, 3)))
    torch.testing.assert_close(module(X), expected)
