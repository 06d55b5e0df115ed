"""A ValueChoice used where a concrete value is needed fails at once, with one project error
that names the plain torch.nn layer and its retiarii_ir.nn twin, instead of an unrelated torch
error ("out_channels must be divisible by groups") or an endless loop (LayerNorm)."""

from __future__ import annotations

import copy
import math
import signal
from contextlib import contextmanager

import pytest
import torch
from torch import nn as tnn

from retiarii_ir import fixed_arch, nn, trace_space
from retiarii_ir.errors import IRError, ValueChoiceMisuseError

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@contextmanager
def deadline(seconds: int = 5):
    """Turns a hang (iterating a choice used to never end) into a failure."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def width() -> nn.ValueChoice:
    return nn.ValueChoice([16, 32], label="width")


# Each layer touches its argument differently: %, then != (Conv2d), torch.empty (Linear,
# BatchNorm2d), < (Dropout), iteration (LayerNorm, kernel sizes), reflected % (GroupNorm).
PLAIN_LAYER_CASES = {  # name: (layer, v -> (args, kwargs))
    "Conv2d_out": ("Conv2d", lambda v: ((3, v, 3), {})),
    "Conv2d_in": ("Conv2d", lambda v: ((v, 16, 3), {})),
    "Conv2d_kernel": ("Conv2d", lambda v: ((3, 16, v // 8), {})),
    "Linear": ("Linear", lambda v: ((8, v), {})),
    "BatchNorm2d": ("BatchNorm2d", lambda v: ((v,), {})),
    "Dropout": ("Dropout", lambda v: ((), {"p": v / 64})),
    "LayerNorm": ("LayerNorm", lambda v: ((v,), {})),
    "GroupNorm": ("GroupNorm", lambda v: ((v // 8, 32), {})),
}


@pytest.mark.parametrize("case", sorted(PLAIN_LAYER_CASES))
def test_plain_torch_layer_given_a_choice_names_its_retiarii_twin(case):
    layer, make = PLAIN_LAYER_CASES[case]
    args, kwargs = make(width())
    with deadline(), pytest.raises(ValueChoiceMisuseError) as info:
        getattr(tnn, layer)(*args, **kwargs)
    message = str(info.value)
    assert f"torch.nn.{layer}" in message
    assert f"use retiarii_ir.nn.{layer} instead" in message
    assert "ValueChoice('width')" in message  # the choice itself, not an intermediate like (width % 1)


@pytest.mark.parametrize("case", sorted(PLAIN_LAYER_CASES))
def test_the_retiarii_twin_accepts_the_same_arguments(case):
    """The advice in the error works: the same call on retiarii_ir.nn builds a choice layer."""
    layer, make = PLAIN_LAYER_CASES[case]
    args, kwargs = make(width())
    module = getattr(nn, layer)(*args, **kwargs)
    assert isinstance(module, nn.ValueChoiceLayer) and module.value_args
    assert {leaf.label for arg in module.value_args.values() for leaf in arg.leaves()} == {"width"}


def test_dropout_keyword_probability():
    p = nn.ValueChoice([0.1, 0.5], label="p")
    with pytest.raises(ValueChoiceMisuseError, match=r"torch\.nn\.Dropout.*retiarii_ir\.nn\.Dropout"):
        tnn.Dropout(p=p)
    assert nn.Dropout(p=p).value_args == {"p": p}


def test_the_error_is_a_project_error_and_a_type_error():
    assert issubclass(ValueChoiceMisuseError, IRError) and issubclass(ValueChoiceMisuseError, TypeError)


def test_nested_construction_names_the_layer_the_user_built():
    """TransformerEncoderLayer builds a Linear from dim_feedforward; the user called the former."""
    with pytest.raises(ValueChoiceMisuseError, match=r"retiarii_ir\.nn\.TransformerEncoderLayer instead"):
        tnn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=width())


def test_subclass_of_a_torch_layer_names_the_torch_layer():
    class MyConv(tnn.Conv2d):
        pass

    with pytest.raises(ValueChoiceMisuseError, match=r"torch\.nn\.Conv2d.*retiarii_ir\.nn\.Conv2d instead"):
        MyConv(3, width(), 3)


def test_plain_layer_that_only_stores_the_choice_fails_when_the_space_is_traced():
    """MaxPool2d keeps its kernel size untouched until forward; tracing the space runs it."""
    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            k = nn.ValueChoice([1, 3], label="k")
            self.conv = nn.Conv2d(3, 4, k, padding=k // 2)
            self.pool = tnn.MaxPool2d(k, 1)

        def forward(self, x):
            return self.pool(self.conv(x))

    with pytest.raises(ValueChoiceMisuseError, match=r"torch\.nn\.MaxPool2d.*retiarii_ir\.nn\.MaxPool2d instead"):
        trace_space(Net(), X)


# ---------------------------------------------------------------------- conversions and control flow
CONVERSIONS = {
    "bool": lambda v: bool(v),
    "if": lambda v: 1 if v > 16 else 0,
    "==": lambda v: v == 16,
    "int": lambda v: int(v),
    "float": lambda v: float(v),
    "round": lambda v: round(v),
    "math.ceil": lambda v: math.ceil(v),
    "range": lambda v: range(v),
    "index": lambda v: [1, 2, 3][v],
    "slice": lambda v: [1, 2, 3][:v],
    "len": lambda v: len(v),
    "list": lambda v: list(v),
    "unpack": lambda v: [a for a, _ in [v]],
    "in": lambda v: 3 in v,
    "format": lambda v: f"{v:d}",
    "torch.zeros": lambda v: torch.zeros(v),
}


@pytest.mark.parametrize("use", sorted(CONVERSIONS))
def test_concrete_value_uses_raise_the_project_error(use):
    v = width() * 2
    with deadline(), pytest.raises(ValueChoiceMisuseError) as info:
        CONVERSIONS[use](v)
    message = str(info.value)
    assert "(ValueChoice('width') * 2) is a choice" in message
    assert "retiarii_ir.nn" in message
    assert "was passed to torch.nn" not in message  # no torch layer was involved


def test_control_flow_in_the_users_own_init_does_not_blame_a_layer():
    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            w = width()
            self.conv = nn.Conv2d(3, w, 3) if w > 16 else nn.Conv2d(3, 8, 3)

    with pytest.raises(ValueChoiceMisuseError) as info:
        Net()
    assert "the comparison >" in str(info.value) and "torch.nn.Net" not in str(info.value)
    assert "retiarii_ir.nn.Net" not in str(info.value)


def test_bool_error_points_to_layer_choice():
    with pytest.raises(ValueChoiceMisuseError, match="cannot steer Python control flow.*LayerChoice"):
        bool(width())


# ---------------------------------------------------------------------- what keeps working
def test_arithmetic_stays_symbolic_including_reflected_operators():
    a = nn.ValueChoice([2, 3], label="a")
    exprs = {"a * 2": a * 2, "7 % a": 7 % a, "2 ** a": 2 ** a, "a // 2 + 1": a // 2 + 1, "-a": -a}
    assert {k: e.evaluate({"a": 3}) for k, e in exprs.items()} == \
        {"a * 2": 6, "7 % a": 1, "2 ** a": 8, "a // 2 + 1": 2, "-a": -3}
    assert f"{a}" == repr(a) == "ValueChoice('a')"  # plain formatting is still allowed


def test_choices_hash_by_identity():
    a, b = nn.ValueChoice([1, 2], label="a"), nn.ValueChoice([1, 2], label="b")
    assert {a: "a", b: "b"}[a] == "a" and len({a, b, a}) == 2


def test_wrapped_layer_with_one_positional_choice_deep_copies():
    """The copy check must not compare the argument with ``==`` (a choice refuses to)."""
    layer = nn.BatchNorm2d(width())
    clone = copy.deepcopy(layer)
    assert type(clone) is type(layer) and clone.value_args.keys() == {"num_features"}


def test_plain_torch_layer_under_fixed_arch_gets_the_value():
    """Under fixed_arch a ValueChoice is its value, so plain torch.nn layers are fine."""
    with fixed_arch({"width": 32, "depth": 2}):
        conv = tnn.Conv2d(3, width(), 3)
        blocks = nn.Repeat(lambda i: tnn.Identity(), depth=nn.ValueChoice([1, 2], label="depth"))
    assert type(conv) is tnn.Conv2d and conv.out_channels == 32 and len(blocks) == 2


def test_space_with_choices_in_retiarii_layers_and_repeat_still_traces():
    @nn.model_wrapper
    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            w = width()
            self.stem = nn.Conv2d(3, w, 3, padding=1)
            self.blocks = nn.Repeat(lambda i: nn.Conv2d(w, w, 1), depth=nn.ValueChoice([0, 1], label="depth"))
            self.drop = nn.Dropout(p=nn.ValueChoice([0.0, 0.5], label="p"))
            self.head = nn.Linear(w * 2 // 2, 5)

        def forward(self, x):
            return self.head(self.drop(self.blocks(self.stem(x))).mean((2, 3)))

    space = trace_space(Net(), X)
    assert space.choices() == {"width": [16, 32], "depth": [0, 1], "p": [0.0, 0.5]}
    graph = space.freeze({"width": 32, "depth": 1, "p": 0.5})
    assert graph.modules["head"].kwargs["in_features"] == 32
