"""Tracing details: hierarchy, leaves, untouched user models, export fallback, clear errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import retiarii_ir as ir
from tests.corpus import CORPUS
from tests.helpers import max_abs_diff


class LoopOverChannels(nn.Module):
    """Python control flow on a shape: symbolic tracing fails, torch.export copes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        for i in range(y.size(1)):
            y = y + i
        return y


class DataDependent(nn.Module):
    """Branches on tensor values: neither tracer can handle it."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.gate = DataDependent()

    def forward(self, x):
        return self.gate(self.stem(x))


class ScaledLinear(nn.Module):
    """A user module with stored constructor arguments, to be kept as a leaf."""

    def __init__(self, in_features: int, out_features: int, scale: float = 2.0):
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, scale
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.linear(x) * self.scale


def test_hierarchy_is_kept_and_addressable():
    model = CORPUS["resnet_basic"].build().eval()
    graph = ir.trace(model, CORPUS["resnet_basic"].example_args())
    block = graph.nodes_in("layer2.0")
    assert {n.target for n in block if n.op == "call_module"} >= {
        "layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2", "layer2.0.downsample.0"}
    adds = [n for n in block if n.target == "operator.add"]
    assert adds and all(n.scope == "layer2.0" for n in adds)
    assert graph.module_types["layer2"] == "Sequential"
    assert set(model.state_dict()) == {
        k for q in graph.modules for k in model.get_submodule(q).state_dict(prefix=q + ".")} | {
        k for k in graph.attributes}


def test_tracing_leaves_the_user_model_untouched():
    model = CORPUS["resnet_basic"].build().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ir.trace(model, CORPUS["resnet_basic"].example_args())
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed while tracing"


def test_user_leaf_module_stays_one_node_and_rebuilds():
    model = nn.Sequential(nn.Linear(3, 4), ScaledLinear(4, 2, scale=3.0)).eval()
    x = torch.randn(2, 3)
    graph = ir.trace(model, (x,), leaf_modules=[ScaledLinear])
    calls = [n for n in graph.nodes if n.op == "call_module"]
    assert [n.target for n in calls] == ["0", "1"]
    spec = graph.modules["1"]
    assert spec.type.endswith("ScaledLinear") and spec.kwargs == {"in_features": 4, "out_features": 2, "scale": 3.0}
    rebuilt = ir.build_module(graph, trust=["test_ir_trace", "tests"])
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert max_abs_diff(rebuilt(x), model(x)) == 0


def test_leaf_by_qualified_name():
    model = CORPUS["resnet_basic"].build().eval()
    graph = ir.trace(model, CORPUS["resnet_basic"].example_args(), leaf_modules=["layer1"])
    assert [n.target for n in graph.nodes if n.op == "call_module" and n.target.startswith("layer1")] == ["layer1"]
    assert graph.nodes_in("layer1.0") == [], "nothing inside the leaf is traced"
    assert graph.modules["layer1"].type == "torch.nn.Sequential"


def test_export_fallback_is_announced_and_exact():
    model = LoopOverChannels().eval()
    x = torch.randn(2, 3, 5, 5)
    with pytest.warns(UserWarning, match=r"torch\.export.*leaf"):
        graph = ir.trace(model, (x,))
    assert graph.meta["traced_with"] == "torch.export"
    graph.validate()
    again = ir.Graph.from_json(graph.to_json())
    rebuilt = ir.build_module(again).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert max_abs_diff(rebuilt(x), model(x)) <= 1e-5
        assert max_abs_diff(ir.run_graph(graph, model, x), model(x)) <= 1e-5


def test_untraceable_code_names_module_and_line_and_suggests_a_leaf():
    model = Wrapper()
    with pytest.raises(ir.TraceError) as info:
        ir.trace(model, (torch.randn(2, 4),))
    message = str(info.value)
    assert "'gate' (DataDependent)" in message
    assert "test_ir_trace.py" in message and "if x.sum() > 0" in message
    assert "leaf_modules=[DataDependent]" in message
    assert "torch.export" in message


def test_marking_the_culprit_as_leaf_makes_it_trace():
    model = Wrapper().eval()
    x = torch.randn(2, 4)
    graph = ir.trace(model, (x,), leaf_modules=[DataDependent])
    assert graph.meta["traced_with"] == "torch.fx"
    assert max_abs_diff(ir.run_graph(graph, model, x), model(x)) == 0


def test_opaque_leaf_is_recorded_and_refuses_to_rebuild_clearly():
    class NoArgsStored(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.proj = nn.Linear(width, width)

        def forward(self, x):
            return F.relu(self.proj(x))

    model = nn.Sequential(NoArgsStored(4)).eval()
    graph = ir.trace(model, (torch.randn(2, 4),), leaf_modules=[NoArgsStored])
    assert graph.modules["0"].is_opaque
    with pytest.raises(ir.IRError, match="opaque"):
        ir.build_module(graph, trust=["tests"])


def test_tied_weights_stay_tied_in_the_rebuilt_module():
    model = CORPUS["gpt"].build().eval()
    args = CORPUS["gpt"].example_args()
    graph = ir.Graph.from_json(ir.trace(model, args).to_json())
    assert graph.aliases, "the GPT case ties its embedding and output weights"
    rebuilt = ir.build_module(graph)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    for alias, original in graph.aliases.items():
        a, b = rebuilt.get_parameter(alias), rebuilt.get_parameter(original)
        assert a is b


def test_non_tensor_keyword_inputs_are_constants():
    case = CORPUS["kwargs_masked_pooling"]
    model = case.build().eval()
    args, kwargs = case.example_args(), dict(case.example_kwargs(), scale=0.5)
    graph = ir.trace(model, args, kwargs)
    assert [n.target for n in graph.inputs] == ["x", "mask", "scale"]
    with torch.no_grad():
        assert max_abs_diff(ir.run_graph(graph, model, *args, **kwargs), model(*args, **kwargs)) <= 1e-6


def test_trace_rejects_non_modules_clearly():
    with pytest.raises(TypeError, match="needs an nn.Module"):
        ir.trace(lambda x: x, (torch.randn(1),))


def test_buffer_transformed_in_forward_stays_a_buffer():
    """A buffer reshaped in forward reads the state loaded later, not a frozen copy."""

    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("shift", torch.zeros(3))

        def forward(self, x):
            return x + self.shift.view(1, -1, 1, 1)

    model = Shifted().eval()
    x = torch.randn(2, 3, 4, 4)
    graph = ir.trace(model, (x,))
    assert not graph.constants
    rebuilt = ir.build_module(graph)
    state = {"shift": torch.tensor([1.0, 2.0, 3.0])}
    model.load_state_dict(state)
    rebuilt.load_state_dict(state)
    assert max_abs_diff(rebuilt(x), model(x)) == 0


class FunctionalDropout(nn.Module):
    """torchvision's DenseNet style: ``F.dropout(..., training=self.training)``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.dropout(self.fc(x), p=0.5, training=self.training)


class BranchOnTraining(FunctionalDropout):
    def forward(self, x):
        x = self.fc(x)
        if self.training:
            x = x + 1
        return x


def test_training_flag_is_a_graph_value_that_follows_train_and_eval():
    model = nn.Sequential(FunctionalDropout()).eval()
    x = torch.randn(3, 4)
    graph = ir.Graph.from_json(ir.trace(model, (x,)).to_json())
    assert any(n.op == "get_attr" and n.target == "training" for n in graph.nodes)
    rebuilt = ir.build_module(graph)
    rebuilt.load_state_dict(model.state_dict())
    for mode in (True, False):
        model.train(mode), rebuilt.train(mode)
        torch.manual_seed(1)
        expected = model(x)
        torch.manual_seed(1)
        assert max_abs_diff(rebuilt(x), expected) == 0
    assert model[0].__dict__["training"] is False, "the user's flags are restored after tracing"


def test_python_branch_on_training_is_specialised_with_a_warning():
    model = BranchOnTraining().eval()
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning, match="self.training was fixed to eval mode"):
        graph = ir.trace(model, (x,))
    assert max_abs_diff(ir.run_graph(graph, model, x), model(x)) == 0


def test_module_whose_result_is_unused_keeps_its_weights():
    class AuxHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.aux = nn.Linear(4, 2)

        def forward(self, x):
            h = self.body(x)
            self.aux(h)  # computed and dropped, as with an auxiliary head at inference
            return h

    model = AuxHead().eval()
    graph = ir.trace(model, (torch.randn(2, 4),))
    assert "aux" not in {n.target for n in graph.nodes} and "aux" in graph.modules
    ir.build_module(graph).load_state_dict(model.state_dict(), strict=True)


class ItemAssignment(nn.Module):
    """Tensor item assignment, which symbolic tracing cannot record."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        y[:, 0] = 0.0
        z = torch.zeros_like(y)
        z[y > 0] = 1.0
        return y + z, {"features": y}


def test_item_assignment_falls_back_to_export_keeping_in_place_ops_and_output_structure():
    from retiarii_ir import codegen

    model = ItemAssignment().eval()
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning, match="torch.export"):
        graph = ir.trace(model, (x,))
    assert any(n.target.startswith("torch.ops.aten.fill_") for n in graph.nodes), "in-place op kept"
    assert str(graph.output.type) == "(f32[B,4], {features: f32[B,4]})"
    again = ir.Graph.from_json(graph.to_json())
    rebuilt = ir.build_module(again)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    generated = codegen.load(again)()
    generated.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        expected = model(x)
        assert max_abs_diff(rebuilt(x), expected) == 0
        assert max_abs_diff(generated(x), expected) == 0


def test_in_place_calls_whose_result_is_unused_are_kept():
    class InPlace(nn.Module):
        def forward(self, x):
            x = x * 1.0
            F.relu(x, inplace=True)
            x.add_(1.0)
            return x

    model = InPlace()
    x = torch.randn(2, 3)
    graph = ir.trace(model, (x,))
    assert {"relu", "add_"} <= {n.name for n in graph.nodes}
    assert max_abs_diff(ir.run_graph(graph, model, x), model(x)) == 0
