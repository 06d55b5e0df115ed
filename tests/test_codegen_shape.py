"""Generated code in the model's own shape: one class per user class with its own forward,
Sequentials called whole, constants as class parameters, and a flat part with its reason
wherever a submodule's operations are not a clean region."""

import ast

import pytest
import torch
from torch import nn

import retiarii_ir as ir
from benchmarks.codegen_shape import body_lines, demo_winner, generated_shape
from retiarii_ir import codegen
from retiarii_ir.runtime.models import resnet18
from retiarii_ir.space.hub import DartsSpace, DigitsSpace, MobileNetV3Space, NasBench201, PretrainedDigitsSpace
from tests.helpers import max_abs_diff

RESNET18_LINES_BEFORE = 200  # the flat form: 8 classes, a 71-line ResNet.forward


def generated(model, *args):
    """(source, generated module) with the original weights loaded strictly, outputs compared."""
    model = model.eval()
    graph = ir.trace(model, args)
    source = codegen.to_source(graph)
    net = codegen.load(graph)().eval()
    net.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert max_abs_diff(net(*args), model(*args)) <= 1e-5
    return source, net


def forward_of(source: str, cls: str) -> list[str]:
    tree = ast.parse(source)
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    function = next(f for f in klass.body if isinstance(f, ast.FunctionDef) and f.name == "forward")
    return [line.strip() for line in source.splitlines()[function.lineno:function.end_lineno]]


def classes_of(source: str) -> list[str]:
    return [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]


def test_resnet18_has_its_two_classes_each_with_its_forward():
    torch.manual_seed(0)
    source, _ = generated(resnet18(num_classes=10, width=8), torch.randn(2, 3, 32, 32))
    assert classes_of(source) == ["BasicBlock", "ResNet"]
    assert "def __init__(self, in_channels, out_channels, stride, downsample):" in source
    assert "BasicBlock(8, 8, 1, None)" in source and "BasicBlock(16, 16, 1, None)" in source
    assert forward_of(source, "ResNet") == [
        "conv1 = self.conv1(x)", "bn1 = self.bn1(conv1)", "relu = self.relu(bn1)", "maxpool = self.maxpool(relu)",
        "layer1 = self.layer1(maxpool)", "layer2 = self.layer2(layer1)", "layer3 = self.layer3(layer2)",
        "layer4 = self.layer4(layer3)", "avgpool = self.avgpool(layer4)", "flatten = torch.flatten(avgpool, 1)",
        "return self.fc(flatten)"]
    assert forward_of(source, "BasicBlock") == [
        "out = self.conv1(x)", "out = self.bn1(out)", "out = self.relu(out)", "out = self.conv2(out)",
        "out = self.bn2(out)", "x = x if self.downsample is None else self.downsample(x)", "out = out + x",
        "return self.relu(out)"]
    assert len(source.splitlines()) <= RESNET18_LINES_BEFORE


def test_the_demo_winner_reads_as_a_person_writes_it():
    model, graph = demo_winner()
    source = codegen.to_source(graph)
    lines = forward_of(source, graph.name)
    assert len(lines) <= 8 and lines[:4] == [
        "features = self.features(x)", "stem = self.stem(features)", "op = self.op(stem)", "blocks = self.blocks(op)"]
    net = codegen.load(graph)().eval()
    net.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert max_abs_diff(net(x), model(x)) <= 1e-5


@pytest.mark.parametrize("space, size, channels", [
    (DartsSpace, 8, 3), (MobileNetV3Space, 16, 3), (NasBench201, 8, 3), (DigitsSpace, 8, 1),
    (PretrainedDigitsSpace, 8, 1)])
def test_a_winner_of_each_hub_space_loads_strictly_with_the_same_outputs(space, size, channels):
    torch.manual_seed(0)
    x = torch.randn(2, channels, size, size)
    traced = ir.trace_space(space(), x)
    for seed in (0, 1):
        sample = traced.random_sample(seed)
        with traced.fixed_arch(sample):
            fixed = space().eval()
        graph = traced.freeze(sample)
        net = codegen.load(graph)().eval()
        net.load_state_dict(fixed.state_dict(), strict=True)
        with torch.no_grad():
            assert max_abs_diff(net(x), fixed(x)) <= 1e-5
        classes, lines, _ = generated_shape(codegen.to_source(graph))
        assert classes >= 1 and lines >= 1


def test_identical_instances_share_a_class_and_user_names_are_kept():
    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.tanh(self.fc(x)) + x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = Cell(), Cell()

        def forward(self, x):
            return self.b(self.a(x))

    source, _ = generated(Net(), torch.randn(2, 4))
    assert classes_of(source) == ["Cell", "Net"]
    assert "self.a = Cell()" in source and "self.b = Cell()" in source
    assert forward_of(source, "Net") == ["a = self.a(x)", "return self.b(a)"]


# ---------------------------------------------------------------------- flat parts, each with its reason
class Twice(nn.Module):
    """``inner`` is called twice with the parent's work between the calls."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.other = nn.Linear(4, 4)

    def forward(self, x):
        return self.inner(self.other(self.inner(x)))


def test_a_module_called_twice_with_work_between_is_written_flat():
    source, _ = generated(Twice(), torch.randn(2, 4))
    assert "# inner is called 2 times with other work between the calls" in source
    assert "self.inner[0](x)" in source and "self.inner(" not in source


class Peer(nn.Module):
    """Reads a parameter of a module it does not hold (kept out of its registered children)."""

    def __init__(self, head):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.peers = [head]

    def forward(self, x):
        return self.fc(x) * self.peers[0].weight.sum()


class UsesPeer(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 4)
        self.block = Peer(self.head)

    def forward(self, x):
        return self.head(self.block(x))


def test_a_module_reading_what_it_does_not_hold_is_written_flat():
    source, _ = generated(UsesPeer(), torch.randn(2, 4))
    assert "# block uses head.weight, which it does not hold" in source
    assert "self.block.fc(x)" in source


class Reversed(nn.Module):
    """Calls its Sequential's children in the opposite order."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(4, 4), nn.Tanh())

    def forward(self, x):
        return self.seq[0](self.seq[1](x))


def test_a_sequential_whose_children_do_not_run_in_order_is_called_child_by_child():
    source, _ = generated(Reversed(), torch.randn(2, 4))
    assert "# the children of seq do not run one after another, so each is called here" in source
    assert "self.seq[1](x)" in source


class Captured(nn.Module):
    """A plain tensor attribute (no buffer): tracing captures it as a constant of the graph."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.offset = torch.arange(4.0)

    def forward(self, x):
        return self.fc(x) + self.offset


class HoldsCaptured(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Captured()

    def forward(self, x):
        return self.block(x).relu()


def test_a_module_using_a_captured_tensor_is_written_flat():
    source, _ = generated(HoldsCaptured(), torch.randn(2, 4))
    assert "# block uses a tensor captured at trace time, which its parent holds" in source


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


class HoldsChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Chain()

    def forward(self, x):
        return self.block(x) * 2


def _edited(where):
    """HoldsChain's graph with a root operation placed between ``block``'s first two operations;
    ``where`` says whether it reads a value of ``block`` ('reads') or nothing of it ('apart')."""
    torch.manual_seed(0)
    model = HoldsChain().eval()
    x = torch.randn(2, 4)
    graph = ir.trace(model, (x,))
    first = graph.node("block_first")
    source = first if where == "reads" else graph.inputs[0]
    side = graph.add_node("call_function", "torch.sigmoid", (source,), name="side", after=first)
    output = graph.output
    output.args = ((output.args[0], side),)
    with torch.no_grad():
        expected = (model(x), torch.sigmoid(model.block.first(x) if where == "reads" else x))
    return graph, model, x, expected


@pytest.mark.parametrize("where, reason", [
    ("reads", "# a value leaves block before block finishes"),
    ("apart", "# other work runs in the middle of block")])
def test_a_region_interrupted_by_its_parent_is_written_flat(where, reason):
    graph, model, x, expected = _edited(where)
    source = codegen.to_source(graph)
    assert reason in source and "self.block.first(x)" in source
    net = codegen.load(graph)().eval()
    net.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert max_abs_diff(net(x), expected) <= 1e-6


def test_only_the_unclean_part_is_flat():
    """Twice's ``other`` (clean) is still called by name while ``inner`` is written out."""
    source, _ = generated(Twice(), torch.randn(2, 4))
    assert forward_of(source, "Twice")[0].startswith("#")
    assert "self.other(" in source


def test_body_lines_skip_docstrings_comments_and_blank_lines():
    function = ast.parse('def f(x):\n    """Doc."""\n    # note\n\n    y = x\n    return y\n').body[0]
    assert body_lines(function, ['def f(x):', '    """Doc."""', '    # note', '', '    y = x', '    return y']) == 2
