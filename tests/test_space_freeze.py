"""Freezing a model space, part by part, against expectations written out by hand or taken
from the eager model: the options tracing passes on, the search space of nested and shared
choices, what a frozen graph records, InputChoice forms, loose-end cells, and spaces built
by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn as tnn

import retiarii_ir
from retiarii_ir import Choice, InvalidSampleError, ModelSpace, Mutator, fixed_arch, nn, trace, trace_space
from retiarii_ir.space.choice_mutators import InputChoiceMutator, SiteMutator
from tests.helpers import assert_same_graph, same_value
from tests.test_space_api import Breaks, Small

torch.set_num_threads(1)
X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
Y = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return trace_space(Small(), X)


def _matches_fixed_arch(space, build, sample, *inputs, **kwargs):
    """The frozen graph's module, loaded with the weights of the model ``build()`` makes under
    fixed_arch, computes the same values of the same dtypes."""
    with fixed_arch(sample, space=space):
        fixed = build().eval()
    module = retiarii_ir.build_module(space.freeze(sample)).eval()
    module.load_state_dict(fixed.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(module(*inputs, **kwargs), fixed(*inputs, **kwargs))


# ---------------------------------------------------------------------- options of trace_space
@nn.model_wrapper
class TwoInputs(tnn.Module):
    """A choice between two ways of combining an image with a feature map given by keyword."""

    def __init__(self):
        super().__init__()
        self.proj = nn.LayerChoice({"conv": tnn.Conv2d(3, 4, 1), "wide": tnn.Conv2d(3, 4, 3, padding=1)}, label="proj")

    def forward(self, x, features=None):
        return self.proj(x) + features


def test_example_inputs_as_a_tuple_and_by_keyword_become_graph_inputs():
    """Tuple inputs are spread over forward's arguments (not passed as one tuple), and
    ``example_kwargs`` reach forward: dropping either makes tracing fail or lose an input."""
    space = trace_space(TwoInputs(), (X,), {"features": Y})
    assert [n.target for n in space.base.inputs] == ["x", "features"]
    _matches_fixed_arch(space, TwoInputs, {"proj": "wide"}, X, features=Y)

    class Added(tnn.Module):
        def forward(self, x, y):
            return x * y

    assert [n.target for n in trace_space(Added(), (Y, Y)).base.inputs] == ["x", "y"]


def test_batch_dim_leaf_modules_and_trust_reach_the_frozen_graph():
    """``batch_dim=None`` keeps the traced batch size, the default (also of
    ``ModelSpace.from_module``) makes it symbolic; a leaf module stays one call; ``trust``
    lets freeze check and run a function a custom mutator inserts from the user's package."""
    sample = {"width": 4, "op": "pool", "depth": 1}
    assert str(trace_space(Small(), X, batch_dim=None).freeze(sample).output.type) == "f32[2,5]"
    assert str(ModelSpace.from_module(Small(), X).freeze(sample).output.type) == "f32[B,5]"

    model = WithScaled().eval()
    graph = trace_space(model, X, leaf_modules=[Scaled]).freeze({"act": 1})
    assert [(n.op, n.target) for n in graph.nodes if n.op != "input"] == [
        ("call_module", "scaled"), ("call_module", "op"), ("output", "output")]
    module = retiarii_ir.build_module(graph, trust=[OWN_PACKAGE])
    module.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(module(X), torch.tanh(model.scaled.conv(X) * 3.0))

    model = tnn.Sequential(tnn.Conv2d(3, 4, 1)).eval()
    graph = trace_space(model, X, mutators=[Halve()], trust=[OWN_PACKAGE]).freeze({"halve": True})
    module = retiarii_ir.build_module(graph, trust=[OWN_PACKAGE])
    module.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(module(X), model(X) / 2)
    with pytest.raises(retiarii_ir.IRError, match=HALVE):
        trace_space(model, X, mutators=[Halve()]).freeze({"halve": True})


class Scaled(tnn.Module):
    """A layer of the user's own, kept as one call with ``leaf_modules``."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.channels, self.scale = channels, scale
        self.conv = tnn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return self.conv(x) * self.scale


class WithScaled(tnn.Module):
    def __init__(self):
        super().__init__()
        self.scaled = Scaled(3, 3.0)
        self.op = nn.LayerChoice([tnn.ReLU(), tnn.Tanh()], label="act")

    def forward(self, x):
        return self.op(self.scaled(x))


def halve(x):
    """A function of the user's own package that a custom mutator inserts."""
    return x / 2


HALVE = f"{__name__}.halve"  # pytest imports this file as test_space_freeze or tests.test_space_freeze
OWN_PACKAGE = __name__.split(".")[0]


class Halve(Mutator):
    def mutate(self, graph):
        if self.choice([False, True], label="halve"):
            result = graph.output.args[0]
            graph.insert_on_edge(result, graph.output, "call_function", HALVE, (result,))


# ---------------------------------------------------------------------- the search space
@nn.model_wrapper
class SharedAcrossLevels(tnn.Module):
    """``width`` inside a candidate and outside; ``act`` inside a candidate and at the top
    level; ``inner`` twice inside one candidate."""

    def __init__(self):
        super().__init__()
        width = nn.ValueChoice([4, 6], label="width")
        self.stem = nn.Conv2d(3, width, 1)
        self.outer = nn.LayerChoice({
            "conv": nn.Conv2d(width, width, 3, padding=1),
            "act": nn.LayerChoice([tnn.Tanh(), tnn.Sigmoid()], label="act"),
            "pair": tnn.Sequential(nn.LayerChoice([tnn.ReLU(), tnn.Tanh()], label="inner"),
                                   nn.LayerChoice([tnn.Sigmoid(), tnn.GELU()], label="inner")),
            "relu": tnn.ReLU()}, label="outer")
        self.post = nn.LayerChoice([tnn.Hardswish(), tnn.GELU()], label="act")

    def forward(self, x):
        return self.post(self.outer(self.stem(x)))


def test_labels_shared_across_nesting_levels(small):
    """A label shared by a nested and a top-level choice is top-level (it always decides);
    shared within one candidate it stays nested. Each choice keeps its kind. A choice inside
    an unchosen candidate never touches the graph, even when its label is in the sample."""
    space = trace_space(SharedAcrossLevels(), X)
    assert space.search_space.choices == {
        "width": Choice("width", (4, 6), None, "value"),
        "outer": Choice("outer", ("conv", "act", "pair", "relu"), None, "layer"),
        "act": Choice("act", (0, 1), None, "layer"),
        "inner": Choice("inner", (0, 1), ("outer", "pair"), "layer")}
    assert space.size == 2 * 2 * (1 + 1 + 2 + 1)
    expected = {
        ("relu", None): {"stem": "Conv2d", "outer": "ReLU", "post": "GELU"},
        ("act", None): {"stem": "Conv2d", "outer": "Sigmoid", "post": "GELU"},
        ("conv", None): {"stem": "Conv2d", "outer": "Conv2d", "post": "GELU"},
        ("pair", 1): {"stem": "Conv2d", "outer.0": "Tanh", "outer.1": "GELU", "post": "GELU"},
    }
    for (outer, inner), types in expected.items():
        sample = {"width": 6, "outer": outer, "act": 1, **({} if inner is None else {"inner": inner})}
        graph = space.freeze(sample)
        assert {q: spec.class_name for q, spec in graph.modules.items()} == types, sample
        assert graph.modules["stem"].kwargs["out_channels"] == 6
        sites = [h["site"] for h in graph.meta["history"]]
        assert sites == {"relu": ["stem", "outer", "post"], "act": ["stem", "outer", "outer", "post"],
                         "conv": ["stem", "outer", "outer", "post"],
                         "pair": ["stem", "outer", "outer.0", "outer.1", "post"]}[outer]
        _matches_fixed_arch(space, SharedAcrossLevels, sample, X)
    assert {label: c.kind for label, c in small.search_space.choices.items()} == {
        "width": "value", "op": "layer", "k": "value", "depth": "depth"}


def test_default_sample_takes_the_first_candidate_of_each_active_choice(small):
    assert small.default_sample() == {"width": 4, "op": "conv", "k": 1, "depth": 0}

    @nn.model_wrapper
    class Blocks(tnn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Repeat(lambda i: nn.LayerChoice([tnn.ReLU(), tnn.Tanh()], label=f"op{i}"),
                                    depth=(0, 2), label="depth")

        def forward(self, x):
            return self.blocks(x)

    assert trace_space(Blocks(), X).default_sample() == {"depth": 0}  # op0, op1 are inactive at depth 0


def test_space_fixed_arch_checks_the_sample_against_the_space(small):
    """``space.fixed_arch`` validates (a missing label is an error, not a first-candidate warning)."""
    sample = {"width": 8, "op": "conv", "k": 3, "depth": 1}
    with small.fixed_arch(sample):
        model = Small()
    assert model.stem.out_channels == 8 and model.op.kernel_size == (3, 3) and len(model.blocks) == 1
    with pytest.raises(InvalidSampleError, match=r"no value for label 'depth'"), small.fixed_arch({"width": 4, "op": "pool"}):
        Small()


# ---------------------------------------------------------------------- what a frozen graph records
def test_a_frozen_graph_records_its_origin_and_each_mutator_that_ran():
    space = trace_space(Small(), X)  # traced here: mutmut credits a shared fixture's calls to its first test only
    graph = space.freeze({"width": 8, "op": "conv", "k": 3, "depth": 2})
    assert graph.meta["derived_from"] == {"graph": "Small",
                                          "structural_hash": retiarii_ir.structural_hash(space.base)[:16]}
    value = lambda site, **choices: {"mutator": "ValueChoiceMutator", "choices": choices,  # noqa: E731
                                     "label": next(iter(choices)), "site": site}
    assert graph.meta["history"] == [
        value("stem", width=8),
        {"mutator": "LayerChoiceMutator", "choices": {"op": "conv"}, "label": "op", "site": "op"},
        value("op", width=8, k=3),
        {"mutator": "RepeatMutator", "choices": {"depth": 2}, "label": "depth", "site": "blocks"},
        value("blocks.0.0", width=8), value("blocks.1.0", width=8), value("head", width=8)]


def test_module_types_are_the_classes_of_the_fixed_arch_models_modules(small):
    """Every module path of the frozen graph, containers included, with the class the same
    architecture built by fixed_arch has there (a Repeat of depth 2 is a Sequential of 2)."""
    for sample in ({"width": 8, "op": "conv", "k": 3, "depth": 2}, {"width": 4, "op": "pool", "depth": 1}):
        with small.fixed_arch(sample):
            model = Small()
        assert small.freeze(sample).module_types == {q: type(m).__name__ for q, m in model.named_modules()}


def test_list_candidates_become_the_tuples_torch_stores():
    """A ValueChoice over lists (as a JSON sample holds them) gives the module spec the tuple
    the torch layer stores: what tracing the fixed_arch model records."""
    @nn.model_wrapper
    class Kernels(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, kernel_size=nn.ValueChoice([[1, 3], [3, 1]], label="ks"),
                                  padding=nn.ValueChoice([[0, 1], [1, 0]], label="pad"))

        def forward(self, x):
            return self.conv(x)

    space = trace_space(Kernels(), X)
    for sample in space.grid():
        with fixed_arch(sample):
            model = Kernels()
        same_value(space.freeze(sample).modules["conv"].kwargs, trace(model, X).modules["conv"].kwargs)
        _matches_fixed_arch(space, Kernels, sample, X)


# ---------------------------------------------------------------------- InputChoice forms
class Branches(tnn.Module):
    """Three convolutions; an InputChoice, called by keyword, picks and reduces their outputs."""

    def __init__(self, reduction: str = "sum", n_chosen: int | None = 2):
        super().__init__()
        self.convs = tnn.ModuleList(tnn.Conv2d(3, 4, k, padding=k // 2) for k in (1, 3, 5))
        self.choose = nn.InputChoice(3, n_chosen, reduction, label="inputs")

    def forward(self, x):
        return self.choose(inputs=[conv(x) for conv in self.convs])


class InBlock(tnn.Module):
    def __init__(self):
        super().__init__()
        self.block = Branches()

    def forward(self, x):
        return self.block(x)


def test_input_choice_called_by_keyword_inside_a_block():
    """The reduction replaces the choice where it was called: inside the block's scope
    (``nodes_in`` finds it), named after the choice, and it survives a JSON round trip."""
    space = trace_space(InBlock(), X)
    assert space.search_space.choices["inputs"].kind == "input"
    graph = space.freeze({"inputs": [0, 2]})
    assert [(n.op, n.target, n.name, [i.name for i in n.inputs]) for n in graph.nodes] == [
        ("input", "x", "x", []),
        ("call_module", "block.convs.0", "block_convs_0", ["x"]),
        ("call_module", "block.convs.2", "block_convs_2", ["x"]),
        ("call_function", "operator.add", "block_choose_1", ["block_convs_0", "block_convs_2"]),
        ("output", "output", "output", ["block_choose_1"])]
    assert [n.name for n in graph.nodes_in("block.choose")] == ["block_choose_1"]
    assert_same_graph(retiarii_ir.Graph.from_json(graph.to_json()), graph)
    for sample in space.grid():
        _matches_fixed_arch(space, InBlock, sample, X)


def test_input_choice_over_a_value_that_holds_the_list():
    """When the candidates come as one value (``torch.chunk``'s tuple), each chosen one is
    taken out of it by index."""
    class Chunks(tnn.Module):
        def __init__(self):
            super().__init__()
            self.choose = nn.InputChoice(3, 2, "sum", label="parts")

        def forward(self, x):
            return self.choose(torch.chunk(x, 3, dim=1))

    space = trace_space(Chunks(), X)
    graph = space.freeze({"parts": [0, 2]})
    assert [(n.op, n.target, n.args) for n in graph.nodes[2:4]] == [
        ("call_function", "operator.getitem", (graph.node("chunk"), 0)),
        ("call_function", "operator.getitem", (graph.node("chunk"), 2))]
    for sample in space.grid():
        _matches_fixed_arch(space, Chunks, sample, X)
        with torch.no_grad():
            parts = torch.chunk(X, 3, dim=1)
            torch.testing.assert_close(retiarii_ir.build_module(space.freeze(sample))(X),
                                       sum(parts[i] for i in sample["parts"]))


def test_the_mean_of_one_chosen_input_is_that_input_unchanged():
    """As in the eager model, no division by 1: an integer input stays an integer."""
    class Indices(tnn.Module):
        def __init__(self):
            super().__init__()
            self.choose = nn.InputChoice(2, None, "mean", label="which")

        def forward(self, x):
            return self.choose([x.argmax(1), x.argmin(1)])

    space = trace_space(Indices(), X)
    assert str(space.freeze({"which": [1]}).output.type) == "i64[B,8,8]"
    assert str(space.freeze({"which": [0, 1]}).output.type) == "f32[B,8,8]"
    for sample in space.grid():
        _matches_fixed_arch(space, Indices, sample, X)


# ---------------------------------------------------------------------- cells and repeats
@nn.model_wrapper
class LooseCell(tnn.Module):
    """A cell whose loose ends (nodes no other node reads) are concatenated; the head expects
    all three nodes to be loose."""

    def __init__(self):
        super().__init__()
        ops = {"conv": lambda: tnn.Conv2d(3, 3, 3, padding=1), "skip": lambda: tnn.Identity()}
        self.cell = nn.Cell(ops, num_nodes=3, num_ops_per_node=1, num_predecessors=1,
                            merge_op="loose_end", label="cell")
        self.head = tnn.Linear(9, 2)

    def forward(self, x):
        return self.head(self.cell(x).mean((2, 3)))


def test_loose_end_merge_is_named_placed_and_recorded_like_the_cell():
    space = trace_space(LooseCell(), X)
    all_loose = {"cell/input_0_0": 0, "cell/op_0_0_0": "skip", "cell/input_1_0": 0, "cell/op_1_0_0": "conv",
                 "cell/input_2_0": 0, "cell/op_2_0_0": "conv"}
    graph = space.freeze(all_loose)
    assert [n.name for n in graph.nodes_in("cell")] == ["cell_ops_0_0_0", "cell_ops_1_0_0", "cell_ops_2_0_0",
                                                       "cell_merge_1"]
    assert graph.node("cell_merge_1").target == "torch.cat"
    assert graph.meta["history"][-1] == {"mutator": "LooseEndMutator", "choices": {}, "label": "cell",
                                         "site": "cell.merge"}
    _matches_fixed_arch(space, LooseCell, all_loose, X)

    # node 1 reads node 0, so only two nodes are loose and the head gets 6 channels
    two_loose = {"cell/input_0_0": 0, "cell/op_0_0_0": "skip", "cell/input_1_0": 1, "cell/op_1_0_1": "skip",
                 "cell/input_2_0": 0, "cell/op_2_0_0": "skip"}
    with pytest.raises(retiarii_ir.ShapeMismatchError, match=r"node 'head'") as info:
        space.freeze(two_loose)
    # the merged node answers for every node of the cell, in node order, before their ancestors
    assert info.value.labels == ["cell/op_0_0_0", "cell/op_1_0_1", "cell/op_2_0_0"]


def test_every_repeated_block_answers_for_the_depth():
    """A shape error in the first of two blocks names the depth (which made that block) first:
    a stem of searched width before blocks that need 4 channels."""
    space = trace_space(Breaks(), X)
    with pytest.raises(retiarii_ir.ShapeMismatchError) as info:
        space.freeze({"stem_width": 6, "body_depth": 2})
    assert info.value.node_name == "body_0_0" and info.value.labels == ["body_depth", "stem_width"]


class PairBlock(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(3, 3, 1)

    def forward(self, pair):
        a, b = pair
        return self.conv(a), a + b


@nn.model_wrapper
class Pairs(tnn.Module):
    """Repeated blocks that pass a pair along."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Repeat(lambda i: PairBlock(), depth=(1, 2), label="depth")

    def forward(self, x):
        a, b = self.blocks((x, x))
        return a * b


def test_repeated_blocks_that_pass_a_pair_keep_every_node_in_the_repeats_scope():
    space = trace_space(Pairs(), X)
    graph = space.freeze({"depth": 2})
    outside = {"x", "getitem", "getitem_1", "mul", "output"}
    assert [n.name for n in graph.nodes_in("blocks")] == [n.name for n in graph.nodes if n.name not in outside]
    assert [n.target for n in graph.nodes_in("blocks") if n.scope == "blocks"] == ["builtins.tuple"] * 2
    assert_same_graph(retiarii_ir.Graph.from_json(graph.to_json()), graph)
    for sample in space.grid():
        _matches_fixed_arch(space, Pairs, sample, X)


@nn.model_wrapper
class TwoCells(tnn.Module):
    """A choice between two loose-end cells: both merge at the same path, ``outer.merge``."""

    def __init__(self):
        super().__init__()
        ops = {"conv": lambda: tnn.Conv2d(3, 3, 3, padding=1), "skip": lambda: tnn.Identity()}
        cell = lambda n, label: nn.Cell(ops, num_nodes=n, num_ops_per_node=1, num_predecessors=1,  # noqa: E731
                                        merge_op="loose_end", label=label)
        self.outer = nn.LayerChoice({"small": cell(2, "small"), "large": cell(3, "large")}, label="cells")

    def forward(self, x):
        return self.outer(x).mean((1, 2, 3))


def test_only_the_chosen_cell_merges_its_loose_ends():
    space = trace_space(TwoCells(), X)
    for seed in range(4):
        sample = space.random_sample(seed)
        merges = [h for h in space.freeze(sample).meta["history"] if h["mutator"] == "LooseEndMutator"]
        assert merges == [{"mutator": "LooseEndMutator", "choices": {}, "label": sample["cells"],
                           "site": "outer.merge"}], sample
        _matches_fixed_arch(space, TwoCells, sample, X)


def test_a_cell_keeps_only_the_ops_on_the_inputs_it_chose():
    """The op choices on inputs a node did not choose are dropped with their candidates."""
    @nn.model_wrapper
    class AllCell(tnn.Module):
        def __init__(self):
            super().__init__()
            ops = {"conv": lambda: tnn.Conv2d(3, 3, 3, padding=1), "skip": lambda: tnn.Identity()}
            self.cell = nn.Cell(ops, num_nodes=2, num_ops_per_node=1, num_predecessors=1, label="cell")

        def forward(self, x):
            return self.cell(x)

    space = trace_space(AllCell(), X)
    graph = space.freeze({"cell/input_0_0": 0, "cell/op_0_0_0": "skip", "cell/input_1_0": 0, "cell/op_1_0_0": "conv"})
    assert {q: spec.class_name for q, spec in graph.modules.items()} == {"cell.ops.0.0.0": "Identity",
                                                                         "cell.ops.1.0.0": "Conv2d"}
    for sample in space.grid():
        _matches_fixed_arch(space, AllCell, sample, X)


# ---------------------------------------------------------------------- shape-error labels
@nn.model_wrapper
class Chain(tnn.Module):
    """Seven 1x1 convolutions, each width its own choice; the head needs 4 channels."""

    def __init__(self):
        super().__init__()
        widths = [3] + [nn.ValueChoice([4, 5], label=f"w{i}") for i in range(1, 8)]
        self.convs = tnn.Sequential(*[nn.Conv2d(widths[i], widths[i + 1], 1) for i in range(7)])
        self.head = tnn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.convs(x).mean((2, 3)))


def test_a_shape_error_names_at_most_six_labels_nearest_first_each_once():
    space = trace_space(Chain(), X)
    sample = {f"w{i}": 4 for i in range(1, 7)} | {"w7": 5}
    with pytest.raises(retiarii_ir.ShapeMismatchError) as info:
        space.freeze(sample)
    # the last convolution reads w6 and writes w7; each earlier one adds the width it reads
    assert info.value.labels == ["w6", "w7", "w5", "w4", "w3", "w2"]
    assert str(info.value).endswith('Labels involved (nearest first): '
                                    '{"w6": 4, "w7": 5, "w5": 4, "w4": 4, "w3": 4, "w2": 4}')

    @nn.model_wrapper
    class SameWidthTwice(tnn.Module):
        def __init__(self):
            super().__init__()
            width = nn.ValueChoice([4, 6], label="w")
            self.a, self.b, self.head = nn.Conv2d(3, width, 1), nn.Conv2d(width, width, 1), tnn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.b(self.a(x)).mean((2, 3)))

    with pytest.raises(retiarii_ir.ShapeMismatchError) as info:
        trace_space(SameWidthTwice(), X).freeze({"w": 6})
    assert info.value.labels == ["w"]


def test_a_shape_error_names_the_labels_of_every_branch_that_reaches_it():
    """The stem's output reaches the head by two paths; the side branch only by one, after it."""
    @nn.model_wrapper
    class Diamond(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, nn.ValueChoice([4, 6], label="w"), 1)
            self.side = nn.Conv2d(3, nn.ValueChoice([4, 6], label="side"), 1)
            self.head = tnn.Linear(8, 2)

        def forward(self, x):
            r = self.stem(x)
            return self.head(torch.cat([torch.relu(r), r + self.side(x)], 1).mean((2, 3)))

    with pytest.raises(retiarii_ir.ShapeMismatchError) as info:
        trace_space(Diamond(), X).freeze({"w": 6, "side": 6})
    assert info.value.node_name == "head" and info.value.labels == ["w", "side"]


# ---------------------------------------------------------------------- spaces built by hand
def test_a_space_missing_a_mutator_fails_to_freeze_naming_the_choice_point(small):
    """Without the mutator of ``op``, the kernel size nested in ``op`` becomes a top-level
    choice, and freezing stops at the unresolved LayerChoice instead of building a graph
    that still holds it."""
    space = ModelSpace(small.base, [m for m in small.mutators if m.label != "op"])
    assert space.search_space.choices["k"] == Choice("k", (1, 3), None, "value")
    assert list(space.choices()) == ["width", "k", "depth"]
    with pytest.raises(retiarii_ir.GraphValidationError,
                       match=r"choice point 'op' .*not resolved by sample \{'width': 4, 'k': 1, 'depth': 0\}"):
        space.freeze({"width": 4, "k": 1, "depth": 0})


def test_choices_whose_parents_form_a_cycle_are_refused():
    graph = trace(tnn.Sequential(tnn.ReLU()), X)
    mutators = [SiteMutator("0", "a", [0, 1], parent=("b", 0)), SiteMutator("0", "b", [0, 1], parent=("a", 1))]
    with pytest.raises(retiarii_ir.IRError, match=r"choices \['a', 'b'\] depend on each other in a cycle"):
        ModelSpace(graph, mutators)



@nn.model_wrapper
class PlainLooseEnds(tnn.Module):
    """A loose-end merge over nodes no choice edited: ``a`` is read by ``b``, so only ``b``
    and ``c`` are loose."""

    def __init__(self):
        super().__init__()
        self.merge = nn.LooseEndMerge("plain")

    def forward(self, x):
        a = torch.relu(x)
        b = a * 2.0
        c = x - 1.0
        return self.merge([a, b, c])


def test_loose_ends_that_no_choice_edited_are_merged_too():
    space = trace_space(PlainLooseEnds(), X)
    graph = space.freeze({})
    cat = graph.node(graph.output.args[0].name)
    assert cat.target == "torch.cat" and [n.name for n in cat.args[0]] == ["mul", "sub"]
    assert str(graph.output.type) == "f32[B,6,8,8]"
    expected = torch.cat([torch.relu(X) * 2.0, X - 1.0], dim=1)
    torch.testing.assert_close(retiarii_ir.build_module(graph)(X), expected)


def test_an_input_choice_mutator_keeps_the_parent_it_is_given():
    mutator = InputChoiceMutator("pick", "which", [[0], [1]], "sum", parent=("depth", 2))
    assert mutator.parent == ("depth", 2)
    assert mutator.declared_choices() == [Choice("which", ([0], [1]), ("depth", 2), "input")]
    assert not mutator.parent_holds({"depth": 1}) and mutator.parent_holds({"depth": 2})
