"""Graph validation errors, editing, the networkx view, printing and structural hashing."""

import networkx as nx
import pytest
import torch
from torch import nn

import retiarii_ir as ir
from retiarii_ir.types import TensorType
from tests.corpus import CORPUS


def traced(name: str, **build) -> tuple[nn.Module, ir.Graph]:
    case = CORPUS[name]
    model = case.build().eval()
    return model, ir.trace(model, case.example_args(), case.example_kwargs())


class MLP(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.fc1 = nn.Linear(4, width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(width, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def mlp_graph(width=8) -> ir.Graph:
    return ir.trace(MLP(width).eval(), (torch.randn(2, 4),))


def test_dangling_input_names_both_nodes():
    graph = mlp_graph()
    other = mlp_graph()
    graph.node("fc2").args = (other.node("act"),)
    with pytest.raises(ir.GraphValidationError, match=r"dangling input: node 'fc2'.*reads 'act'"):
        graph.validate()


def test_cycle_is_reported_with_its_path():
    graph = mlp_graph()
    graph.node("fc1").args = (graph.node("act"),)
    with pytest.raises(ir.GraphValidationError, match=r"cycle in graph 'MLP': .*fc1.*act"):
        graph.validate()


def test_duplicate_names_are_reported():
    graph = mlp_graph()
    graph.node("act").name = "fc1"
    with pytest.raises(ir.GraphValidationError, match=r"duplicate node name 'fc1'"):
        graph.validate()


def test_type_mismatch_between_producer_and_consumer_names_them():
    graph = mlp_graph()
    graph.modules["fc2"].kwargs["in_features"] = 5  # fc2 now expects 5 features, act gives 8
    with pytest.raises(ir.TypeMismatchError, match=r"node 'fc2'.*act \(f32\[B,8\]\)"):
        graph.validate()


def test_recorded_type_that_lies_is_a_mismatch():
    graph = mlp_graph()
    graph.node("act").type = TensorType(("B", 9), "float32")
    with pytest.raises(ir.TypeMismatchError, match=r"'act'.*recorded as f32\[B,9\].*f32\[B,8\].*read by fc2"):
        graph.validate()


def test_unknown_module_and_bad_target_are_reported():
    graph = mlp_graph()
    graph.node("fc1").target = "missing"
    with pytest.raises(ir.GraphValidationError, match="calls module 'missing'"):
        graph.validate()
    graph = mlp_graph()
    graph.add_node("call_function", "os.system", (graph.node("x"),), before=graph.output)
    with pytest.raises(ir.GraphValidationError, match="os.system"):
        graph.validate(check_types=False)


def test_editing_then_reinferring_types():
    graph = mlp_graph()
    act = graph.node("act")
    extra = graph.add_node("call_function", "torch.tanh", (act,), after=act)
    graph.replace_all_uses(act, extra, only_in=[graph.node("fc2")])
    graph.infer_types().validate()
    assert str(extra.type) == "f32[B,8]"
    with pytest.raises(ir.GraphValidationError, match="still read by fc2"):
        graph.remove_node(extra)


def test_copy_is_independent():
    graph = mlp_graph()
    graph.node("act").meta["origin"] = [("t0", "act")]
    graph.node("fc2").kwargs = {"unused": graph.node("fc1")}
    graph.node("fc2").scope = "head"
    graph.meta["note"] = ["kept"]
    graph.attributes["scale"] = ir.graph.AttributeSpec("parameter", (1,), "float32")
    clone = graph.copy()
    from tests.helpers import assert_same_graph

    assert_same_graph(clone, graph)
    assert clone.name == "MLP" and clone.meta == graph.meta
    assert clone.node("fc2").kwargs["unused"] is clone.node("fc1")
    clone.node("act").target = "fc2"
    clone.node("act").meta["origin"].append(("t1", "act"))
    clone.modules["fc1"].kwargs["out_features"] = 99
    clone.attributes["scale"].shape = (2,)
    clone.meta["note"].append("changed")
    clone.module_types["fc1"] = "Other"
    assert graph.node("act").target == "act" and graph.modules["fc1"].kwargs["out_features"] == 8
    assert graph.node("act").meta["origin"] == [("t0", "act")] and graph.attributes["scale"].shape == (1,)
    assert graph.meta["note"] == ["kept"] and graph.module_types["fc1"] == "Linear"
    assert clone.node("fc2").args[0] is clone.node("act")


def test_networkx_view_matches_the_graph():
    _, graph = traced("resnet_basic")
    g = graph.to_networkx()
    assert set(g.nodes) == {n.name for n in graph.nodes}
    assert nx.is_directed_acyclic_graph(g)
    assert g.nodes["layer1_0_conv1"]["op"] == "call_module"
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    assert all(order[u] < order[v] for u, v in g.edges())
    assert g.number_of_edges() == sum(len(list(ir.node.iter_nodes((n.args, n.kwargs)))) for n in graph.nodes)


def test_printing_shows_one_line_per_node_with_types():
    _, graph = traced("lstm")
    text = str(graph)
    lines = text.splitlines()
    assert len(lines) == len(graph.nodes) + 1
    assert lines[0].startswith("graph LSTMClassifier(") and "i64[B," in lines[0]
    assert any("<LSTM>" in line and ": (f32[B," in line for line in lines)


def test_structural_hash_ignores_names_but_not_structure():
    assert ir.structural_hash(mlp_graph()) == ir.structural_hash(mlp_graph())
    renamed = mlp_graph()
    renamed.rename(renamed.node("act"), "activation")
    assert ir.structural_hash(renamed) == ir.structural_hash(mlp_graph())
    assert ir.structural_hash(mlp_graph(width=16)) != ir.structural_hash(mlp_graph())


def test_structural_hash_of_repeated_blocks():
    model, graph = traced("resnet_basic")
    blocks = [graph.nodes_in(f"layer1.{i}") for i in range(2)]
    assert ir.structural_hash(graph, blocks[0]) == ir.structural_hash(graph, blocks[1])
    assert ir.structural_hash(graph, blocks[0]) != ir.structural_hash(graph, graph.nodes_in("layer2.0"))
    params = model.state_dict()
    assert (ir.structural_hash(graph, blocks[0], params=params)
            != ir.structural_hash(graph, blocks[1], params=params)), "different weights"


def test_structural_hash_with_parameter_identity():
    a, b = MLP().eval(), MLP().eval()
    x = torch.randn(2, 4)
    ga, gb = ir.trace(a, (x,)), ir.trace(b, (x,))
    assert ir.structural_hash(ga) == ir.structural_hash(gb)
    assert ir.structural_hash(ga, params=a.state_dict()) != ir.structural_hash(gb, params=b.state_dict())
    b.load_state_dict(a.state_dict())
    assert ir.structural_hash(ga, params=a.state_dict()) == ir.structural_hash(gb, params=b.state_dict())


# ---------------------------------------------------------------------- users, positions, hashes
def _two_branches(first_left: bool):
    g = ir.Graph("Branches")
    x = g.add_node("input", "x", name="x", type=ir.TensorType(("B", 4)))
    make_left = lambda: g.add_node("call_function", "torch.relu", (x,), name="left", type=ir.TensorType(("B", 4)))  # noqa: E731
    make_right = lambda: g.add_node("call_function", "torch.tanh", (x,), name="right", type=ir.TensorType(("B", 4)))  # noqa: E731
    a, b = (make_left(), make_right()) if first_left else (make_right(), make_left())
    left, right = (a, b) if first_left else (b, a)
    total = g.add_node("call_function", "operator.sub", (left, right), name="total", type=ir.TensorType(("B", 4)))
    g.add_node("output", "output", (total,), name="output")
    return g


def test_structural_hash_does_not_depend_on_the_listing_order_of_independent_branches():
    assert ir.structural_hash(_two_branches(True)) == ir.structural_hash(_two_branches(False))
    assert ir.node_hashes(_two_branches(True))["total"] == ir.node_hashes(_two_branches(False))["total"]


def test_structural_hash_tells_outside_values_apart():
    def adder(same: bool):
        g = ir.Graph("Add")
        x = g.add_node("input", "x", name="x", type=ir.TensorType((2,)))
        y = g.add_node("input", "y", name="y", type=ir.TensorType((2,)))
        s = g.add_node("call_function", "operator.add", (x, x if same else y), name="s", type=ir.TensorType((2,)))
        g.add_node("output", "output", (s,), name="output")
        return g
    body = lambda g: [g.node("s")]  # noqa: E731
    assert ir.structural_hash(adder(True), body(adder(True))) != ir.structural_hash(adder(False), body(adder(False)))


def test_node_hashes_mark_distinct_nodes_apart():
    g = _two_branches(True)
    plain = ir.node_hashes(g)
    marked = ir.node_hashes(g, distinct=["left"])
    assert plain["right"] == marked["right"] and plain["left"] != marked["left"]
    assert plain["total"] != marked["total"], "a distinct input makes its readers distinct"


def test_users_follow_every_edit_in_execution_order():
    g = _two_branches(True)
    x, left, right, total = (g.node(n) for n in ("x", "left", "right", "total"))
    assert g.users(x) == [left, right]
    late = g.add_node("call_function", "torch.exp", (x,), name="late", after=right)
    early = g.add_node("call_function", "torch.sin", (x,), name="early", before=left)
    assert g.users(x) == [early, left, right, late] == x.users
    total.args = (left, late)
    assert g.users(right) == [] and g.users(late) == [total]
    g.remove_node(right)
    g.remove_node(early)
    assert g.users(x) == [left, late]
    clone = g.copy()
    assert [n.name for n in clone.users(clone.node("x"))] == ["left", "late"]
    clone.node("total").args = (clone.node("left"), clone.node("left"))
    assert g.users(late) == [total], "editing a copy leaves the original alone"
    assert [n.name for n in g.nodes] == ["x", "left", "late", "total", "output"]
    g.reorder([x, late, left, total, g.output])
    assert [n.name for n in g.nodes] == ["x", "late", "left", "total", "output"]
    assert g.users(x) == [late, left]


def test_many_inserts_at_one_place_keep_order():
    g = _two_branches(True)
    anchor = g.node("left")
    added = [g.add_node("call_function", "torch.relu", (g.node("x"),), name=f"n{i}", after=anchor) for i in range(200)]
    names = [n.name for n in g.nodes]
    assert names[:3] == ["x", "left", "n199"] and names.index("n0") == names.index("right") - 1
    assert [n.name for n in g.users(g.node("x"))][:3] == ["left", "n199", "n198"]
    assert all(g._index(n) == names.index(n.name) for n in added)


def test_origin_round_trips_through_json():
    g = _two_branches(True)
    g.node("total").meta["origin"] = [("t0", "total"), ("t1", "total")]
    back = ir.Graph.from_json(g.to_json())
    assert back.node("total").origin == [("t0", "total"), ("t1", "total")]
    assert back.node("left").origin == []


def _chain_graph() -> ir.Graph:
    """x -> relu -> sigmoid -> tanh (read by no one); x -> neg -> output; an in-place add_
    nobody reads; and a node read only by the dead chain."""
    g = ir.Graph("Chain")
    x = g.add_node("input", "x", name="x")
    g.add_node("input", "unused", name="unused")
    shared = g.add_node("call_function", "torch.abs", (x,), name="shared")
    a = g.add_node("call_function", "torch.relu", (shared,), name="a")
    b = g.add_node("call_function", "torch.sigmoid", (a,), name="b")
    g.add_node("call_function", "torch.tanh", (b, shared), name="c")
    kept = g.add_node("call_function", "torch.neg", (x,), name="kept")
    g.add_node("call_method", "add_", (kept, 1.0), name="in_place")
    g.add_node("output", "output", (kept,), name="output")
    return g


def test_dead_code_elimination_removes_whole_dead_chains():
    """Planted bug: use counts not decremented, so only the last node of a dead chain goes.
    Every node of the chain (and what only the chain reads) must go; the in-place call stays."""
    g = _chain_graph()
    removed = g.eliminate_dead_code()
    assert removed == ["c", "b", "a", "shared"]
    assert [n.name for n in g.nodes] == ["x", "unused", "kept", "in_place", "output"]
    assert [u.name for u in g.users(g.node("x"))] == ["kept"]
    assert all(name not in g for name in removed)
    assert g.eliminate_dead_code() == []


@pytest.mark.parametrize("op, target, kwargs, expected", [
    ("call_function", "torch.relu", {}, False),
    ("call_function", "torch.nn.functional.relu", {"inplace": True}, True),
    ("call_function", "torch.nn.functional.relu", {"inplace": False}, False),
    ("call_function", "operator.setitem", {}, True),
    ("call_function", "torch._assert", {}, True),
    ("call_function", "torch.ops.aten.fill_.Scalar", {}, True),
    ("call_function", "torch.ops.aten.add.Tensor", {}, False),
    ("call_function", "torch.ops.aten.add_", {}, True),  # no overload: the op is the last part
    ("call_function", "torch.ops.aten._assert_async.msg", {}, True),
    ("call_function", "torch.ops.aten.sym_constrain_range.default", {}, True),
    ("call_function", "operator.__iadd__", {}, False),  # dunders return a value; not in-place by name
    ("call_function", "torch.nn.functional.relu_", {}, True),  # the last part names the function
    ("call_function", "torch.Tensor.add_", {}, True),
    ("call_function", "mypkg.ops.fill_.impl.run", {}, False),  # the overload position only counts under torch.ops
    ("call_function", "torch.nn.utils.clip_grad.clip_grad_norm_", {}, True),  # five parts: still the last
    ("call_method", "add_", {}, True),
    ("call_method", "add", {}, False),
    ("call_method", "_private_", {}, False),
    ("call_method", "__setitem__", {}, True),
    ("call_module", "relu_", {}, False),
    ("get_attr", "weight_", {}, False),
])
def test_which_nodes_have_side_effects(op, target, kwargs, expected):
    g = ir.Graph()
    x = g.add_node("input", "x", name="x")
    node = g.add_node(op, target, (x,), kwargs, name="n")
    assert ir.graph.has_side_effect(node) is expected


def test_unique_names_are_identifiers_and_never_repeat():
    g = ir.Graph()
    assert g.name == "Model"
    assert g.unique_name("a.b-c") == "a_b_c" and g.unique_name("") == "v" and g.unique_name("3x") == "_3x"
    g.add_node("input", "x", name="x")
    g.add_node("input", "x_1", name="x_1")
    assert g.unique_name("x") == "x_2"
    relu = g.add_node("call_function", "torch.nn.functional.relu", (g.node("x"),))
    assert relu.name == "relu" and g.add_node("call_function", "torch.relu", (relu,)).name == "relu_1"
    g.rename(relu, "first")
    assert g.node("first") is relu and relu.name == "first" and "relu" not in g
    assert g.add_node("call_method", "mean", (relu,)).name == "mean"  # a target without a dot
    with pytest.raises(ir.GraphValidationError, match="already has a node named 'x'"):
        g.add_node("input", "x", name="x")


def test_new_nodes_go_before_the_output_unless_placed():
    g = _two_branches(True)
    tail = g.add_node("call_function", "torch.neg", (g.node("total"),), name="tail")
    assert [n.name for n in g.nodes][-2:] == ["tail", "output"]
    g.remove_node(g.node("output"))
    end = g.add_node("call_function", "torch.neg", (tail,), name="end")
    assert g.nodes[-1] is end
    empty = ir.Graph()
    assert empty.add_node("input", "x", name="x") is empty.nodes[0]


def test_inserts_at_both_ends_keep_order_and_positions():
    g = _two_branches(True)
    front = [g.add_node("call_function", "torch.relu", (g.node("x"),), name=f"f{i}", before=g.nodes[0])
             for i in range(60)]
    back = [g.add_node("call_function", "torch.relu", (g.node("x"),), name=f"b{i}", after=g.nodes[-1])
            for i in range(60)]
    names = [n.name for n in g.nodes]
    assert names[:2] == ["f59", "f58"] and names[-2:] == ["b58", "b59"]
    positions = [n._position for n in g.nodes]
    assert positions == sorted(positions) and len(set(positions)) == len(positions) and positions[0] > 0
    assert all(g._index(n) == names.index(n.name) for n in front + back)
    g.reorder(list(reversed(g.nodes)))
    assert [n._position for n in g.nodes] == [float(i + 1) for i in range(len(g.nodes))]
    with pytest.raises(ir.GraphValidationError, match="is not in graph"):
        g._index(ir.Graph().add_node("input", "y", name="y"))


def test_nodes_in_a_scope_include_its_children_and_calls_into_it():
    g = ir.Graph()
    x = g.add_node("input", "x", name="x")
    inner = g.add_node("call_function", "torch.relu", (x,), name="inner", scope="layer1.0")
    deeper = g.add_node("call_function", "torch.relu", (inner,), name="deeper", scope="layer1.0.conv")
    call = g.add_node("call_module", "layer1.0.bn", (deeper,), name="call")
    whole = g.add_node("call_module", "layer1.0", (call,), name="whole")
    g.add_node("call_function", "torch.relu", (whole,), name="sibling", scope="layer1.01")
    g.add_node("call_method", "layer1.0.x", (whole,), name="method")
    assert g.nodes_in("layer1.0") == [inner, deeper, call, whole]


def test_replace_all_uses_rewires_args_and_kwargs_of_the_chosen_users():
    g = _two_branches(True)
    x, left, right = g.node("x"), g.node("left"), g.node("right")
    late = g.add_node("call_function", "torch.add", (x,), {"other": left}, name="late")
    g.replace_all_uses(left, right, only_in=[late])
    assert late.kwargs == {"other": right} and g.node("total").args == (left, right)
    g.replace_all_uses(left, late)
    assert g.node("total").args == (late, right) and late.kwargs == {"other": right}, "the new node keeps its input"


def test_graph_methods_pass_their_options_on():
    graph = mlp_graph()
    assert "\n" in graph.to_json(indent=2) and "\n" not in graph.to_json()
    graph.modules["fc2"].kwargs["in_features"] = 5
    graph.validate(check_types=False)  # names and edges only
    with pytest.raises(ir.TypeMismatchError):
        graph.validate()


def halve(x):
    """A function of the user's own package, for the ``trust`` options."""
    return x / 2


def test_rewrite_methods_pass_every_argument_on():
    """Each editing method of Graph, given every optional argument, does what that argument asks."""
    graph = mlp_graph()
    x, fc1, act, fc2 = (graph.node(n) for n in ("x", "fc1", "act", "fc2"))
    assert list(graph) == graph.nodes

    leaky = graph.insert_on_edge(fc1, act, "call_function", "torch.nn.functional.leaky_relu", (fc1, 0.5),
                                 {"inplace": False}, name="leaky")
    assert (leaky.name, leaky.args, leaky.kwargs, act.args) == ("leaky", (fc1, 0.5), {"inplace": False}, (leaky,))
    norm = graph.insert_on_edge(act, fc2, "call_module", "norm", module=ir.ModuleSpec("torch.nn.LayerNorm", {
        "normalized_shape": 8}), name="norm")
    assert graph.modules["norm"].type == "torch.nn.LayerNorm" and fc2.args == (norm,)

    graph.replace_op(act, "call_module", "act2", (fc1,), {}, module=ir.ModuleSpec("torch.nn.Tanh", {}))
    assert (act.op, act.target, act.args, graph.modules["act2"].type) == ("call_module", "act2", (fc1,), "torch.nn.Tanh")
    graph.replace_op(act, "call_module", "act2", (leaky,))
    assert "act" not in graph.modules  # no node calls it any more
    graph.replace_op(leaky, "call_function", "torch.nn.functional.elu", kwargs={"alpha": 2.0})
    assert (leaky.target, leaky.args, leaky.kwargs) == ("torch.nn.functional.elu", (fc1, 0.5), {"alpha": 2.0})
    graph.replace_op(leaky, "call_function", "torch.nn.functional.elu", (fc1,))

    skip = graph.add_edge(fc1, norm, combine="operator.mul", name="skip")
    assert (skip.name, skip.target, skip.args, fc2.args) == ("skip", "operator.mul", (norm, fc1), (skip,))
    graph.bypass(skip, replacement=fc1)
    assert fc2.args == (fc1,) and "skip" not in graph
    residual = graph.add_edge(x, fc1)  # by default the two values are added
    assert (residual.target, residual.args, fc2.args) == ("operator.add", (fc1, x), (residual,))
    graph.bypass(residual, replacement=fc1)
    graph.set_module("fc2", ir.ModuleSpec("torch.nn.Linear", {"in_features": 8, "out_features": 2}))
    assert graph.modules["fc2"].kwargs["out_features"] == 2 and graph.module_types["fc2"] == "Linear"

    head = MLP()
    head.fc1 = nn.Linear(8, 8)
    block = ir.trace(head.eval(), (torch.randn(2, 8),))
    added = graph.inline(fc2, block, "head", name_of=lambda n: f"head_{n}_inlined")
    assert [n.name for n in added] == ["head_fc1_inlined", "head_act_inlined", "head_fc2_inlined"]
    assert [n.target for n in added] == ["head.fc1", "head.act", "head.fc2"] and added[0].args == (fc1,)
    graph.infer_types()
    assert str(graph.output.type) == "f32[B,3]"

    graph = ir.Graph("Halved")
    x = graph.add_node("input", "x", name="x", type=TensorType(("B", 4), "float32"))
    half = graph.add_node("call_function", f"{__name__}.halve", (x,), name="half")
    graph.add_node("output", "output", (half,), name="output")
    own = [__name__.split(".")[0]]
    with pytest.raises(ir.GraphValidationError, match="trust="):
        graph.validate(check_types=False)
    graph.validate(check_types=False, trust=own)
    graph.validate(check_types=False, trust=own[0])  # one package may be named alone
    assert str(graph.infer_types(trust=own).output.type) == "f32[B,4]"
    assert ir.Graph.from_json(graph.to_json(), trust=own).node("half").target == f"{__name__}.halve"
    with pytest.raises(ir.UnsafeTargetError, match="trust="):
        ir.Graph.from_json(graph.to_json())


def test_graph_edits_at_the_edges():
    """A node added without a scope has none; a second output node goes after the first (a
    rewrite adds the new output, then removes the old); a node past the end of another graph
    is not found in this one; a reorder must list this graph's own nodes."""
    g = _two_branches(True)
    x, total, old_output = g.node("x"), g.node("total"), g.output
    assert g.add_node("call_function", "torch.neg", (total,), name="neg").scope == ""
    new_output = g.add_node("output", "output", (g.node("neg"),), name="new_output")
    assert g.nodes[-2:] == [old_output, new_output]
    g.remove_node(old_output)
    assert g.output is new_output

    long = _two_branches(True)
    for i in range(8):
        long.add_node("call_function", "torch.relu", (long.node("x"),), name=f"r{i}", after=long.nodes[-1])
    assert long.nodes[-1]._position > g.nodes[-1]._position
    with pytest.raises(ir.GraphValidationError, match="is not in graph"):
        g.add_node("call_function", "torch.relu", (x,), after=long.nodes[-1])
    foreign = [*g.nodes[:-1], long.output]
    with pytest.raises(ir.GraphValidationError, match="must list exactly its nodes"):
        g.reorder(foreign)


def test_many_inserts_right_after_the_first_node_keep_order_and_distinct_positions():
    g = _two_branches(True)
    x = g.node("x")
    added = [g.add_node("call_function", "torch.relu", (x,), name=f"n{i}", after=x) for i in range(60)]
    names = [n.name for n in g.nodes]
    assert names[:3] == ["x", "n59", "n58"] and names.index("n0") == names.index("left") - 1
    positions = [n._position for n in g.nodes]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert all(g._index(n) == names.index(n.name) for n in [x, *added])


def test_replacing_a_value_by_a_node_that_reads_it_rewires_every_other_user():
    """The usual way to put a node after ``x``: add it reading ``x``, then let every other user
    of ``x`` read it instead; the new node itself keeps reading ``x``."""
    g = _two_branches(True)
    x, left, right = g.node("x"), g.node("left"), g.node("right")
    scaled = g.add_node("call_function", "torch.mul", (x, 2.0), name="scaled", after=x)
    assert g.users(x) == [scaled, left, right]
    g.replace_all_uses(x, scaled)
    assert scaled.args == (x, 2.0) and left.args == (scaled,) and right.args == (scaled,)
    assert g.users(x) == [scaled]


def test_trust_given_as_one_package_name():
    g = ir.Graph()
    g.trust = ("first",)
    assert g.trusted("second") == ("first", "second") and g.trusted(["first", "third"]) == ("first", "third")
