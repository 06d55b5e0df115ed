"""Malformed graph JSON ends in one project error that names the field, never a Python error
from deep inside; a fuzzer over real graphs' JSON checks the same for inputs nobody wrote down."""

import ast
import json
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from retiarii_ir import codegen
import retiarii_ir as ir
from retiarii_ir import limits
from retiarii_ir.errors import IRError, SchemaError
from retiarii_ir.serialize import check_depth, tensor_to_json
from retiarii_ir.shape_inference import example_inputs


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = y.mean((2, 3)).view(x.shape[0], -1)
        return self.fc(y) * self.scale + torch.tensor([1.0, 2.0])


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return json.loads(ir.trace(Net().eval(), torch.randn(2, 3, 5, 5)).to_json())


def _node(data, op):
    return next(n for n in data["nodes"] if n["op"] == op)


def _first_call(data):
    return _node(data, "call_function")


MALFORMED = {
    "memory format is a list": (lambda d: _first_call(d)["args"].append({"$memory_format": []}), "node #"),
    "layout is an object": (lambda d: _first_call(d)["args"].append({"$layout": {}}), "node #"),
    "device that torch refuses": (lambda d: _first_call(d)["args"].append({"$device": "abc"}), "bad device"),
    "dtype that is not a name": (lambda d: _first_call(d)["args"].append({"$dtype": 7}), "unknown dtype"),
    "dtype that does not exist": (lambda d: _first_call(d)["args"].append({"$dtype": "float33"}), "unknown dtype"),
    "dtype naming a lazy torch module": (lambda d: _first_call(d)["args"].append({"$dtype": "_dynamo"}),
                                         "unknown dtype"),
    "negative attribute shape": (lambda d: d["attributes"]["scale"].update(shape=[-1]), "non-negative"),
    "negative type shape": (lambda d: _first_call(d).update(type={"tensor": [-2, 4], "dtype": "float32"}),
                            "bad dimension"),
    "shape over 64 bits": (lambda d: d["attributes"]["scale"].update(shape=[2**70]), "non-negative"),
    "constant with negative shape": (lambda d: next(iter(d["constants"].values())).update(shape=[-2]),
                                     "non-negative"),
    "constant data not a string": (lambda d: next(iter(d["constants"].values())).update(data=[1, 2]),
                                   "base64"),
    "parameter named forward": (lambda d: d["attributes"].update(forward=d["attributes"].pop("scale")),
                                "nn.Module attribute"),
    "module named state_dict": (lambda d: d["modules"].update({"fc.state_dict": d["modules"]["fc"]}),
                                "nn.Module attribute"),
    "node name with a trailing newline": (lambda d: _first_call(d).update(name=_first_call(d)["name"] + "\n"),
                                          "not a plain identifier"),
    "function with a trailing newline": (lambda d: _first_call(d).update(target="torch.relu\n"),
                                         "plain identifiers"),
    "method with a trailing newline": (lambda d: _node(d, "call_method").update(target="view\n"),
                                       "plain identifier"),
    "symbolic dimension with a trailing newline": (
        lambda d: _first_call(d).update(type={"tensor": ["B\n", 4], "dtype": "float32"}), "dimension"),
    "args is a string": (lambda d: _first_call(d).update(args="x"), "args must be a list"),
    "type is a list": (lambda d: _first_call(d).update(type=[1]), "type must be an object"),
    "tuple type of numbers": (lambda d: _first_call(d).update(type={"tuple": 5}), "node #"),
    "module kwargs is a list": (lambda d: d["modules"]["fc"].update(kwargs=[1]), "kwargs must be an object"),
    "attribute is a number": (lambda d: d["attributes"].update(scale=3), "attribute 'scale'"),
    "trust is not a package name": (None, "trusted package"),
    # each check below also has a near miss that a weaker check would let through
    "attribute of an unknown kind": (lambda d: d["attributes"]["scale"].update(kind="weight"),
                                     "needs kind 'parameter' or 'buffer'"),
    "attribute value of another shape": (
        lambda d: d["attributes"]["scale"].update(value=tensor_to_json(torch.ones(2))), "does not match its shape"),
    "attribute value of another dtype": (
        lambda d: d["attributes"]["scale"].update(value=tensor_to_json(torch.ones(1, dtype=torch.float64))),
        "does not match its shape"),
    "constant data with characters outside base64": (
        lambda d: next(iter(d["constants"].values())).update(
            data=next(iter(d["constants"].values()))["data"][:4] + "!!" + next(iter(d["constants"].values()))["data"][4:]),
        "bad base64"),
    "module at the empty path": (lambda d: d["modules"].update({"": d["modules"]["fc"]}), "must not be empty"),
    "module type that is not a class name": (lambda d: d["module_types"].update(fc="not a class"), "module type of 'fc'"),
    "node reference in module arguments": (lambda d: d["modules"]["fc"]["kwargs"].update(bias={"$node": "x"}),
                                           "reference to unknown or later node 'x'"),
    "device that is not a string": (lambda d: _first_call(d)["args"].append({"$device": 5}), "bad device 5"),
    "size that is not a list": (lambda d: _first_call(d)["args"].append({"$size": 5}), "$size needs a list"),
    "size of 65 dimensions": (lambda d: _first_call(d)["args"].append({"$size": [1] * 65}), "$size needs a list"),
    "dimension of 2**63": (lambda d: _first_call(d)["args"].append({"$size": [2**63]}), "$size needs a list"),
    "layout tag naming a memory format": (lambda d: _first_call(d)["args"].append({"$layout": "channels_last"}),
                                          "unknown value encoding"),
    "memory format tag naming a layout": (lambda d: _first_call(d)["args"].append({"$memory_format": "strided"}),
                                          "unknown value encoding"),
    "function tag naming a memory format": (lambda d: _first_call(d)["args"].append({"$function": "channels_last"}),
                                            "'channels_last'"),
    "function tag naming a layout": (lambda d: _first_call(d)["args"].append({"$function": "strided"}), "'strided'"),
    "origin pair of one part": (lambda d: _first_call(d).update(origin=[["trial"]]), "origin must be a list"),
    "origin pair of three parts": (lambda d: _first_call(d).update(origin=[["trial", "node", "x"]]),
                                   "origin must be a list"),
    "origin pair with a number": (lambda d: _first_call(d).update(origin=[["trial", 1]]), "origin must be a list"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_fields_end_in_one_schema_error_naming_them(base, case):
    mutate, message = MALFORMED[case]
    data = json.loads(json.dumps(base))
    trust = ["os; rm"] if mutate is None else ()
    if mutate is not None:
        mutate(data)
    with pytest.raises(SchemaError) as info:
        ir.Graph.from_json(json.dumps(data), trust=trust)
    assert message in str(info.value)


def test_deep_nesting_is_refused_before_any_recursive_reader(base):
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(SchemaError, match="nested"):
        ir.Graph.from_json(text)
    data = json.loads(json.dumps(base))
    deep = 1
    for _ in range(limits.MAX_JSON_DEPTH + 5):
        deep = [deep]
    _first_call(data)["args"].append(deep)
    with pytest.raises(SchemaError, match=f"more than {limits.MAX_JSON_DEPTH} levels"):
        ir.Graph.from_json(json.dumps(data))


def test_nesting_exactly_at_the_limit_is_accepted():
    """Depth counts the outermost list or object as 1; the limit itself is allowed."""
    def nested(depth):
        value = 0
        for i in range(depth):
            value = [value] if i % 2 else {"k": value}
        return value

    for limit in (1, 2, 5, limits.MAX_JSON_DEPTH):
        check_depth(nested(limit), limit)
        with pytest.raises(SchemaError, match=f"graph JSON is nested more than {limit} levels deep"):
            check_depth(nested(limit + 1), limit)


def test_integer_over_the_digit_limit_is_a_schema_error(base):
    text = json.dumps(base).replace('"version": 1', '"version": ' + "9" * 5000)
    with pytest.raises(SchemaError, match="not valid JSON"):
        ir.Graph.from_json(text)


def test_non_text_input_is_a_schema_error():
    with pytest.raises(SchemaError, match="must be text"):
        ir.Graph.from_json({"schema": "retiarii-ir/graph"})


def test_huge_buffer_is_refused_before_allocation(base):
    data = json.loads(json.dumps(base))
    data["attributes"]["scale"].update(shape=[2**62, 4])
    data["attributes"]["scale"].pop("value", None)
    graph = ir.Graph.from_json(json.dumps(data))
    with pytest.raises(IRError, match="over the limit"):
        ir.build_module(graph)
    with pytest.raises(IRError):
        graph.validate()


def test_huge_module_is_refused_and_the_limit_is_configurable(base, monkeypatch):
    data = json.loads(json.dumps(base))
    data["modules"]["fc"]["kwargs"] = {"in_features": 4, "out_features": 2**40}
    graph = ir.Graph.from_json(json.dumps(data))
    with pytest.raises(IRError, match=r"would allocate .* MiB of weights, over the limit"):
        ir.build_module(graph)
    small = ir.Graph.from_json(json.dumps(base))
    monkeypatch.setattr(limits, "MAX_BUILD_BYTES", 64)
    with pytest.raises(IRError, match="over the limit of 0.0 MiB"):
        ir.build_module(small)
    assert ir.build_module(small, max_bytes=10**6) is not None


def test_constructor_arguments_the_class_refuses_are_a_project_error(base):
    data = json.loads(json.dumps(base))
    data["modules"]["fc"]["kwargs"] = {"in_features": -3, "out_features": "two"}
    graph = ir.Graph.from_json(json.dumps(data))
    with pytest.raises(IRError, match=r"module 'fc' \(torch.nn.Linear\) cannot be built"):
        ir.build_module(graph)


# ---------------------------------------------------------------------- fuzzing
HOSTILE_STRINGS = [
    "torch.os.system", "builtins.getattr", "operator.call", "__class__", "__globals__", "x\n",
    "torch.ops.aten.add.Tensor", "torch._dynamo.reset", "fc.forward", "forward", "$node", "B", "2*B",
    "torch.nn.Linear", "torch.ao.quantization.FakeQuantize", "torch.nn.modules.module.torch.jit.ScriptModule",
    "float64", "nan", "x", "conv", "__import__('os').system('touch PWNED')",
]
SPECIAL_KEYS = ["$node", "$tuple", "$dict", "$slice", "$float", "$size", "$dtype", "$device",
                "$memory_format", "$layout", "$function", "$module", "$ellipsis", "tensor", "tuple", "scalar"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
    st.sampled_from(HOSTILE_STRINGS), st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(SPECIAL_KEYS) | st.text(max_size=5), inner, max_size=2)),
    max_leaves=6)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def _apply(data, path, action, replacement):
    if not path:
        return replacement if action == "replace" else data
    *head, last = path
    parent = data
    for key in head:
        parent = parent[key]
    if action == "delete":
        del parent[last]
    elif action == "nest":
        parent[last] = [[[[parent[last]]]]] * 2
    else:
        parent[last] = replacement
    return data


@st.composite
def mutated_graphs(draw, base):
    data = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if "data" not in p]
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "nest"]))
        data = _apply(data, path, action, draw(json_values))
    return data


def _exercise(text):
    """Load, check, build, run and generate; only project errors may stop the way."""
    try:
        graph = ir.Graph.from_json(text)
    except IRError:
        return
    for step in (lambda: graph.validate(),
                 lambda: ir.build_module(graph, max_bytes=2**26)(*example_inputs(graph, 2)),
                 lambda: ast.parse(codegen.to_source(graph)),
                 lambda: codegen.load(graph, formatted=False)()):
        try:
            step()
        except IRError:
            pass


@settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_graph_json_ends_in_a_project_error_or_a_graph_that_runs(base, tmp_path, monkeypatch, data):
    """Through every consumer, the generated class's constructor included: only project errors."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(limits, "MAX_BUILD_BYTES", 2**26)  # generated code takes the process-wide limit
    mutated = data.draw(mutated_graphs(base))
    modules_before = set(sys.modules)
    try:
        graph_or_error = ir.Graph.from_json(json.dumps(mutated))
    except IRError:
        graph_or_error = None
    assert set(sys.modules) == modules_before, "from_json imported a module"
    if graph_or_error is not None:
        _exercise(json.dumps(mutated))
    assert not (tmp_path / "PWNED").exists()
