"""A hostile graph never injects code: every name and constant is rejected or ends up inert.

Each case edits a real graph (as JSON, or directly on the Graph object, which skips the
JSON checks) and then either loading or code generation must refuse it, or the emitted
source must parse to nothing but torch calls, with the hostile text inside string literals.
"""

import ast
import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from retiarii_ir import codegen
import retiarii_ir as ir
from retiarii_ir.errors import IRError
from retiarii_ir.module_spec import FunctionRef, ModuleSpec

INJECT = "__import__('os').system('echo pwned')"


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        y = self.conv(x)
        n = y.shape[0]
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        return self.fc(y.mean((2, 3))) * self.scale, n


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    return ir.trace(Small().eval(), torch.randn(2, 3, 4, 4))


def _rename_refs(value, old, new):
    if isinstance(value, dict):
        if value.get("$node") == old:
            return {"$node": new}
        return {k: _rename_refs(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_refs(v, old, new) for v in value]
    return value


def _node(data, name):
    return next(n for n in data["nodes"] if n["name"] == name)


def rename_node(data, old, new):
    data["nodes"] = _rename_refs(data["nodes"], old, new)
    _node(data, old)["name"] = new


def _set(path, value):
    def edit(data):
        *head, last = path
        target = data
        for key in head:
            target = next(n for n in target if n["name"] == key) if isinstance(target, list) else target[key]
        target[last] = value
    return edit


def _rename_module(old, new):
    def edit(data):
        data["modules"][new] = data["modules"].pop(old)
        for n in data["nodes"]:
            if n["op"] == "call_module" and n["target"] == old:
                n["target"] = new
    return edit


JSON_ATTACKS = {
    "node name with quotes": lambda d: rename_node(d, "conv", 'y"); import os; ("'),
    "node name with newline": lambda d: rename_node(d, "mean", "m\nimport os"),
    "node name __import__": lambda d: rename_node(d, "fc", "__import__"),
    "node name is a keyword": lambda d: rename_node(d, "fc", "lambda"),
    "input name injection": _set(["nodes", "x", "target"], "x=__import__('os')"),
    "function __import__": _set(["nodes", "interpolate", "target"], "builtins.__import__"),
    "function os.system": _set(["nodes", "interpolate", "target"], "os.system"),
    "function torch.load": _set(["nodes", "interpolate", "target"], "torch.load"),
    "function eval": _set(["nodes", "interpolate", "target"], "builtins.eval"),
    "method __reduce__": _set(["nodes", "mean", "target"], "__reduce__"),
    "method with call": _set(["nodes", "mean", "target"], "mean(); import os; x.mean"),
    "getattr __class__": _set(["nodes", "getattr_1", "args", 1], "__class__"),
    "getattr chain": _set(["nodes", "getattr_1", "args", 1], "shape.__class__.__init__"),
    "get_attr dunder chain": _set(["nodes", "scale", "target"], "scale.__class__.__init__.__globals__"),
    "get_attr injection": _set(["nodes", "scale", "target"], "scale; import os"),
    "module path dunder": _rename_module("fc", "fc.__class__"),
    "module path injection": _rename_module("fc", "fc(x); import os; self.fc"),
    "module class os.system": _set(["modules", "fc", "$module"], "os.system"),
    "module class injection": _set(["modules", "fc", "$module"], "torch.nn.Linear(1,1)\nimport os\n#"),
    "constructor keyword injection": lambda d: d["modules"]["fc"]["kwargs"].update({"bias=" + INJECT + ", x": 1}),
    "constructor function eval": lambda d: d["modules"]["fc"]["kwargs"].update({"bias": {"$function": "builtins.eval"}}),
    "keyword argument injection": lambda d: _node(d, "interpolate")["kwargs"].update({"mode=" + INJECT + ", x": 1}),
    "class name injection": _set(["module_types", "", ], "X(torch.nn.Module):\n    pass\nimport os\nclass Y"),
    "graph name injection": _set(["name"], "M(torch.nn.Module): pass\nimport os\nclass X"),
    "attribute dtype injection": lambda d: d["attributes"]["scale"].update({"dtype": "float32)\nimport os\n("}),
    "attribute dunder name": lambda d: d["attributes"].update({"scale.__class__": d["attributes"]["scale"]}),
    "alias dunder": lambda d: d.update({"aliases": {"fc.__dict__": "conv"}}),
    "scope injection": _set(["nodes", "fc", "scope"], "fc\nimport os"),
    "device injection": lambda d: _node(d, "interpolate")["kwargs"].update({"size": {"$device": "cpu')\nimport os\n('"}}),
    "string constant with quotes and newlines": _set(["nodes", "interpolate", "kwargs", "mode"],
                                                     'nearest"""\n' + INJECT + '\n"""'),
}


def _assert_inert(source: str) -> None:
    """Only ``import torch``; no dunder names or attributes; no calls outside torch and self."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert [a.name for a in node.names] == ["torch"] and isinstance(node, ast.Import)
        if isinstance(node, ast.Name):
            assert not node.id.startswith("__") and node.id not in {"os", "eval", "exec", "open", "compile"}
        if isinstance(node, ast.Attribute):
            is_super_init = node.attr == "__init__" and isinstance(node.value, ast.Call) and getattr(
                node.value.func, "id", None) == "super"
            assert is_super_init or not node.attr.startswith("__"), node.attr


def _outcome(text: str) -> str:
    try:
        graph = ir.Graph.from_json(text)
    except IRError:
        return "rejected"
    try:
        source = codegen.to_source(graph)
    except IRError:
        return "rejected"
    _assert_inert(source)
    return "inert"


@pytest.mark.parametrize("attack", sorted(JSON_ATTACKS))
def test_hostile_json_is_rejected_or_neutralised(attack, graph):
    data = json.loads(graph.to_json())
    JSON_ATTACKS[attack](data)
    outcome = _outcome(json.dumps(data))
    if attack in ("string constant with quotes and newlines", "node name is a keyword"):
        assert outcome == "inert"
    else:
        assert outcome == "rejected", f"{attack}: accepted"


def test_string_constants_stay_strings(graph):
    """A hostile string argument is emitted as the same string, never as code."""
    hostile = graph.copy()
    node = hostile.node("interpolate")
    node.kwargs = {**node.kwargs, "mode": 'x"""\n' + INJECT + "\n'''"}
    source = codegen.to_source(hostile)
    _assert_inert(source)
    strings = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert node.kwargs["mode"] in strings


def test_keywords_and_builtins_are_renamed(graph):
    renamed = ir.Graph.from_json(graph.to_json())
    for old, new in [("fc", "lambda"), ("mean", "sum"), ("conv", "torch"), ("mul", "self")]:
        renamed.rename(renamed.node(old), new)
    source = codegen.to_source(renamed)
    _assert_inert(source)
    assert "lambda_ = self.fc(" in source and "sum_ = " in source and "torch_ = self.conv(x)" in source
    model = Small().eval()
    generated = codegen.load(renamed)().eval()
    generated.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(generated(x)[0], model(x)[0])


def _edit_graph(graph, attack):
    g = graph.copy()
    if attack == "node name":
        g.node("fc").name = 'fc"); import os; ("'
    elif attack == "function target":
        g.node("interpolate").target = "os.system"
    elif attack == "method target":
        g.node("mean").target = "__reduce_ex__"
    elif attack == "module target":
        node = g.node("fc")
        g.modules["fc.__class__"] = g.modules.pop("fc")
        node.target = "fc.__class__"
    elif attack == "module class":
        g.modules["fc"] = ModuleSpec("builtins.eval", {})
    elif attack == "opaque module":
        g.modules["fc"] = ModuleSpec("torch.nn.Linear", None)
    elif attack == "non-torch function ref":
        g.modules["fc"] = ModuleSpec("torch.nn.Linear", {"in_features": FunctionRef("builtins.eval"), "out_features": 2})
    elif attack == "class name":
        g.module_types[""] = "X:\n    import os\nclass Y"
        g.name = "X:\n    import os\nclass Y"
    elif attack == "constant key":
        g.constants["k'); import os; ('"] = torch.zeros(1)
    elif attack == "attribute path":
        g.attributes["scale; import os"] = g.attributes.pop("scale")
        g.node("scale").target = "scale; import os"
    elif attack == "kwarg key":
        node = g.node("interpolate")
        node.kwargs = {**node.kwargs, "mode=1); import os; (": 1}
    elif attack == "constant that is not a tensor":
        g.constants["_tensor_constant0"] = "__import__('os')"
    elif attack == "attribute that is not a spec":
        g.attributes["scale"] = {"kind": "parameter"}
    elif attack == "unserialisable constant":
        node = g.node("interpolate")
        node.kwargs = {**node.kwargs, "mode": object()}
    return g


@pytest.mark.parametrize("attack", ["node name", "function target", "method target", "module target",
                                    "module class", "opaque module", "non-torch function ref", "class name",
                                    "constant key", "attribute path", "kwarg key", "unserialisable constant",
                                    "constant that is not a tensor", "attribute that is not a spec"])
def test_hostile_graph_objects_are_rejected(attack, graph):
    """Graphs built in Python skip the JSON checks; codegen checks again on its own."""
    with pytest.raises(IRError) as info:
        codegen.to_source(_edit_graph(graph, attack))
    assert "Traceback" not in str(info.value)


def test_opaque_module_error_names_the_module(graph):
    g = graph.copy()
    g.modules["fc"] = ModuleSpec("torch.nn.Linear", None)
    with pytest.raises(codegen.CodegenError, match=r"module 'fc' \(torch.nn.Linear\) is opaque"):
        codegen.to_source(g)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40), name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True))
def test_any_string_stays_a_string_and_any_identifier_is_usable(graph, text, name):
    g = graph.copy()
    node = g.node("interpolate")
    node.kwargs = {**node.kwargs, "mode": text}
    if not name.startswith("__") and name not in g:
        g.rename(g.node("mean"), name)
    source = codegen.to_source(g)
    _assert_inert(source)
    strings = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)]
    assert text in strings
