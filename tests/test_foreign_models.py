"""Models written the way public model zoos write them, each reduced to what once broke tracing:
helpers from the model's own package, module names that are not identifiers, operators only
torch.export emits, decoder caches in the output, and models that fix their batch size."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings

import pytest
import torch
from torch import nn

from retiarii_ir import codegen
import retiarii_ir as ir
from retiarii_ir import SchemaError, TraceError, UnsafeTargetError
from retiarii_ir.allowlist import PRIVATE_ATEN_REFUSED
from retiarii_ir.targets import resolve_function

PACKAGES = os.path.join(os.path.dirname(__file__), "packages")
if PACKAGES not in sys.path:
    sys.path.insert(0, PACKAGES)

import userpkg.ops  # noqa: E402
from userpkg.models import ResidualBlock  # noqa: E402


def _import_lines(source: str) -> list[str]:
    return [line for line in source.splitlines() if line.startswith(("import ", "from "))]


def _generated(graph, model):
    net = codegen.load(graph)()
    net.load_state_dict(model.state_dict(), strict=True)
    return net


# ---------------------------------------------------------------- 1. the model's own package
def test_a_function_that_shadows_its_submodule_resolves_through_its_module_and_qualname():
    assert not isinstance(userpkg.ops.stochastic_depth, type(userpkg))  # the package attribute is the function
    found = resolve_function("userpkg.ops.stochastic_depth.stochastic_depth", trust=["userpkg"])
    assert found is userpkg.ops.stochastic_depth


def test_tracing_trusts_the_models_own_package_and_codegen_imports_its_functions():
    model = ResidualBlock().eval()
    x = torch.randn(2, 4, 5, 5)
    graph = ir.trace(model, (x,))
    targets = {n.target for n in graph.nodes if n.op == "call_function"}
    assert {"userpkg.ops.stochastic_depth.stochastic_depth", "userpkg.models._relative_bias"} <= targets
    assert graph.trust == ("userpkg",)
    source = codegen.to_source(graph)
    assert _import_lines(source) == ["import torch", "from userpkg.ops.stochastic_depth import stochastic_depth",
                                     "from userpkg.models import _relative_bias"]
    net = _generated(graph, model).eval()
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=1e-6)


def test_the_models_own_function_follows_train_mode_with_the_same_draws():
    model = ResidualBlock(p=0.5).train()
    x = torch.randn(8, 4, 5, 5)
    graph = ir.trace(model, (x,))
    net = _generated(graph, model).train()
    torch.manual_seed(3)
    expected = model(x)
    torch.manual_seed(3)
    torch.testing.assert_close(net(x), expected, rtol=0, atol=1e-6)
    assert not torch.equal(expected, model.eval()(x))  # some branches really were dropped


def test_json_of_such_a_graph_loads_only_with_the_trust_the_refusal_names():
    model = ResidualBlock().eval()
    x = torch.randn(2, 4, 5, 5)
    text = ir.trace(model, (x,)).to_json()
    assert "trust" not in json.loads(text)  # a graph cannot grant itself trust
    with pytest.raises(UnsafeTargetError, match=r"pass trust=\['userpkg'\]"):
        ir.Graph.from_json(text)
    loaded = ir.Graph.from_json(text, trust=["userpkg"])
    assert loaded.trust == ("userpkg",)
    rebuilt = ir.build_module(loaded)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt.eval()(x), model(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(_generated(loaded, model).eval()(x), model(x), rtol=0, atol=1e-6)


def test_a_graph_that_uses_torch_alone_imports_torch_alone():
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU())
    graph = ir.trace(model, (torch.randn(2, 3),))
    assert graph.trust == ()
    assert _import_lines(codegen.to_source(graph)) == ["import torch"]


# ---------------------------------------------------------------- 2. names that are not identifiers
class Scales(nn.Module):
    """Holds one parameter under a name with a dash."""

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("scale-0", nn.Parameter(torch.randn(4, 1, 1)))


class DashedNames(nn.Module):
    """Children registered under names with dashes, as some network families do."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential()
        self.body.add_module("block1-0", nn.Conv2d(3, 4, 3, padding=1))
        self.body.add_module("block1-1", nn.BatchNorm2d(4))
        self.head = Scales()

    def forward(self, x):
        return self.body(x) * getattr(self.head, "scale-0")


def test_module_names_that_are_not_identifiers_survive_codegen_and_json():
    model = DashedNames().eval()
    x = torch.randn(2, 3, 6, 6)
    graph = ir.Graph.from_json(ir.trace(model, (x,)).to_json())
    assert "body.block1-0" in graph.modules
    source = codegen.to_source(graph)
    assert 'add_module("block1-0"' in source and 'getattr(self, "block1-0")(x)' in source  # body's own forward
    net = _generated(graph, model).eval()
    assert list(net.state_dict()) == list(model.state_dict())
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("segment", ['x"); import os; ("', "a b", "a\nb", "-x", ""])
def test_a_module_name_that_could_carry_code_is_still_refused(segment):
    data = json.loads(ir.trace(DashedNames().eval(), (torch.randn(2, 3, 6, 6),)).to_json())
    text = json.dumps(data).replace("block1-0", segment)
    with pytest.raises(SchemaError):
        ir.Graph.from_json(text)


# ---------------------------------------------------------------- 3. what torch.export emits
class ChannelLoop(nn.Module):
    """Iterates over a dimension (symbolic tracing cannot) and masks with ``&``."""

    def forward(self, x):
        y = torch.stack([x[:, i] * (i + 1) for i in range(x.shape[1])], 1)
        return ((y > 0) & (y < 1)).float() * y


def test_the_export_fallbacks_operator_forms_resolve_generate_and_round_trip():
    model = ChannelLoop().eval()
    x = torch.rand(2, 3, 4) - 0.25
    with pytest.warns(UserWarning, match="torch.export"):
        graph = ir.trace(model, (x,))
    assert "torch.ops.aten.__and__.Tensor" in {n.target for n in graph.nodes}
    graph = ir.Graph.from_json(graph.to_json())
    torch.testing.assert_close(_generated(graph, model)(x), model(x), rtol=0, atol=0)


def _refusal_reasons() -> tuple[str, ...]:
    return ("trusts indices or strides", "changes global state", "has no operator",
            *{reason for reason in PRIVATE_ATEN_REFUSED.values()})


def test_every_aten_operator_and_overload_resolves_or_is_refused_for_a_stated_reason():
    names = sorted({n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
                    if n.startswith("aten::")})
    resolved = 0
    for name in names:
        packet = getattr(torch.ops.aten, name)
        for overload in packet.overloads():
            path = f"torch.ops.aten.{name}.{overload}"
            try:
                assert resolve_function(path) is getattr(packet, overload)
                resolved += 1
            except UnsafeTargetError as e:
                assert any(reason in str(e) for reason in _refusal_reasons()), str(e)
    assert resolved > 2000


@pytest.mark.parametrize("path", [
    "torch.ops.aten.__and__.Tensor", "torch.ops.aten.__or__.Tensor", "torch.ops.aten.__xor__.Tensor",
    "torch.ops.aten.__rshift__.Scalar", "torch.ops.aten._native_multi_head_attention.default",
    "torch.ops.aten._fused_rms_norm.default", "torch.ops.aten._safe_softmax.default",
    "torch.ops.aten._unsafe_view.default", "torch.ops.aten._local_scalar_dense.default",
    "torch.ops.aten._assert_scalar.default", "torch.ops.aten._upsample_nearest_exact2d.default",
    "torch.ops.aten._weight_norm_interface.default", "torch.ops.aten._unique2.default",
])
def test_operators_export_emits_for_common_layers_resolve(path):
    assert resolve_function(path) is not None
    assert codegen.literals.function_name(path, "function") == path


# ---------------------------------------------------------------- 4. decoder caches
class KeyValueCache:
    """What a decoder hands back for the next step: not a tensor, not a container of them."""

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys = [keys]


class TinyDecoder(nn.Module):
    def __init__(self, use_cache: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.use_cache = use_cache

    def forward(self, x, use_cache=None):
        h = self.proj(x)
        if self.use_cache if use_cache is None else use_cache:
            return {"logits": h, "past_key_values": KeyValueCache(h)}
        return {"logits": h}


def test_a_cache_in_the_output_gets_an_error_that_says_how_to_disable_it():
    with pytest.raises(TraceError) as info:
        ir.trace(TinyDecoder(), (torch.randn(2, 4),))
    message = str(info.value)
    assert "output['past_key_values'] is a KeyValueCache" in message
    assert "use_cache = False" in message and "'use_cache': False" in message


@pytest.mark.parametrize("how", ["config", "call"])
def test_with_the_cache_disabled_a_decoder_traces(how):
    model = TinyDecoder(use_cache=how != "config").eval()
    x = torch.randn(2, 4)
    kwargs = {"use_cache": False} if how == "call" else {}
    graph = ir.trace(model, (x,), kwargs)
    torch.testing.assert_close(_generated(graph, model)(x, **kwargs)["logits"], model(x, use_cache=False)["logits"])


# ---------------------------------------------------------------- 5. quiet typing
class FixedBatch(nn.Module):
    """Prepends a class token expanded to a batch of two: the model works at that size only."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 4))

    def forward(self, x):
        return torch.cat([self.cls.expand(2, -1, -1), x], 1)


def test_typing_a_model_with_a_fixed_batch_prints_nothing(capfd, caplog):
    model = FixedBatch().eval()
    x = torch.randn(2, 3, 4)
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = ir.trace(model, (x,))
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert graph.output.args[0].type.shape == (2, 4, 4)  # concrete, as the model demands
    torch.testing.assert_close(_generated(graph, model)(x), model(x), rtol=0, atol=0)
