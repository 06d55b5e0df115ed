"""A latency table measured on this machine: each op of the supernet timed per shape.

Every leaf op is timed at the input shape it receives (a layer with ValueChoice arguments
once per combination of its labels, at that combination's shapes). Each op exists under
conditions (the LayerChoice candidate or Repeat depth that holds it), so a sample's
latency is the sum over the ops it keeps, and the expected latency under per-label
probabilities is a differentiable function of them, which ProxylessNAS penalises.

A sum of ops timed one by one is not the time of the model they make (each op alone pays
its own call overhead and cold caches; a whole model does not): on digits, 0.876 ms summed
against 0.604 ms measured whole. So the table is calibrated: a few architectures are built
standalone and timed whole, and a line ``measured = scale * summed + offset`` fitted to them
turns every sum into milliseconds of a whole model. Both are kept and printed.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass
class Calibration:
    """``measured = scale * summed + offset``, fitted to architectures timed whole."""

    scale: float = 1.0
    offset: float = 0.0
    points: list[dict[str, Any]] = field(default_factory=list)  # sample, summed ms, measured ms

    def __call__(self, summed_ms: Any) -> Any:
        return self.scale * summed_ms + self.offset


class LatencyTable:
    """Per-op latencies (milliseconds, batch of the example input) of one supernet on this machine,
    calibrated to whole-model times."""

    def __init__(self, entries: list[LatencyEntry], values: Mapping[str, list[Any]]) -> None:
        self.entries, self.values = entries, {k: list(v) for k, v in values.items()}
        self.calibration = Calibration()

    @classmethod
    def measure(cls, supernet: Supernet, example: torch.Tensor, repeats: int = 15,
                calibrate: int = 6) -> LatencyTable:
        """Time every op of ``supernet`` on inputs shaped as ``example`` flows through it (eval, no
        grad), then calibrate on ``calibrate`` random architectures timed whole (0: uncalibrated)."""
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
        table = cls(entries, state.values)
        if calibrate:
            space = supernet.space
            samples = [space.random_sample(seed) for seed in range(calibrate)]
            table.calibrate(samples, lambda s: whole_model_ms(space, s, example, repeats))
        return table

    def calibrate(self, samples: Sequence[Mapping[str, Any]], measure: Callable[[Mapping[str, Any]], float]
                  ) -> Calibration:
        """Fit ``measured = scale * summed + offset`` (least squares) to ``measure(sample)`` of each
        sample; a single summed value, or a fit with scale <= 0, falls back to the ratio of means."""
        summed = [self.summed(s) for s in samples]
        measured = [float(measure(s)) for s in samples]
        scale, offset = statistics.fmean(measured) / max(statistics.fmean(summed), 1e-12), 0.0
        if len(set(summed)) > 1:
            slope, intercept = statistics.linear_regression(summed, measured)
            if slope > 0:
                scale, offset = slope, intercept
        self.calibration = Calibration(scale, offset, [{"sample": dict(s), "summed_ms": a, "measured_ms": b}
                                                       for s, a, b in zip(samples, summed, measured)])
        return self.calibration

    def of_sample(self, sample: Mapping[str, Any]) -> float:
        """The latency (ms) of one architecture as a whole model: its ops' sum, calibrated."""
        return self.calibration(self.summed(sample))

    def summed(self, sample: Mapping[str, Any]) -> float:
        """The sum of the ops one architecture keeps, at its shapes, each timed alone (ms)."""
        index = {label: _index(self.values[label], v) for label, v in sample.items()}
        total = 0.0
        for entry in self.entries:
            if all(label in index and index[label] in allowed for label, allowed in entry.conditions):
                total += entry.ms[tuple(index[label] for label in entry.labels)]
        return total

    def expected(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Expected whole-model latency (ms) when each label takes its values with ``probabilities``
        (differentiable; the calibration is linear, so it is the calibrated expected sum)."""
        return self.calibration(self.expected_summed(probabilities))

    def expected_summed(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
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

    def report(self) -> str:
        """The calibration architectures: summed ops, calibrated and measured whole (ms)."""
        c = self.calibration
        lines = [f"latency calibration: measured = {c.scale:.3f} x summed + {c.offset:.3f} ms",
                 "summed ops ms | calibrated ms | measured whole ms"]
        lines += [f"{p['summed_ms']:.3f} | {c(p['summed_ms']):.3f} | {p['measured_ms']:.3f}" for p in c.points]
        return "\n".join(lines)

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
    if isinstance(value, list) and len(value) == 1 and value[0] in values:  # NNI's form of one input
        value = value[0]
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


def whole_model_ms(space: Any, sample: Mapping[str, Any], example: torch.Tensor, repeats: int = 15) -> float:
    """Median ms of one forward of ``sample``'s standalone model (built from ``space.freeze``), eval, no grad."""
    import retiarii_ir

    model = retiarii_ir.build_module(space.freeze(sample)).eval()
    with torch.no_grad():
        return _time(lambda: model(example), repeats)


def _time(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` runs after two warm-up runs."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
