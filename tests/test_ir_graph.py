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
    clone = graph.copy()
    clone.node("act").target = "fc2"
    clone.modules["fc1"].kwargs["out_features"] = 99
    assert graph.node("act").target == "act" and graph.modules["fc1"].kwargs["out_features"] == 8
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
