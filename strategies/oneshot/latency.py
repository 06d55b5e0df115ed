"""A latency table measured on this machine: each op of the supernet timed per shape.

Every leaf op is timed at the input shape it receives (a layer with ValueChoice arguments
once per combination of its labels, at that combination's shapes). Each op exists under
conditions (the LayerChoice candidate or Repeat depth that holds it), so a sample's
latency is the sum over the ops it keeps, and the expected latency under per-label
probabilities is a differentiable function of them, which ProxylessNAS penalises.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .mixed import Gate, MixedInputChoice, MixedLayerChoice, MixedLooseEnd, MixedRepeat, MixedValueLayer
from .supernet import Supernet

Condition = tuple[str, tuple[int, ...]]  # (label, indices of the values under which the op exists)


@dataclass
class LatencyEntry:
    """One op: where it is, when it exists, and its time (ms) per combination of its own labels."""

    path: str
    op: str
    conditions: list[Condition]
    labels: list[str]
    ms: dict[tuple[int, ...], float]
    shape: tuple[int, ...]


class LatencyTable:
    """Per-op latencies (milliseconds, batch of the example input) of one supernet on this machine."""

    def __init__(self, entries: list[LatencyEntry], values: Mapping[str, list[Any]]) -> None:
        self.entries, self.values = entries, {k: list(v) for k, v in values.items()}

    @classmethod
    def measure(cls, supernet: Supernet, example: torch.Tensor, repeats: int = 15) -> LatencyTable:
        """Time every op of ``supernet`` on inputs shaped as ``example`` flows through it (eval, no grad)."""
        state = supernet.state
        leaves = list(_leaves(supernet.net, "", []))
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = [m.register_forward_pre_hook(_recorder(shapes, path)) for path, m, _ in leaves]
        uniform = {label: Gate(torch.full((len(v),), 1.0 / len(v)), list(range(len(v))))
                   for label, v in state.values.items()}
        was_training = supernet.training
        supernet.eval()
        try:
            with torch.no_grad(), supernet.gated(uniform):
                supernet(example)
        finally:
            for hook in hooks:
                hook.remove()
        entries = []
        with torch.no_grad():
            for path, module, conditions in leaves:
                if path not in shapes:
                    continue
                if isinstance(module, MixedValueLayer):
                    labels = list(module.labels)
                    ms = {}
                    for idx in itertools.product(*[range(len(module.labels[lbl])) for lbl in labels]):
                        combo = tuple(module.labels[lbl][i] for lbl, i in zip(labels, idx))
                        shell = module._shell(combo)
                        x = torch.randn(_input_shape(shell, shapes[path]))
                        tensors = module.sliced_state(combo)
                        ms[tuple(state.index(lbl, v) for lbl, v in zip(labels, combo))] = _time(
                            lambda: module._call(shell, tensors, (x,)), repeats)
                    op = module.base_class.__name__
                else:
                    labels, x = [], torch.randn(shapes[path])
                    ms = {(): _time(lambda: module(x), repeats)}
                    op = type(module).__name__
                entries.append(LatencyEntry(path, op, conditions, labels, ms, shapes[path]))
        supernet.train(was_training)
        return cls(entries, state.values)

    def of_sample(self, sample: Mapping[str, Any]) -> float:
        """The table's latency (ms) of one architecture: the ops it keeps, at its shapes."""
        index = {label: _index(self.values[label], v) for label, v in sample.items()}
        total = 0.0
        for entry in self.entries:
            if all(label in index and index[label] in allowed for label, allowed in entry.conditions):
                total += entry.ms[tuple(index[label] for label in entry.labels)]
        return total

    def expected(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Expected latency (ms) when each label takes its values with ``probabilities`` (differentiable)."""
        total = torch.zeros(())
        for entry in self.entries:
            exists = torch.ones(())
            for label, allowed in entry.conditions:
                exists = exists * probabilities[label][list(allowed)].sum()
            cost = torch.zeros(())
            for idx, ms in entry.ms.items():
                weight = torch.ones(())
                for label, i in zip(entry.labels, idx):
                    weight = weight * probabilities[label][i]
                cost = cost + weight * ms
            total = total + exists * cost
        return total

    def rows(self) -> list[dict[str, Any]]:
        return [{"path": e.path, "op": e.op, "shape": list(e.shape), "labels": e.labels,
                 "ms": {",".join(map(str, k)): v for k, v in e.ms.items()}} for e in self.entries]


def _leaves(module: nn.Module, path: str, conditions: list[Condition]):
    """(path, op, conditions) for every op to time: value layers and modules without children."""
    if isinstance(module, MixedValueLayer):
        yield path, module, conditions
        return
    if isinstance(module, (MixedInputChoice, MixedLooseEnd)):
        return
    join = lambda name: f"{path}.{name}" if path else name  # noqa: E731
    children = list(module.named_children())
    if not children:
        if path:
            yield path, module, conditions
        return
    for name, child in children:
        extra: list[Condition] = []
        if isinstance(module, MixedLayerChoice):
            extra = [(module.label, (module.values.index(_value_named(module.values, name)),))]
        elif isinstance(module, MixedRepeat):
            extra = [(module.label, tuple(i for i, d in enumerate(module.depths) if d > int(name)))]
        yield from _leaves(child, join(name), conditions + extra)


def _value_named(values: list[Any], name: str) -> Any:
    return next(v for v in values if str(v) == name)


def _index(values: list[Any], value: Any) -> int:
    for i, v in enumerate(values):
        if v == value or (isinstance(v, (list, tuple)) and list(v) == list(value)):
            return i
    raise KeyError(value)


def _recorder(shapes: dict[str, tuple[int, ...]], path: str):
    def hook(module: nn.Module, args: tuple) -> None:
        if path not in shapes and args and isinstance(args[0], torch.Tensor):
            shapes[path] = tuple(args[0].shape)
    return hook


def _input_shape(shell: nn.Module, largest: tuple[int, ...]) -> tuple[int, ...]:
    """The input shape a layer of this combination receives: the largest, with its own input width."""
    shape = list(largest)
    for attr, dim in (("in_channels", 1), ("num_features", 1), ("num_channels", 1), ("in_features", -1)):
        if hasattr(shell, attr):
            shape[dim] = getattr(shell, attr)
            break
    return tuple(shape)


def _time(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` runs after two warm-up runs."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
