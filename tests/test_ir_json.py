"""JSON: exact round trip of every value kind, versioning, and hostile or malformed input."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import retiarii_ir as ir
from retiarii_ir.module_spec import FunctionRef
from retiarii_ir.serialize import decode_value, encode_value
from tests.corpus import CORPUS
from tests.helpers import assert_same_graph, same_value


def small_graph() -> ir.Graph:
    model = CORPUS["buffers_and_params"].build().eval()
    return ir.trace(model, CORPUS["buffers_and_params"].example_args())


constants = st.recursive(
    st.none() | st.booleans() | st.integers(-2**62, 2**62) | st.text(max_size=8)
    | st.floats(allow_nan=False) | st.just(float("inf")) | st.just(Ellipsis)
    | st.sampled_from([torch.float32, torch.int64, torch.bool, torch.device("cpu"), torch.channels_last,
                       torch.strided, torch.sparse_coo, FunctionRef("torch.nn.functional.gelu")])
    | st.lists(st.integers(0, 2**40), max_size=4).map(torch.Size),
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    | st.tuples(inner, inner, inner).map(lambda t: slice(*t)),
    max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(constants)
def test_every_constant_kind_round_trips_exactly(value):
    data = json.loads(json.dumps(encode_value(value), allow_nan=False))
    back = decode_value(data, nodes={})
    same_value(back, value)
    assert repr(back) == repr(value)


def test_a_size_comes_back_as_a_size_not_a_tuple():
    """Planted bug: a ``torch.Size`` decoded as a plain ``tuple`` (equal under ``==``)."""
    back = decode_value(json.loads(json.dumps(encode_value(torch.Size([2, 3])))), nodes={})
    assert type(back) is torch.Size and back == (2, 3)
    assert type(decode_value(encode_value((2, 3)), nodes={})) is tuple


@pytest.mark.parametrize("value", [
    torch.Size([2, 3]), torch.strided, torch.sparse_coo, FunctionRef("torch.nn.functional.gelu"), Ellipsis,
    slice(1, None, 2), torch.channels_last, torch.device("cpu"), torch.float16, (1, [2.5, "a"], {"k": None}),
], ids=repr)
def test_each_value_kind_round_trips_exactly(value):
    """Every kind at least once on every run (the property test above draws them at random)."""
    same_value(decode_value(json.loads(json.dumps(encode_value(value))), nodes={}), value)


def test_nan_round_trips():
    back = decode_value(json.loads(json.dumps(encode_value(float("nan")))), nodes={})
    assert math.isnan(back)


def test_graph_round_trip_is_exact_including_constants_and_buffers():
    graph = small_graph()
    again = ir.Graph.from_json(graph.to_json())
    assert_same_graph(again, graph)
    assert str(again) == str(graph)
    for key, tensor in graph.constants.items():
        assert torch.equal(again.constants[key], tensor)
    prior = next(a for a in graph.attributes.values() if not a.persistent)
    assert torch.equal(next(a for a in again.attributes.values() if not a.persistent).value, prior.value)


def test_tied_weights_empty_constants_and_meta_round_trip():
    """Aliases (a tied embedding), an empty constant and the graph's meta come back as they were."""
    model = CORPUS["gpt"].build().eval()
    graph = ir.trace(model, CORPUS["gpt"].example_args())
    graph.constants["empty"] = torch.empty(0, 3, dtype=torch.int16)
    graph.meta["history"] = [{"mutator": "m", "choices": {"op": 1}}]
    assert graph.aliases == {"lm_head.weight": "transformer.wte.weight"}
    again = ir.Graph.from_json(graph.to_json())
    assert_same_graph(again, graph)
    assert again.meta == graph.meta and again.meta["traced_with"] == "torch.fx"


def size_graph() -> ir.Graph:
    """``x.new_zeros(torch.Size([2, 3]))`` next to a plain tuple shape, written by hand."""
    graph = ir.Graph("Sizes")
    x = graph.add_node("input", "x", name="x")
    zeros = graph.add_node("call_method", "new_zeros", (x, torch.Size([2, 3])), name="zeros")
    ones = graph.add_node("call_method", "new_ones", (x, (2, 3)), name="ones")
    total = graph.add_node("call_function", "operator.add", (zeros, ones), name="total")
    graph.add_node("output", "output", (total,), name="output")
    return graph


def test_graph_round_trip_keeps_python_types_of_arguments():
    """Planted bug: a ``torch.Size`` decoded as a plain ``tuple``; the re-encoded JSON would
    not show it if the decoder lost the type, so the decoded graph is compared with the original."""
    graph = size_graph()
    again = ir.Graph.from_json(graph.to_json())
    assert_same_graph(again, graph)
    assert type(again.node("zeros").args[1]) is torch.Size and type(again.node("ones").args[1]) is tuple


def test_optional_fields_may_be_left_out_of_hand_written_json():
    """A node needs only name, op and target (args, kwargs, scope and type default to empty
    and unknown), and a graph only its schema, version, name and nodes."""
    graph = size_graph()
    data = json.loads(graph.to_json())
    for key in ("modules", "attributes", "aliases", "constants", "module_types", "meta"):
        del data[key]
    for node in data["nodes"]:
        for key in ("kwargs", "scope", "type", *(("args",) if not node["args"] else ())):
            del node[key]
    again = ir.Graph.from_json(json.dumps(data))
    assert [(n.name, n.op, n.target, n.scope, n.kwargs, n.type) for n in again.nodes] == [
        (n.name, n.op, n.target, "", {}, ir.types.UNKNOWN) for n in graph.nodes]
    for mine, theirs in zip(again.nodes, graph.nodes):
        same_value(mine.args, theirs.args, mine.name)
    assert (again.modules, again.attributes, again.aliases, again.constants, again.meta) == ({}, {}, {}, {}, {})

    # an empty constant may leave out its data; an attribute its flags (both default to True);
    # a meta that is not an object is dropped
    data = json.loads(small_graph().to_json())
    data["constants"]["blank"] = {"dtype": "float32", "shape": [0, 2]}
    name, attribute = next(iter(data["attributes"].items()))
    for key in ("requires_grad", "persistent"):
        del attribute[key]
    data["meta"] = ["not", "an", "object"]
    again = ir.Graph.from_json(json.dumps(data))
    assert again.constants["blank"].shape == (0, 2) and again.constants["blank"].dtype == torch.float32
    assert (again.attributes[name].requires_grad, again.attributes[name].persistent) == (True, True)
    assert again.meta == {}


def test_node_references_inside_every_container_round_trip_and_hash():
    """Nodes read through a tuple (``torch.cat``), a slice with a computed bound, a list, and
    a dict the model returns: the decoder resolves each, and the structural hash sees each."""
    class Containers(torch.nn.Module):
        def forward(self, x):
            half = x.shape[1] // 2
            joined = torch.cat((x[:, :half], x[:, half:]), 1)
            return {"stacked": torch.stack([joined, x]), "joined": joined}

    graph = ir.trace(Containers(), torch.randn(2, 4))
    holders: set[str] = set()
    for node in graph.nodes:
        _containers_holding_nodes(node.args, holders)
    assert holders >= {"tuple", "slice", "list", "dict"}
    assert_same_graph(ir.Graph.from_json(graph.to_json()), graph)
    assert ir.structural_hash(graph) == ir.structural_hash(ir.Graph.from_json(graph.to_json()))


def _containers_holding_nodes(value, found: set[str]) -> None:
    """Names of the container kinds (fx's read-only ones count as list and dict) that hold a node."""
    parts = {tuple: lambda v: v, list: lambda v: v, dict: lambda v: v.values(),
             slice: lambda v: (v.start, v.stop, v.step)}
    kind = next((k for k in parts if isinstance(value, k)), None)
    if kind is None:
        return
    items = list(parts[kind](value))
    if any(isinstance(item, ir.Node) for item in items):
        found.add(kind.__name__)
    for item in items:
        _containers_holding_nodes(item, found)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int8, torch.int64, torch.bool, torch.uint8])
def test_constants_and_buffer_values_of_every_width_round_trip(dtype):
    graph = small_graph()
    graph.constants["extra"] = (torch.arange(6) % 3).to(dtype).reshape(2, 3)
    name, attribute = next((k, a) for k, a in graph.attributes.items() if a.value is not None)
    graph.attributes[name] = ir.graph.AttributeSpec(attribute.kind, (4,), str(dtype).removeprefix("torch."),
                                                    False, False, torch.tensor([1, 0, 2, 1]).to(dtype))
    assert_same_graph(ir.Graph.from_json(graph.to_json()), graph)


def test_values_at_the_edge_of_each_limit_load():
    """The largest accepted shape (64 dimensions, sizes below 2**63), a device with an index,
    an opaque module (no recorded arguments), and a layer count at the limit."""
    graph = size_graph()
    zeros = graph.node("zeros")
    zeros.args = (zeros.args[0], torch.Size([1] * 64))
    graph.node("ones").args = (graph.node("ones").args[0], torch.Size([2**63 - 1, 0]))
    zeros.kwargs = {"device": torch.device("cuda:1")}
    graph.modules["opaque"] = ir.ModuleSpec("torch.nn.ReLU", None)
    graph.modules["rnn"] = ir.ModuleSpec("torch.nn.LSTM", {"input_size": 2, "hidden_size": 2,
                                                           "num_layers": ir.limits.MAX_MODULE_LAYERS})
    again = ir.Graph.from_json(graph.to_json())
    assert_same_graph(again, graph)
    assert again.modules["opaque"].kwargs is None and again.modules["opaque"].is_opaque


def test_errors_quote_at_most_80_characters_of_a_bad_value():
    data = json.loads(small_graph().to_json())
    for schema, quoted in [("s" * 78, repr("s" * 78)), ("s" * 79, repr("s" * 79)[:80] + "..."),
                           ("s" * 10_000, repr("s" * 10_000)[:80] + "...")]:
        data["schema"] = schema
        with pytest.raises(ir.SchemaError) as info:
            ir.Graph.from_json(json.dumps(data))
        assert str(info.value) == f"not a retiarii-ir graph: schema is {quoted}, expected 'retiarii-ir/graph'"


def test_meta_keeps_every_json_entry_and_drops_the_rest():
    graph = size_graph()
    graph.meta.update({"first": 1, "live object": object(), "callable": len, "last": {"k": [1, 2]}})
    assert ir.Graph.from_json(graph.to_json()).meta == {"first": 1, "last": {"k": [1, 2]}}


def test_nodes_load_in_the_order_written_even_after_the_output():
    """Nothing is repaired while loading: a node written after the output stays there, and
    validation (not the loader) refuses the graph."""
    data = json.loads(size_graph().to_json())
    data["nodes"].append(dict(data["nodes"][2], name="extra"))  # a second "ones", after the output
    graph = ir.Graph.from_json(json.dumps(data))
    assert [n.name for n in graph.nodes] == ["x", "zeros", "ones", "total", "output", "extra"]
    with pytest.raises(ir.GraphValidationError, match="must be the last node"):
        graph.validate(check_types=False)


def test_json_carries_a_schema_version_and_unknown_versions_are_refused():
    data = json.loads(small_graph().to_json())
    assert data["schema"] == "retiarii-ir/graph" and data["version"] == ir.SCHEMA_VERSION
    data["version"] = 99
    with pytest.raises(ir.SchemaError, match="version 99"):
        ir.Graph.from_json(json.dumps(data))


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"schema": "other"}', "not a retiarii-ir graph"),
])
def test_malformed_json_gets_a_clear_error(text, message):
    with pytest.raises(ir.SchemaError, match=message):
        ir.Graph.from_json(text)


def _edit(mutate):
    data = json.loads(small_graph().to_json())
    mutate(data)
    return json.dumps(data)


def _node(data, op):
    return next(n for n in data["nodes"] if n["op"] == op)


HOSTILE = {
    "function outside the allow-list": (lambda d: _node(d, "call_function").update(target="os.system"),
                                        "os.system"),
    "__import__": (lambda d: _node(d, "call_function").update(target="builtins.__import__"), "__import__"),
    "attribute chain through dunders": (
        lambda d: _node(d, "call_function").update(target="torch.nn.functional.__builtins__.eval"), "eval"),
    "torch.load executes pickles": (lambda d: _node(d, "call_function").update(target="torch.load"), "torch.load"),
    "torch.hub": (lambda d: _node(d, "call_function").update(target="torch.hub.load"), "torch.hub"),
    "dangerous method": (lambda d: _node(d, "call_method").update(target="__reduce_ex__"), "__reduce_ex__"),
    "module class outside torch.nn": (
        lambda d: d["modules"].update({"fc": {"$module": "subprocess.Popen", "kwargs": {}}}), "subprocess.Popen"),
    "node name with quotes and newline": (
        lambda d: _node(d, "call_module").update(name='x"); import os\nos.system("id'), "not a plain identifier"),
    "module path with code": (
        lambda d: _node(d, "call_module").update(target="fc; __import__('os')"), "forbidden segment"),
    "keyword with code": (
        lambda d: _node(d, "call_function").update(kwargs={"dim=__import__('os')": 1}), "not a plain identifier"),
    "graph name injection": (lambda d: d.update(name="Model:\n    pass\nimport os"), "not a plain identifier"),
    "constant with wrong byte count": (
        lambda d: next(iter(d["constants"].values())).update(data="AAAA"), "bytes for shape"),
    "reference to a later node": (
        lambda d: d["nodes"][1].update(args=[{"$node": "output"}]), "unknown or later node"),
    "unknown value encoding": (lambda d: _node(d, "call_function").update(args=[{"$eval": "1+1"}]),
                               "unknown value encoding"),
    "empty value object": (lambda d: _node(d, "call_function").update(args=[{}]), "unknown value encoding {}"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_json_is_rejected_before_anything_runs(case, monkeypatch):
    mutate, message = HOSTILE[case]
    text = _edit(mutate)
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append("torch.load"))
    with pytest.raises(ir.SchemaError) as info:
        ir.Graph.from_json(text)
    assert message in str(info.value)
    assert not calls


def test_user_namespaces_must_be_trusted_explicitly():
    text = _edit(lambda d: d["modules"].update({"fc": {"$module": "tests.test_ir_json.Custom", "kwargs": {}}}))
    with pytest.raises(ir.UnsafeTargetError, match="trust"):
        ir.Graph.from_json(text)
