"""The trust boundary: a graph from JSON runs, builds and generates nothing the allow-list did
not approve, and every malformed input ends in one project error.

Each route is attacked twice: through JSON (the untrusted door) and on a Graph object edited
in Python, which skips the JSON checks, so that ``validate``, ``build_module`` and
``to_source`` are shown to check again on their own. A canary file or environment variable
would appear if anything hostile ever ran.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from retiarii_ir import codegen
import retiarii_ir as ir
from retiarii_ir.errors import IRError, SchemaError, UnsafeTargetError
from retiarii_ir.module_spec import FunctionRef, ModuleSpec
from retiarii_ir.shape_inference import example_inputs
from tests.corpus.resnet import SEBasicBlock  # a trusted package's names must be imported, as a user's are
from tests.helpers import max_abs_diff

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x)) * x.shape[0]


@pytest.fixture(scope="module")
def graph():
    return ir.trace(Tiny().eval(), torch.randn(2, 4))


def _every_stage(graph):
    """Run each consumer of a graph; return what each one did (refused or completed)."""
    outcomes = {}
    stages = {
        "validate": lambda: graph.validate(),
        "build and run": lambda: ir.build_module(graph)(*example_inputs(graph, 2)),
        "to_source": lambda: codegen.to_source(graph),
    }
    for stage, run in stages.items():
        try:
            run()
            outcomes[stage] = "completed"
        except IRError:
            outcomes[stage] = "refused"
    return outcomes


def _with_node(graph, target, args, name="evil"):
    """A copy of ``graph`` with one extra call_function node after the input."""
    g = graph.copy()
    g.add_node("call_function", target, args, {}, name=name, after=g.inputs[0])
    return g


def _json_with_node(graph, target, args):
    data = json.loads(graph.to_json())
    data["nodes"].insert(1, {"name": "evil", "op": "call_function", "target": target, "args": args,
                             "kwargs": {}, "type": {"scalar": "unknown"}, "scope": ""})
    return json.dumps(data)


# ---------------------------------------------------------------------- re-exported modules
def _reexport_attacks(canary):
    return {
        "torch.os.system": ["touch " + str(canary)],
        "torch.builtins.exec": [f"open({str(canary)!r}, 'w').close()"],
        "torch.builtins.eval": [f"open({str(canary)!r}, 'w').close()"],
        "torch.builtins.open": [str(canary), "w"],
        "torch.builtins.setattr": [],
        "torch.importlib.import_module": ["this"],
        "torch._utils.pickle.loads": [],
        "torch.sys.exit": [3],
        "torch._C._set_grad_enabled": [False],
        "torch.nn.modules.module.torch.jit.ScriptModule": [],
        "torch.nn.modules.module.register_module_forward_hook": [],
        "torch.nn.functional.warnings.warn": ["canary"],
    }


@pytest.mark.parametrize("target", sorted(_reexport_attacks("canary")))
def test_reexported_modules_and_global_setters_are_refused_at_load(graph, tmp_path, target):
    args = _reexport_attacks(tmp_path / "PWNED")[target]
    with pytest.raises(UnsafeTargetError, match=r"node #1: function"):
        ir.Graph.from_json(_json_with_node(graph, target, args))
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("target", sorted(_reexport_attacks("canary")))
def test_reexported_modules_never_run_from_a_graph_object(graph, tmp_path, target):
    canary = tmp_path / "PWNED"
    hostile = _with_node(graph, target, tuple(_reexport_attacks(canary)[target]))
    grad_was_enabled = torch.is_grad_enabled()
    outcomes = _every_stage(hostile)
    assert outcomes == {"validate": "refused", "build and run": "refused", "to_source": "refused"}
    assert not canary.exists()
    assert torch.is_grad_enabled() == grad_was_enabled
    assert "this" not in sys.modules


# ---------------------------------------------------------------------- getattr chains
def _getattr_chain(graph, canary):
    """tensor.__class__.backward.__globals__['__builtins__']['__import__']('os').system(...),
    spelled with the allowed getattr and operator functions."""
    g = graph.copy()
    x = g.inputs[0]
    step = g.add_node("call_function", "builtins.getattr", (x, "__class__"), name="cls", after=x)
    step = g.add_node("call_function", "builtins.getattr", (step, "backward"), name="fn", after=step)
    step = g.add_node("call_function", "builtins.getattr", (step, "__globals__"), name="glb", after=step)
    step = g.add_node("call_function", "operator.getitem", (step, "__builtins__"), name="bi", after=step)
    step = g.add_node("call_function", "operator.getitem", (step, "__import__"), name="imp", after=step)
    step = g.add_node("call_function", "operator.call", (step, "os"), name="os_", after=step)
    step = g.add_node("call_function", "builtins.getattr", (step, "system"), name="system", after=step)
    g.add_node("call_function", "operator.call", (step, "touch " + str(canary)), name="run", after=step)
    return g


def test_getattr_chain_to_import_is_refused_everywhere(graph, tmp_path):
    canary = tmp_path / "PWNED"
    hostile = _getattr_chain(graph, canary)
    assert _every_stage(hostile) == {"validate": "refused", "build and run": "refused", "to_source": "refused"}
    with pytest.raises(UnsafeTargetError, match="__class__"):
        ir.Graph.from_json(_json_of(hostile))
    assert not canary.exists()


def _json_of(graph):
    """JSON of a graph object without the loader's checks (graph_to_json checks nothing)."""
    return ir.graph_to_json(graph)


@pytest.mark.parametrize("attribute", ["__class__", "_base", "grad_fn", "untyped_storage", "shape\n", "a.b"])
def test_getattr_takes_only_public_attribute_names_at_load(graph, attribute):
    text = _json_with_node(graph, "builtins.getattr", [{"$node": "x"}, attribute])
    with pytest.raises(UnsafeTargetError, match="getattr"):
        ir.Graph.from_json(text)


def test_getattr_name_from_another_node_is_refused(graph):
    text = _json_with_node(graph, "builtins.getattr", [{"$node": "x"}, {"$node": "x"}])
    with pytest.raises(UnsafeTargetError, match="not a public attribute name"):
        ir.Graph.from_json(text)


@pytest.mark.parametrize("target", ["operator.attrgetter", "operator.methodcaller", "operator.call",
                                    "builtins.__import__", "builtins.vars", "builtins.globals"])
def test_operator_and_builtins_that_reach_attributes_or_call_values_are_refused(graph, target):
    with pytest.raises(UnsafeTargetError):
        ir.Graph.from_json(_json_with_node(graph, target, [{"$node": "x"}, "y"]))


def test_attribute_reads_never_yield_something_callable(graph):
    """A bound method is a value a later node could call: reading one is refused."""
    g = graph.copy()
    x = g.inputs[0]
    fn = g.add_node("call_function", "builtins.getattr", (x, "add"), name="bound", after=x)
    g.add_node("call_method", "add", (fn, 1), name="called", after=fn)
    with pytest.raises(IRError, match="graph values must be data"):
        ir.build_module(g)(torch.randn(2, 4))


def test_get_attr_reads_only_tensors(graph):
    g = graph.copy()
    node = g.add_node("get_attr", "fc.forward", name="method", after=g.inputs[0])
    g.add_node("call_method", "add", (node, 1), name="use", after=node)
    with pytest.raises(IRError, match="not a parameter or buffer"):
        ir.build_module(g)(torch.randn(2, 4))


# ---------------------------------------------------------------------- constructor arguments
def _fake_quantize_spec():
    """A module whose constructor calls one of its arguments: FakeQuantize(observer=f, **kw)."""
    return ModuleSpec("torch.ao.quantization.FakeQuantize",
                      {"observer": FunctionRef("torch.os.environ.update"), "RETIARII_CANARY": "ran"})


def test_constructor_arguments_are_never_called_by_codegen_or_build(graph, monkeypatch):
    monkeypatch.delenv("RETIARII_CANARY", raising=False)
    hostile = graph.copy()
    hostile.modules["fc"] = _fake_quantize_spec()
    with pytest.raises(IRError):
        codegen.to_source(hostile)
    with pytest.raises(IRError):
        ir.build_module(hostile)
    assert "RETIARII_CANARY" not in os.environ


def test_constructor_function_arguments_are_checked_at_load(graph, monkeypatch):
    monkeypatch.delenv("RETIARII_CANARY", raising=False)
    data = json.loads(graph.to_json())
    data["modules"]["fc"] = {"$module": "torch.nn.Linear", "kwargs": {
        "in_features": 4, "out_features": 3, "bias": {"$function": "torch.os.environ.update"}}}
    with pytest.raises(UnsafeTargetError, match="module 'fc'.*re-export"):
        ir.Graph.from_json(json.dumps(data))
    data["modules"]["fc"] = {"$module": "torch.ao.quantization.FakeQuantize", "kwargs": {}}
    with pytest.raises(UnsafeTargetError, match="torch.ao.quantization"):
        ir.Graph.from_json(json.dumps(data))


# ---------------------------------------------------------------------- no imports
def test_resolving_a_name_imports_nothing():
    """In a fresh interpreter, refused names under lazily imported torch packages stay unloaded."""
    script = textwrap.dedent("""
        import json, sys, torch
        import retiarii_ir as ir
        from retiarii_ir.errors import IRError
        g = ir.trace(torch.nn.Linear(2, 2), torch.randn(2, 2))
        base = json.loads(g.to_json())
        before = set(sys.modules)
        for target in ["torch._dynamo.reset", "torch._inductor.config.load_config", "torch.onnx.export",
                       "torch.export.load", "torch.hub.load", "torch.distributed.init_process_group",
                       "torch._functorch.config.load_config", "torch.float8", "numpy.load"]:
            data = json.loads(json.dumps(base))
            data["nodes"].insert(1, {"name": "e", "op": "call_function", "target": target, "args": [],
                                     "kwargs": {}, "type": {"scalar": "unknown"}, "scope": ""})
            try:
                ir.Graph.from_json(json.dumps(data))
            except IRError:
                pass
            else:
                raise SystemExit("accepted " + target)
            for dtype in [target.rsplit(".", 1)[-1], "_dynamo"]:
                data = json.loads(json.dumps(base))
                data["nodes"][1]["type"] = {"tensor": [2], "dtype": dtype}
                try:
                    ir.Graph.from_json(json.dumps(data))
                except IRError:
                    pass
        print(sorted(set(sys.modules) - before))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------- what stays allowed
def test_aten_operators_resolve_as_torch_export_emits_them():
    from retiarii_ir.targets import resolve_function

    assert resolve_function("torch.ops.aten.add.Tensor") is torch.ops.aten.add.Tensor
    assert resolve_function("torch.ops.aten.__and__.Tensor") is torch.ops.aten.__and__.Tensor
    for refused in ["torch.ops.aten.from_file.default", "torch.ops.aten.no_such_op.default",
                    "torch.ops.aten.add.NoSuchOverload", "torch.ops.prims.add.default"]:
        with pytest.raises(UnsafeTargetError):
            resolve_function(refused)


def test_trusted_package_classes_load_only_with_trust():
    from tests.corpus import CORPUS  # noqa: F401 - the package a trusted class lives in

    from retiarii_ir.targets import resolve_function, resolve_module_class

    class_path = "tests.corpus.resnet.SEBasicBlock"
    with pytest.raises(UnsafeTargetError, match=r"trust=\['tests'\]"):
        resolve_module_class(class_path)
    assert resolve_module_class(class_path, trust=["tests"]).__name__ == "SEBasicBlock"
    with pytest.raises(UnsafeTargetError, match="not allowed"):  # stdlib reached through it
        resolve_function("tests.corpus.resnet.torch.os.system", trust=["tests"])
    with pytest.raises(UnsafeTargetError, match="posix.getcwd, which is not one of torch's"):
        resolve_function("tests.corpus.resnet.torch.os.getcwd", trust=["tests"])


def _trusted_values(graph):
    """Each place a value can hold a function or module class, filled from the trusted package."""
    function = FunctionRef(f"{max_abs_diff.__module__}.{max_abs_diff.__name__}")
    block = ModuleSpec(f"{SEBasicBlock.__module__}.{SEBasicBlock.__name__}", {})
    linear = lambda **extra: ModuleSpec("torch.nn.Linear", {"in_features": 4, "out_features": 3, **extra})  # noqa: E731

    def module(spec):
        return lambda g: g.modules.__setitem__("fc", spec)

    def node(args=(), kwargs=None, target="builtins.len"):
        return lambda g: g.add_node("call_function", target, args, kwargs or {}, name="extra", after=g.inputs[0])

    return {
        "module argument": module(linear(init=function)),
        "inside a list": module(linear(init=[1, function])),
        "inside a tuple": module(linear(init=(function,))),
        "inside a dict": module(linear(init={"f": function})),
        "inside a slice": module(linear(init=slice(None, function))),
        "module class as an argument": module(linear(block=block)),
        "module argument of a module argument": module(linear(block=ModuleSpec("torch.nn.Sequential", {"f": function}))),
        "the graph's module": module(block),
        "node argument": node(([function],)),
        "node keyword argument": node(([1],), {"default": function}, "builtins.max"),
        "called function": node((1, 1), target=function.path),
    }


@pytest.mark.parametrize("place", sorted(_trusted_values(ir.Graph("g"))))
def test_trust_reaches_every_value_that_names_a_function_or_class(graph, place):
    """Wherever a value holds a name from a trusted package, ``trust`` lets it load (as one name,
    a list, or a dotted subpackage) and its absence refuses it."""
    edited = graph.copy()
    _trusted_values(graph)[place](edited)
    text = edited.to_json()
    with pytest.raises(UnsafeTargetError, match=r"trust=\['tests'\]"):
        ir.Graph.from_json(text)
    for trust in (["tests"], "tests", ["tests.helpers", "tests.corpus"]):
        loaded = ir.Graph.from_json(text, trust=trust)
        assert loaded.modules["fc"] == edited.modules["fc"]
        assert [(n.name, n.target) for n in loaded.nodes] == [(n.name, n.target) for n in edited.nodes]


# ---------------------------------------------------------------------- reaching and calling callables
def _rce_chain(tmp_path):
    """A module object from an allowed-looking function, walked to os.system, called by max(key=)."""
    command = f"touch {tmp_path / 'PWNED'}"
    return [
        ("m", "torch.get_device_module", ["cpu"], {}),
        ("t", "builtins.getattr", [{"$node": "m"}, "torch"], {}),
        ("o", "builtins.getattr", [{"$node": "t"}, "os"], {}),
        ("s", "builtins.getattr", [{"$node": "o"}, "system"], {}),
        ("r", "builtins.max", [[command]], {"key": {"$node": "s"}}),
    ]


def _json_with_nodes(graph, nodes):
    data = json.loads(graph.to_json())
    for offset, (name, target, args, kwargs) in enumerate(nodes):
        data["nodes"].insert(1 + offset, {"name": name, "op": "call_function", "target": target, "args": args,
                                          "kwargs": kwargs, "type": {"scalar": "unknown"}, "scope": ""})
    return json.dumps(data)


def test_module_objects_and_key_functions_cannot_be_reached_or_called(graph, tmp_path):
    with pytest.raises(UnsafeTargetError, match="get_device_module"):
        ir.Graph.from_json(_json_with_nodes(graph, _rce_chain(tmp_path)))
    hostile = graph.copy()
    x = hostile.inputs[0]
    shape = hostile.add_node("call_function", "builtins.getattr", (x, "shape"), name="shape", after=x)
    hostile.add_node("call_function", "builtins.max", ([1, 2],), {"key": shape}, name="r", after=shape)
    assert _every_stage(hostile) == {"validate": "refused", "build and run": "refused", "to_source": "refused"}
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("target", [
    "torch.get_device_module", "torch.fork", "torch.wait", "torch._C.fork", "torch.cond", "torch.vmap",
    "torch.compile", "torch.utils.checkpoint.CheckpointFunction.apply", "torch.autograd.forward_ad.enter_dual_level",
    "torch._higher_order_ops.wrap_with_set_grad_enabled", "torch.autograd.profiler.load_nvprof",
    "torch._higher_order_ops.strict_mode", "torch.autograd.profiler.KinetoStepTracker.increment_step",
    "torch.ops.aten._print.default", "torch.ops.higher_order.cond", "torch.amp.grad_scaler.OptState.value",
    "torch.autograd.functional.jacobian", "torch.set_flush_denormal", "math.factorial",
])
def test_functions_that_call_values_or_change_global_state_are_refused(graph, target):
    with pytest.raises(UnsafeTargetError):
        ir.Graph.from_json(_json_with_node(graph, target, []))
    hostile = _with_node(graph, target, ())
    assert _every_stage(hostile) == {"validate": "refused", "build and run": "refused", "to_source": "refused"}


def test_sort_with_a_key_is_refused(graph):
    data = json.loads(graph.to_json())
    data["nodes"].insert(1, {"name": "s", "op": "call_method", "target": "sort", "args": [{"$node": "x"}],
                             "kwargs": {"key": {"$node": "x"}}, "type": {"scalar": "unknown"}, "scope": ""})
    with pytest.raises(UnsafeTargetError, match="key="):
        ir.Graph.from_json(json.dumps(data))


@pytest.mark.parametrize("nodes, message", [
    ([("big", "torch.ones", [4_000_000_000], {"dtype": {"$dtype": "uint8"}})], "would allocate"),
    ([("rep", "operator.mul", ["a", 4_000_000_000], {})], "over the limit"),
    ([("rep", "operator.mul", ["A" * 256, 2**20], {})], "over the limit"),
    ([("pw", "operator.pow", [7, 400_000_000], {})], "unbounded"),
])
def test_constant_sizes_that_would_exhaust_memory_or_time_are_refused(graph, nodes, message):
    with pytest.raises(UnsafeTargetError, match=message):
        ir.Graph.from_json(_json_with_nodes(graph, nodes))


def test_names_that_clash_with_the_built_module_are_refused(graph):
    for section, name, value in [
        ("attributes", "_interpreter", {"kind": "buffer", "shape": [1], "dtype": "float32"}),
        ("modules", "_interpreter", {"$module": "torch.nn.ReLU", "kwargs": {}}),
        ("modules", "_parameters", {"$module": "torch.nn.ReLU", "kwargs": {}}),
        ("constants", "forward", {"dtype": "float32", "shape": [1], "data": "AAAAAA=="}),
        ("constants", "cuda", {"dtype": "float32", "shape": [1], "data": "AAAAAA=="}),
    ]:
        data = json.loads(graph.to_json())
        data[section][name] = value
        with pytest.raises(SchemaError, match="nn.Module attribute"):
            ir.Graph.from_json(json.dumps(data))


def test_an_alias_may_not_contain_its_original(graph):
    data = json.loads(graph.to_json())
    data["aliases"] = {"fc.loop": "fc"}
    with pytest.raises(SchemaError, match="contain one another"):
        ir.Graph.from_json(json.dumps(data))


def test_huge_layer_counts_are_refused_before_building(graph):
    data = json.loads(graph.to_json())
    layer = {"$module": "torch.nn.TransformerEncoderLayer", "kwargs": {"d_model": 4, "nhead": 1}}
    data["modules"]["fc"] = {"$module": "torch.nn.TransformerEncoder",
                             "kwargs": {"encoder_layer": layer, "num_layers": 100_000}}
    with pytest.raises(SchemaError, match="num_layers"):
        ir.Graph.from_json(json.dumps(data))


def test_sizes_computed_at_run_time_are_charged_before_allocating(graph):
    """A factory whose size a node computes, and many factories each under the limit."""
    data = json.loads(graph.to_json())
    nodes = [("n", "operator.mul", [32768, 32768], {}), ("big", "torch.ones", [{"$node": "n"}], {})]
    hostile = ir.Graph.from_json(_json_with_nodes(graph, nodes))
    with pytest.raises(IRError, match="over what is left of the limit"):
        ir.build_module(hostile)(torch.randn(2, 4))
    many = [(f"t{i}", "torch.ones", [2**27], {"dtype": {"$dtype": "uint8"}}) for i in range(8)]
    hostile = ir.Graph.from_json(_json_with_nodes(graph, many))
    with pytest.raises(IRError, match="over what is left of the limit"):
        ir.build_module(hostile)(torch.randn(2, 4))
    del data


@pytest.mark.parametrize("target", [
    "torch.sparse_coo_tensor", "torch.sparse_csr_tensor", "torch.as_strided", "torch.ops.aten.as_strided.default",
    "torch.ops.aten._sparse_coo_tensor_unsafe.default", "torch.ops.aten.backward.default",
    "torch.ops.aten.retain_grad.default", "torch.ops.aten.pin_memory.default",
    "torch.ops.aten._cufft_set_plan_cache_max_size.default", "torch.frombuffer",
])
def test_unchecked_memory_access_and_autograd_internals_are_refused(graph, target):
    with pytest.raises(UnsafeTargetError):
        ir.Graph.from_json(_json_with_node(graph, target, []))


@pytest.mark.parametrize("target", ["fc", "fc._parameters", "fc.forward", "fc.to", "_ir_constants.x"])
def test_get_attr_reads_only_parameters_and_buffers_everywhere(graph, target):
    data = json.loads(graph.to_json())
    data["nodes"].insert(1, {"name": "a", "op": "get_attr", "target": target, "args": [], "kwargs": {},
                             "type": {"scalar": "unknown"}, "scope": ""})
    with pytest.raises(UnsafeTargetError):
        ir.Graph.from_json(json.dumps(data))
    hostile = graph.copy()
    node = hostile.add_node("get_attr", target, name="a", after=hostile.inputs[0])
    hostile.add_node("call_method", "to", (node, "meta"), name="moved", after=node)
    assert _every_stage(hostile) == {"validate": "refused", "build and run": "refused", "to_source": "refused"}


def test_devices_that_would_import_a_backend_and_lazy_layers_are_refused(graph):
    for device in ("hpu", "privateuseone:0"):
        with pytest.raises(SchemaError, match="bad device"):
            ir.Graph.from_json(_json_with_node(graph, "torch.zeros", [2, {"$device": device}]))
    data = json.loads(graph.to_json())
    data["modules"]["fc"] = {"$module": "torch.nn.LazyLinear", "kwargs": {"out_features": 3}}
    with pytest.raises(UnsafeTargetError, match="lazy"):
        ir.Graph.from_json(json.dumps(data))
    data["modules"]["fc"] = {"$module": "torch.nn.Transformer", "kwargs": {"num_encoder_layers": 200_000}}
    with pytest.raises(SchemaError, match="num_encoder_layers"):
        ir.Graph.from_json(json.dumps(data))
