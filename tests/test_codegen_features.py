"""What the tracer produces, each kind at least once: in-place ops, operators, numeric module
names, the torch.export fallback, embedded constants, merged multi-trial graphs, the CLI."""

import math
import warnings

import pytest
import torch
from torch import nn

from retiarii_ir import codegen
import retiarii_ir as ir
from retiarii_ir.codegen.literals import tensor_literal
from tests.helpers import max_abs_diff


def _check(model, *args, **kwargs):
    """Trace, generate, load the original weights strictly, compare; returns (graph, source)."""
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = ir.trace(model, args, kwargs)
    source = codegen.to_source(graph)
    generated = codegen.load(graph)().eval()
    generated.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert max_abs_diff(generated(*args, **kwargs), model(*args, **kwargs)) <= 1e-6
    return graph, source


class InPlace(nn.Module):
    def forward(self, x):
        y = x.clone()
        y.add_(1.0)
        y.masked_fill_(y > 2, 0.0)
        torch.relu_(y)
        y *= 2
        return y, -y, ~(y > 1), y // 2, y % 3, y ** 2, (y @ y.transpose(0, 1)).shape[0]


def test_in_place_ops_and_operators_become_python_syntax():
    _, source = _check(InPlace(), torch.randn(3, 4))
    assert ".add_(1.0)" in source and "torch.relu_(" in source and ".masked_fill_(" in source
    for text in (" // 2", " % 3", "**2", " @ ", "~", "-"):
        assert text in source
    assert "import operator" not in source


def test_setitem_becomes_an_assignment():
    """``x[:, 0] = v`` (operator.setitem) in a hand-edited graph: a statement, order kept."""
    graph = ir.trace(nn.Sequential(nn.Linear(4, 4)), torch.randn(2, 4))
    linear = next(n for n in graph.nodes if n.op == "call_module")
    clone = graph.add_node("call_method", "clone", (linear,), name="y")
    graph.add_node("call_function", "operator.setitem", (clone, (slice(None), 0), -1.5), name="store")
    graph.add_node("call_function", "operator.iadd", (clone, 1.0), name="bump")
    graph.output.args = (clone,)
    source = codegen.to_source(graph)
    assert "y[:, 0] = -1.5" in source and "import operator" in source
    generated = codegen.load(graph)()
    reference = ir.build_module(graph)
    generated.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(generated(x), reference(x)) and (generated(x)[:, 0] == -0.5).all()


def test_sequential_root_uses_numeric_names():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Tanh()), nn.Linear(8, 2))
    _, source = _check(model, torch.randn(2, 4))
    assert 'sequential_2 = getattr(self, "2")(_1)' in source  # the inner Sequential, called whole
    assert 'self.add_module("0", torch.nn.Linear(4, 8))' in source


class Branchy(nn.Module):
    """Python control flow on a shape: symbolic tracing fails, torch.export takes over."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.shape[-1] > 2:
            x = x * 2
        return self.fc(x).softmax(-1)


def test_export_fallback_graph_with_aten_ops():
    graph, source = _check(Branchy(), torch.randn(2, 4))
    assert graph.meta["traced_with"] == "torch.export"
    # each aten operator is bound once at module level, and forward calls the bound name
    # (the OpOverload wrapper cost a Python call per use); export's metadata checks are gone
    used = sorted({n.target for n in graph.nodes if n.op == "call_function"})
    assert used and all(t.startswith("torch.ops.aten.") for t in used)
    assert "_assert_tensor_metadata" not in source
    forward = source[source.index("    def forward"):]
    assert "torch.ops.aten." not in forward
    for target in used:
        op, overload = target.split(".")[3:]
        assert f"aten_{op.strip('_')}_{overload} = _bound({target})" in source
        assert f"aten_{op.strip('_')}_{overload}(" in forward


class WithConstants(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = torch.linspace(-1, 1, 300).reshape(3, 100)  # large: embedded as bytes
        self.ids = torch.tensor([2, 0, 1])
        self.register_buffer("counts", torch.arange(4, dtype=torch.int64), persistent=False)
        self.fc = nn.Linear(100, 4)

    def forward(self, x):
        picked = self.table[self.ids]
        out = self.fc(x + picked.sum(0)) + self.counts.to(x.dtype)
        return out.to(torch.float64), x.new_zeros(1, dtype=torch.int32), out[..., None]


def test_constants_buffers_and_dtypes_are_embedded():
    graph, source = _check(WithConstants(), torch.randn(2, 100))
    assert "torch.frombuffer(" in source and "persistent=False" in source
    assert "torch.float64" in source and "torch.int32" in source and "[..., None]" in source
    module = codegen.load(graph)()
    assert not any("table" in k or "counts" in k for k in module.state_dict()), "constants must stay out"
    assert module.to(torch.float64) is module  # buffers move with .to()


@pytest.mark.parametrize("tensor", [
    torch.randn(3, 5), torch.randn(200, dtype=torch.float64), torch.arange(10), torch.tensor(7),
    torch.tensor([True, False]), torch.randn(2, 70).to(torch.bfloat16), torch.randn(4).half(),
    torch.empty(0, 3), torch.tensor([math.inf, -math.inf, math.nan, -0.0]), torch.randint(0, 255, (80,), dtype=torch.uint8),
])
def test_tensor_literals_are_exact(tensor):
    rebuilt = eval(tensor_literal(tensor), {"torch": torch})
    assert rebuilt.dtype == tensor.dtype and rebuilt.shape == tensor.shape
    bits = lambda t: t.reshape(-1).view(torch.uint8)  # noqa: E731 - bit for bit: NaN, -0.0 and inf included
    assert torch.equal(bits(rebuilt), bits(tensor))


class Trial(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, x):
        return self.body(x)


class MergedTrials(nn.Module):
    """The shape of a merged multi-model graph: one input per trial, one output per trial."""

    def __init__(self) -> None:
        super().__init__()
        self.trial_0 = Trial(8)
        self.trial_1 = Trial(16)

    def forward(self, x_0, x_1):
        return {"trial_0": self.trial_0(x_0), "trial_1": (self.trial_1(x_1), x_1.mean())}


def test_merged_graphs_with_several_inputs_and_outputs():
    _, source = _check(MergedTrials(), torch.randn(2, 4), torch.randn(3, 4))
    assert "def forward(self, x_0, x_1):" in source
    # different widths, one class with the width as its parameter, each trial called whole
    assert source.count("class Trial") == 1 and "def __init__(self, out_features):" in source
    assert "self.trial_0 = Trial(8)" in source and "self.trial_1 = Trial(16)" in source
    assert "trial_1 = self.trial_1(x_1)" in source


class Defaults(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, mask=None, scale: float = 0.5):
        y = self.fc(x) * scale
        if mask is not None:
            y = y.masked_fill(mask, 0.0)
        return y


def test_inputs_keep_names_and_defaults():
    mask = torch.tensor([[True, False, False, True]] * 2)
    graph, source = _check(Defaults(), torch.randn(2, 4), mask=mask)
    assert "def forward(self, x, mask" in source
    generated = codegen.load(graph)()
    generated.load_state_dict(Defaults().state_dict())


def test_write_module_and_cli(tmp_path, capsys):
    from retiarii_ir.runtime.cli import main

    out = tmp_path / "model.py"
    assert main(["codegen", "tests.test_codegen_features:MergedTrials", "--input-shape", "2,4",
                 "--input-shape", "3,4", "--out", str(out)]) == 0
    assert out.read_text().startswith('"""MergedTrials')
    import subprocess
    import sys

    for check in (["-m", "py_compile", str(out)], ["-m", "black", "--check", "--quiet", str(out)]):
        assert subprocess.run([sys.executable, *check], check=False).returncode == 0, check
    graph = ir.trace(Trial(8), torch.randn(2, 4))
    graph_json = tmp_path / "trial.json"
    graph_json.write_text(graph.to_json())
    onnx_path = tmp_path / "trial.onnx"
    assert main(["codegen", str(graph_json), "--out", str(tmp_path / "trial.py"), "--onnx", str(onnx_path),
                 "--dynamic-batch", "--check-onnx"]) == 0
    assert onnx_path.stat().st_size > 0
    assert main(["codegen", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err


def test_class_name_and_inspectable_forward(tmp_path):
    import inspect

    graph = ir.trace(Trial(8), torch.randn(2, 4))
    path = codegen.write_module(graph, tmp_path / "nested" / "twice" / "winner.py", class_name="Winner")
    assert "class Winner(torch.nn.Module):" in path.read_text()
    Winner = codegen.load(graph, class_name="Winner")
    assert Winner.__name__ == "Winner"
    assert "def forward(self, x):" in inspect.getsource(Winner.forward)
    with pytest.raises(codegen.CodegenError, match="not a plain identifier"):
        codegen.to_source(graph, class_name="Winner(object): pass\nclass X")


def test_classes_loaded_from_different_graphs_of_one_name_keep_their_own_source():
    """Each loaded class is filed under a name of its own source's digest, so loading another
    graph of the same name does not change what ``inspect`` shows for the first."""
    import inspect

    narrow, wide = ir.trace(Trial(8), torch.randn(2, 4)), ir.trace(Trial(16), torch.randn(2, 4))
    assert narrow.name == wide.name
    Narrow = codegen.load(narrow)
    Wide = codegen.load(wide)
    narrow_init, wide_init = inspect.getsource(Narrow.__init__), inspect.getsource(Wide.__init__)
    assert narrow_init in codegen.to_source(narrow) and "Linear(4, 8)" in narrow_init
    assert wide_init in codegen.to_source(wide) and "Linear(4, 16)" in wide_init


class BuiltinNamedInputs(nn.Module):
    def forward(self, input, max):
        return input * max


def test_inputs_keep_builtin_names_unless_generated_code_calls_that_builtin():
    """``input`` stays as written (callers may pass it by keyword); ``max`` is renamed because
    emitted code may call ``max(...)`` itself."""
    graph = ir.trace(BuiltinNamedInputs(), (torch.randn(2, 3), torch.randn(2, 3)))
    assert "def forward(self, input, max_):" in codegen.to_source(graph)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(codegen.load(graph)()(input=x, max_=y), x * y)


def halve(x):
    """A function of the user's own package, which generated code must import."""
    return x / 2


class SharedAndTied(nn.Module):
    """One layer under two names, and a weight tied between two layers."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a
        self.c = nn.Linear(4, 4)
        self.c.weight = self.a.weight

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_shared_modules_and_tied_weights_stay_one_object_in_generated_code():
    model = SharedAndTied().eval()
    x = torch.randn(2, 4)
    graph, source = _check(model, x)
    assert "# Shared modules and tied weights" in source
    generated = codegen.load(graph)()
    assert generated.b is generated.a and generated.c.weight is generated.a.weight


def test_generated_code_imports_the_users_own_function_and_says_what_it_needs():
    graph = ir.Graph("Halved")
    x = graph.add_node("input", "x", name="x", type=ir.types.TensorType(("B", 4), "float32"))
    half = graph.add_node("call_function", f"{__name__}.halve", (x,), name="half")
    graph.add_node("output", "output", (half,), name="output")
    package = __name__.split(".")[0]
    graph.trust = (package,)
    source = codegen.to_source(graph)
    assert f"needs torch and {package}." in source and f"\nfrom {__name__} import halve\n" in source
    torch.testing.assert_close(codegen.load(graph)()(torch.ones(2, 4)), torch.full((2, 4), 0.5))
    plain = _check(nn.Linear(4, 2), torch.randn(2, 4))[1]
    assert "needs only torch." in plain


def test_an_input_without_a_default_after_one_with_a_default_is_refused():
    """Python could not call such a forward positionally; merged graphs can come out this way."""
    graph = ir.Graph("Mixed")
    scale = graph.add_node("input", "scale", (2.0,), name="scale")
    x = graph.add_node("input", "x", name="x")
    graph.add_node("output", "output", (graph.add_node("call_function", "operator.mul", (x, scale), name="mul"),),
                   name="output")
    with pytest.raises(codegen.CodegenError, match="input 'x' has no default but follows an input that has one"):
        codegen.to_source(graph)


class Projection(nn.Module):
    def __init__(self):
        super().__init__()
        self.output_projection = nn.Linear(4, 4)

    def forward(self, x):
        return self.output_projection(x)


class LongPaths(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder_layers_of_the_model = nn.ModuleList([Projection(), Projection()])

    def forward(self, x):
        first = self.encoder_layers_of_the_model[0]  # called twice, work between: its calls are written out
        return first(first(x) + torch.relu(x))


def test_a_long_module_path_is_bound_to_a_local_first():
    """A call that would not fit on a line reads its owner from a local bound once."""
    _, source = _check(LongPaths(), torch.randn(2, 4))
    assert "encoder_layers_of_the_model_0 = self.encoder_layers_of_the_model[0]" in source
    assert "encoder_layers_of_the_model_0.output_projection(x)" in source


def test_unformatted_source_is_the_template_text_and_load_can_keep_it():
    import inspect
    import linecache

    black = pytest.importorskip("black")
    graph = ir.trace(Trial(8), torch.randn(2, 4))
    raw, formatted = codegen.to_source(graph, formatted=False), codegen.to_source(graph)
    assert raw != formatted
    assert black.format_str(raw, mode=black.Mode(target_versions={black.TargetVersion.PY310})) == formatted
    Raw = codegen.load(graph, formatted=False)
    init = inspect.getsource(Raw.__init__)
    assert init in raw and init not in formatted, "the class comes from the unformatted text"
    forward = Raw.forward
    filename = forward.__code__.co_filename
    assert forward.__globals__["__file__"] == filename, "the module names the file its code came from"
    assert "".join(linecache.getlines(filename)) == raw


class NamedOutputs(nn.Module):
    def forward(self, x):
        return {"größe": x * 2}


def test_write_module_writes_utf8_whatever_the_locale(tmp_path):
    """The file is UTF-8 even where the locale's encoding is ASCII (a non-ASCII output key)."""
    import locale

    graph, source = _check(NamedOutputs(), torch.randn(2, 3))
    assert "größe" in source
    before = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")
        path = codegen.write_module(graph, tmp_path / "named.py")
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
    assert path.read_bytes().decode("utf-8") == source
