"""The model-space API on small spaces: enumeration, freezing, fixed_arch, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn as tnn

import retiarii_ir
from retiarii_ir import (
    InvalidSampleError,
    ShapeMismatchError,
    fixed_arch,
    nn,
    trace_space,
)
from retiarii_ir.space.search_space import AnyOf
from tests.helpers import assert_same_graph

torch.set_num_threads(1)
X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@nn.model_wrapper
class Small(tnn.Module):
    def __init__(self):
        super().__init__()
        width = nn.ValueChoice([4, 8], label="width")
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.op = nn.LayerChoice({"conv": nn.Conv2d(width, width, nn.ValueChoice([1, 3], label="k"),
                                                    padding=nn.ValueChoice([1, 3], label="k") // 2),
                                  "pool": tnn.MaxPool2d(3, 1, 1)}, label="op")
        self.blocks = nn.Repeat(lambda i: tnn.Sequential(nn.Conv2d(width, width, 1), tnn.ReLU()),
                                depth=(0, 2), label="depth")
        self.head = nn.Linear(width, 5)

    def forward(self, x):
        return self.head(self.blocks(self.op(self.stem(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return trace_space(Small(), X)


def _compare(space, cls, sample, x=X):
    with fixed_arch(sample, space=space):
        fixed = cls()
    module = retiarii_ir.build_module(space.freeze(sample))
    module.load_state_dict(fixed.state_dict(), strict=True)
    module.eval(), fixed.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), fixed(x), rtol=1e-5, atol=1e-6)


def test_choices_nested_and_size(small):
    assert small.choices() == {"width": [4, 8], "op": ["conv", "pool"], "k": [1, 3], "depth": [0, 1, 2]}
    assert small.search_space.choices["k"].parent == ("op", "conv")
    assert small.size == 2 * (2 + 1) * 3  # k only counts when op == conv


def test_grid_yields_size_distinct_samples_that_all_match_fixed_arch(small):
    samples = list(small.grid())
    assert len(samples) == small.size
    assert len({small.search_space.sample_key(s) for s in samples}) == small.size
    for sample in samples:
        json.dumps(sample)
        _compare(small, Small, sample)


def test_base_graph_never_changes_and_freezing_is_deterministic(small):
    before = small.base.copy()
    sample = {"width": 8, "op": "conv", "k": 3, "depth": 2}
    first, second = small.freeze(sample), small.freeze(json.loads(json.dumps(sample)))
    assert_same_graph(second, first)
    assert_same_graph(small.base, before)
    assert first.meta["sample"] == sample
    assert [h["site"] for h in first.meta["history"]][:3] == ["stem", "op", "op"]
    assert first.meta["derived_from"]["graph"] == "Small"
    assert_same_graph(retiarii_ir.Graph.from_json(first.to_json()), first)


def test_base_graph_keeps_choice_points(small):
    small.base.validate(check_types=False)
    sites = {n.target: small.base.modules[n.target].class_name for n in small.base.nodes if n.op == "call_module"}
    assert sites == {"stem": "Conv2d", "op": "LayerChoice", "blocks": "Repeat", "head": "Linear"}
    assert_same_graph(retiarii_ir.Graph.from_json(small.base.to_json(), trust=["retiarii_ir"]), small.base)


def test_a_model_without_choices_is_a_space_of_one():
    space = trace_space(tnn.Sequential(tnn.Conv2d(3, 4, 1)), X)
    assert space.size == 1 and list(space.grid()) == [{}]
    assert str(space.freeze({}).output.type) == "f32[B,4,8,8]"


def test_frozen_graph_is_typed_and_plain(small):
    graph = small.freeze({"width": 8, "op": "pool", "depth": 0})
    assert str(graph.output.type) == "f32[B,5]"
    assert all(not spec.is_opaque for spec in graph.modules.values())
    assert graph.modules["stem"].type == "torch.nn.Conv2d" and graph.modules["stem"].kwargs["out_channels"] == 8
    assert not any(n.op == "call_module" and n.target.startswith("blocks") for n in graph.nodes)


def test_unknown_label_lists_valid_labels(small):
    with pytest.raises(InvalidSampleError, match=r"unknown labels \['wdth'\]; valid labels: \['width', 'op'"):
        small.freeze({"wdth": 4, "op": "pool", "depth": 0})


def test_value_outside_choice_lists_valid_values(small):
    with pytest.raises(InvalidSampleError, match=r"value 5 is not a candidate of 'width'; valid values: \[4, 8\]"):
        small.freeze({"width": 5, "op": "pool", "depth": 0})
    with pytest.raises(InvalidSampleError, match=r"no value for label 'depth'"):
        small.freeze({"width": 4, "op": "pool"})
    with pytest.raises(InvalidSampleError, match=r"\['k'\] are not active"):
        small.freeze({"width": 4, "op": "pool", "k": 1, "depth": 0})


def test_fixed_arch_rejects_unknown_labels_and_bad_values():
    unknown = r"labels \['nope'\] do not exist.*valid labels: \['width'"
    with pytest.raises(InvalidSampleError, match=unknown), fixed_arch({"width": 4, "op": "pool", "depth": 1, "nope": 3}):
        Small()
    bad_value = r"value 'avg' is not a candidate of 'op'; valid values: \['conv', 'pool'\]"
    with pytest.raises(InvalidSampleError, match=bad_value), fixed_arch({"width": 4, "op": "avg", "depth": 1}):
        Small()


def test_fixed_arch_from_json_file(tmp_path, small):
    sample = small.random_sample(3)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(sample))
    with fixed_arch(path):
        model = Small()
    assert type(model.op) is {"conv": tnn.Conv2d, "pool": tnn.MaxPool2d}[sample["op"]]
    assert model.stem.out_channels == sample["width"] and model.head.in_features == sample["width"]
    assert type(model.blocks) is tnn.Sequential and len(model.blocks) == sample["depth"]


def test_random_samples_are_seeded(small):
    assert small.random_sample(7) == small.random_sample(7)
    assert all(small.validate(small.random_sample(s)) for s in range(5))


# ---------------------------------------------------------------------- shape errors
@nn.model_wrapper
class Breaks(tnn.Module):
    """Depth 0 of a channel-changing repeat, or a mismatched width, breaks the head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, nn.ValueChoice([4, 6], label="stem_width"), 1)
        self.body = nn.Repeat(tnn.Sequential(tnn.Conv2d(4, 4, 1)), depth=(1, 2), label="body_depth")
        self.head = tnn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def test_shape_breaking_sample_names_labels_and_node():
    space = trace_space(Breaks(), X)
    space.freeze({"stem_width": 4, "body_depth": 2})
    with pytest.raises(ShapeMismatchError) as info:
        space.freeze({"stem_width": 6, "body_depth": 1})
    error = info.value
    assert error.node_name == "body_0_0"
    assert "stem_width" in error.labels
    assert "body_0_0" in str(error) and "stem_width" in str(error)
    assert isinstance(error, InvalidSampleError)


# ---------------------------------------------------------------------- labels
def test_automatic_labels_are_stable_with_model_wrapper():
    @nn.model_wrapper
    class Auto(tnn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.LayerChoice([tnn.ReLU(), tnn.Tanh()])
            self.b = nn.Conv2d(3, nn.ValueChoice([2, 4]), 1)
            self.c = nn.LayerChoice([tnn.Identity(), tnn.ReLU()])

        def forward(self, x):
            return self.c(self.b(self.a(x)))

    first, second = trace_space(Auto(), X), trace_space(Auto(), X)
    assert list(first.choices()) == ["layerchoice_1", "valuechoice_1", "layerchoice_2"]
    assert first.choices() == second.choices()
    _compare(first, Auto, {"layerchoice_1": 1, "valuechoice_1": 4, "layerchoice_2": 1})


def test_shared_labels_decide_together_and_must_agree():
    class Shared(tnn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.LayerChoice([tnn.ReLU(), tnn.Tanh()], label="act")
            self.b = nn.LayerChoice([tnn.Sigmoid(), tnn.Hardswish()], label="act")

        def forward(self, x):
            return self.b(self.a(x))

    space = trace_space(Shared(), X)
    assert space.size == 2
    graph = space.freeze({"act": 1})
    assert {graph.modules["a"].type, graph.modules["b"].type} == {"torch.nn.Tanh", "torch.nn.Hardswish"}

    class Disagree(tnn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.LayerChoice([tnn.ReLU(), tnn.Tanh()], label="act")
            self.b = nn.LayerChoice([tnn.ReLU(), tnn.Tanh(), tnn.Sigmoid()], label="act")

        def forward(self, x):
            return self.b(self.a(x))

    with pytest.raises(retiarii_ir.IRError,
                       match=r"label 'act' is shared by choices with different candidates: \[0, 1\] and \[0, 1, 2\] \(at 'b'\)"):
        trace_space(Disagree(), X)


def test_value_choice_arithmetic():
    a, b = nn.ValueChoice([2, 3], label="a"), nn.ValueChoice([10, 20], label="b")
    expr = nn.ValueChoice.max(a * 4 + b // 10, 9) - (a % 2)
    assert [leaf.label for leaf in expr.leaves()] == ["a", "b"]
    assert expr.evaluate({"a": 3, "b": 20}) == max(3 * 4 + 2, 9) - 1
    assert expr.default() == max(2 * 4 + 1, 9)
    pair = nn.ValueChoice([(1, 2), (3, 4)], label="pair")
    assert pair[1].evaluate({"pair": (3, 4)}) == 4
    with pytest.raises(TypeError, match="cannot steer Python control flow"):
        bool(a * 2)
    with pytest.raises(TypeError, match="is not a plain value"):
        nn.ValueChoice([tnn.ReLU()])


# ---------------------------------------------------------------------- InputChoice and Cell
@pytest.mark.parametrize("reduction, n_chosen",
                         [("sum", 1), ("sum", 2), ("mean", 2), ("concat", 2), ("none", 2), ("mean", None)])
def test_input_choice_reductions(reduction, n_chosen):
    class Inputs(tnn.Module):
        def __init__(self):
            super().__init__()
            self.convs = tnn.ModuleList(tnn.Conv2d(3, 4, k, padding=k // 2) for k in (1, 3, 5))
            self.choose = nn.InputChoice(3, n_chosen, reduction, label="inputs")

        def forward(self, x):
            out = self.choose([conv(x) for conv in self.convs])
            return torch.cat(out, 1) if reduction == "none" else out

    space = trace_space(Inputs(), X)
    assert space.size == (7 if n_chosen is None else 3)  # C(3, 1) == C(3, 2); any non-empty subset: 7
    for sample in space.grid():
        _compare(space, Inputs, sample)


def test_cell_with_loose_end_merge():
    @nn.model_wrapper
    class LooseCell(tnn.Module):
        def __init__(self):
            super().__init__()
            ops = {"conv": lambda: tnn.Conv2d(3, 3, 3, padding=1), "skip": lambda: tnn.Identity()}
            self.cell = nn.Cell(ops, num_nodes=3, num_ops_per_node=1, num_predecessors=1,
                                merge_op="loose_end", label="cell")

        def forward(self, x):
            return self.cell(x).mean((1, 2, 3))

    space = trace_space(LooseCell(), X)
    assert space.choices()["cell/input_2_0"] == [0, 1, 2]
    assert space.search_space.choices["cell/op_2_0_1"].parent == ("cell/input_2_0", 1)
    assert space.size == (1 * 2) * (2 * 2) * (3 * 2)  # node i: (i + 1) inputs x 2 ops
    for seed in range(6):
        _compare(space, LooseCell, space.random_sample(seed))
    graph = space.freeze({"cell/input_0_0": 0, "cell/op_0_0_0": "skip", "cell/input_1_0": 1,
                          "cell/op_1_0_1": "conv", "cell/input_2_0": 0, "cell/op_2_0_0": "conv"})
    merged = [n for n in graph.nodes if n.op == "call_function" and n.target == "torch.cat"]
    assert len(merged) == 1 and len(merged[0].args[0]) == 2  # node 0 is read by node 1: not a loose end


# ---------------------------------------------------------------------- deeper nesting
@nn.model_wrapper
class Deep(tnn.Module):
    """Two levels of nesting, a ValueChoice depth over blocks with their own choices, and
    one LayerChoice called twice (its weights are shared between the calls)."""

    def __init__(self):
        super().__init__()
        conv_then_act = tnn.Sequential(tnn.Conv2d(3, 3, 3, padding=1),
                                       nn.LayerChoice([tnn.ReLU(), tnn.Tanh()], label="inner_act"))
        inner = nn.LayerChoice([tnn.Conv2d(3, 3, 1), conv_then_act], label="inner")
        self.outer = nn.LayerChoice({"a": inner, "b": tnn.Identity()}, label="outer")
        self.rep = nn.Repeat(lambda i: nn.LayerChoice([tnn.Conv2d(3, 3, 1), tnn.Identity()], label=f"rep_op{i}"),
                             depth=nn.ValueChoice([1, 3], label="rep_depth"))
        self.shared = nn.LayerChoice([tnn.Conv2d(3, 3, 1), tnn.Conv2d(3, 3, 3, padding=1)], label="shared")

    def forward(self, x):
        return self.shared(self.shared(self.rep(self.outer(x))))


def test_deep_nesting_value_choice_depth_and_a_choice_called_twice():
    space = trace_space(Deep(), X)
    parents = {label: c.parent for label, c in space.search_space.choices.items()}
    assert parents["inner"] == ("outer", "a") and parents["inner_act"] == ("inner", 1)
    assert parents["rep_op0"] is None  # block 0 exists at every depth
    assert parents["rep_op2"] == ("rep_depth", AnyOf((3,)))  # block 2 only at depth 3
    assert space.size == (1 + 1 * (1 + 2)) * (2 + 2 ** 3) * 2
    for seed in range(8):
        _compare(space, Deep, space.random_sample(seed))
    graph = space.freeze({"outer": "a", "inner": 1, "inner_act": 1, "rep_depth": 3,
                          "rep_op0": 0, "rep_op1": 1, "rep_op2": 0, "shared": 1})
    assert [n.target for n in graph.nodes if n.op == "call_module"] == [
        "outer.0", "outer.1", "rep.0", "rep.1", "rep.2", "shared", "shared"]
    assert graph.modules["outer.1"].type == "torch.nn.Tanh"


def test_the_documented_example_runs():
    doc = retiarii_ir.nn.__doc__
    code = doc.split("Example::\n", 1)[1].split("\n\n``LayerChoice``", 1)[0]
    namespace: dict = {}
    exec(compile("\n".join(line[4:] for line in code.splitlines()), "retiarii_ir.nn example", "exec"), namespace)  # noqa: S102 - our own docstring
    assert namespace["space"].choices() == {"width": [8, 16], "op": ["conv", "pool"], "depth": [0, 1, 2]}
    assert isinstance(namespace["model"], tnn.Module) and str(namespace["graph"].output.type) == "f32[B,10]"


def test_nn_reads_like_torch_nn():
    assert nn.Module is tnn.Module and nn.Sequential is tnn.Sequential and nn.functional is tnn.functional
    assert type(nn.Conv2d(3, 4, 1)) is tnn.Conv2d  # plain arguments: the torch layer itself

    class Doubled(nn.Conv2d):  # a user subclass of a wrapped layer stays the user's class
        def forward(self, x):
            return super().forward(x) * 2

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = Doubled(3, 4, 1)
            self.b = nn.Conv2d(4, nn.ValueChoice([2, 3], label="w"), 1)

        def forward(self, x):
            return self.b(self.a(x))

    space = trace_space(Net(), X)
    assert space.choices() == {"w": [2, 3]}
    _compare(space, Net, {"w": 3})
    with pytest.raises(TypeError, match="pass ValueChoice arguments to retiarii_ir.nn.Conv2d itself"):
        Doubled(3, nn.ValueChoice([4, 8]), 1)


def test_choices_inside_repeat_blocks_exist_only_when_the_block_does():
    @nn.model_wrapper
    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 1)
            self.blocks = nn.Repeat(
                lambda i: nn.LayerChoice([nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)], label=f"op{i}"),
                depth=(0, 2), label="depth")

        def forward(self, x):
            return self.blocks(self.stem(x))

    space = retiarii_ir.trace_space(Deep(), torch.randn(2, 3, 6, 6))
    assert space.search_space.active_labels({"depth": 0}) == ["depth"]
    assert space.search_space.active_labels({"depth": 1, "op0": 0}) == ["depth", "op0"]
    samples = list(space.grid())
    assert space.size == len(samples) == 1 + 2 + 4
    hashes = {retiarii_ir.structural_hash(space.freeze(s)) for s in samples}
    assert len(hashes) == len(samples), "every sample is a different architecture: no wasted trials"
    with pytest.raises(retiarii_ir.InvalidSampleError, match="not active"):
        space.freeze({"depth": 0, "op0": 1})


# ---------------------------------------------------------------------- hand-written expectations
def architecture(graph) -> list[tuple]:
    """Each node as (op, target, the nodes it reads); modules checked separately."""
    return [(n.op, n.target, [i.name for i in n.inputs]) for n in graph.nodes]


def modules(graph) -> dict[str, tuple]:
    return {path: (spec.class_name, spec.kwargs) for path, spec in graph.modules.items()}


def test_freeze_gives_the_hand_written_architecture(small):
    """Independent of fixed_arch (which shares the choice helpers with freeze): what each sample
    must build, written out by hand."""
    graph = small.freeze({"width": 8, "op": "conv", "k": 3, "depth": 2})
    assert architecture(graph) == [
        ("input", "x", []), ("call_module", "stem", ["x"]), ("call_module", "op", ["stem"]),
        ("call_module", "blocks.0.0", ["op"]), ("call_module", "blocks.0.1", ["blocks_0_0"]),
        ("call_module", "blocks.1.0", ["blocks_0_1"]), ("call_module", "blocks.1.1", ["blocks_1_0"]),
        ("call_method", "mean", ["blocks_1_1"]), ("call_module", "head", ["mean"]), ("output", "output", ["head"])]
    conv = lambda i, o, k, **kw: ("Conv2d", {"in_channels": i, "out_channels": o, "kernel_size": k, **kw})  # noqa: E731
    assert modules(graph) == {
        "stem": conv(3, 8, 3, padding=1), "op": conv(8, 8, 3, padding=1), "head": ("Linear", {"in_features": 8, "out_features": 5}),
        "blocks.0.0": conv(8, 8, 1), "blocks.0.1": ("ReLU", {}), "blocks.1.0": conv(8, 8, 1), "blocks.1.1": ("ReLU", {})}
    assert str(graph.output.type) == "f32[B,5]" and str(graph.node("blocks_1_1").type) == "f32[B,8,8,8]"

    graph = small.freeze({"width": 4, "op": "pool", "depth": 0})
    assert architecture(graph) == [
        ("input", "x", []), ("call_module", "stem", ["x"]), ("call_module", "op", ["stem"]),
        ("call_method", "mean", ["op"]), ("call_module", "head", ["mean"]), ("output", "output", ["head"])]
    assert modules(graph) == {"stem": conv(3, 4, 3, padding=1), "head": ("Linear", {"in_features": 4, "out_features": 5}),
                              "op": ("MaxPool2d", {"kernel_size": 3, "stride": 1, "padding": 1})}
    assert set(graph.module_types) == {"", "stem", "op", "head"}


@nn.model_wrapper
class CalledTwice(tnn.Module):
    """One LayerChoice applied twice, one of its candidates made of two layers."""

    def __init__(self):
        super().__init__()
        self.op = nn.LayerChoice({"conv1": tnn.Conv2d(3, 3, 1),
                                  "conv_relu": tnn.Sequential(tnn.Conv2d(3, 3, 3, padding=1), tnn.ReLU())}, label="op")

    def forward(self, x):
        return self.op(self.op(x)) + x


def test_a_multi_op_candidate_called_twice_is_inlined_at_both_call_sites():
    """Planted bug: only the first call site of a chosen candidate is inlined. Both calls
    must become conv -> relu, sharing the weights of ``op.0``."""
    space = trace_space(CalledTwice(), X)
    graph = space.freeze({"op": "conv_relu"})
    graph.validate()
    ops = [(op, target) for op, target, _ in architecture(graph)]
    assert ops == [("input", "x"), ("call_module", "op.0"), ("call_module", "op.1"), ("call_module", "op.0"),
                   ("call_module", "op.1"), ("call_function", "operator.add"), ("output", "output")]
    reads = [inputs for _, _, inputs in architecture(graph)]
    names = [n.name for n in graph.nodes]
    assert reads[1:6] == [["x"], [names[1]], [names[2]], [names[3]], [names[4], "x"]]
    assert modules(graph) == {"op.0": ("Conv2d", {"in_channels": 3, "out_channels": 3, "kernel_size": 3, "padding": 1}),
                              "op.1": ("ReLU", {})}
    _compare(space, CalledTwice, {"op": "conv_relu"})
    single = space.freeze({"op": "conv1"})
    assert [(op, target) for op, target, _ in architecture(single)] == [
        ("input", "x"), ("call_module", "op"), ("call_module", "op"), ("call_function", "operator.add"), ("output", "output")]
