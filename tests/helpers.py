"""Small assertions shared by the test files."""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_leaves


def max_abs_diff(a, b) -> float:
    """Largest element-wise difference between two (nested) outputs of equal structure."""
    left, right = tree_leaves(a), tree_leaves(b)
    assert len(left) == len(right), f"outputs differ in structure: {len(left)} vs {len(right)} leaves"
    diffs = [0.0]
    for x, y in zip(left, right):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.shape == y.shape and x.dtype == y.dtype
            diffs.append((x.double() - y.double()).abs().max().item() if x.numel() else 0.0)
        else:
            assert x == y
    return max(diffs)


def _kind(value) -> type:
    """The Python type that matters: torch.fx's read-only list and dict count as list and dict."""
    from torch.fx.immutable_collections import immutable_dict, immutable_list

    return {immutable_list: list, immutable_dict: dict}.get(type(value), type(value))


def same_value(a, b, where: str = "value") -> None:
    """Assert that two graph values are equal *and of the same Python types*, all the way down.

    ``torch.Size((2, 3)) == (2, 3)`` and ``1 == 1.0 == True`` in Python, so plain ``==`` would
    let a decoder that returns the wrong type pass. Nodes compare by name."""
    import dataclasses
    import math

    from retiarii_ir.node import Node

    assert _kind(a) is _kind(b), f"{where}: {type(a).__name__} {a!r} vs {type(b).__name__} {b!r}"
    if isinstance(a, Node):
        assert a.name == b.name, f"{where}: node {a.name} vs {b.name}"
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            same_value(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for key in a:
            same_value(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, slice):
        for part in ("start", "stop", "step"):
            same_value(getattr(a, part), getattr(b, part), f"{where}.{part}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f"{where}: tensors differ"
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same_value(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{where}: nan vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_same_graph(got, expected) -> None:
    """``got`` (say, a graph decoded from JSON) is ``expected`` node by node: names, ops,
    targets, arguments with their Python types, value types, scopes and origins; and the same
    modules (class and constructor arguments), attributes, constants, aliases and names."""
    assert got.name == expected.name
    assert [n.name for n in got.nodes] == [n.name for n in expected.nodes]
    for mine, theirs in zip(got.nodes, expected.nodes):
        where = f"node {theirs.name}"
        assert (mine.op, mine.target, mine.scope) == (theirs.op, theirs.target, theirs.scope), where
        same_value(mine.args, theirs.args, f"{where} args")
        same_value(mine.kwargs, theirs.kwargs, f"{where} kwargs")
        same_value(mine.type, theirs.type, f"{where} type")
        same_value(mine.meta.get("origin"), theirs.meta.get("origin"), f"{where} origin")
    same_value(got.modules, expected.modules, "modules")
    same_value(got.attributes, expected.attributes, "attributes")
    same_value(got.constants, expected.constants, "constants")
    same_value(got.aliases, expected.aliases, "aliases")
    same_value(got.module_types, expected.module_types, "module_types")
