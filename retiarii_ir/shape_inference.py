"""Types for every node, observed by running the graph at two batch sizes.

Dimensions that follow the batch size become symbolic (``B``, ``2*B``...). Tracing runs
the user's model on the example inputs (eval mode, no grad, training flags restored);
``infer_types`` re-types a graph alone (after a mutation) on the meta device, falling
back to the CPU for ops that have no meta kernel.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from .errors import IRError
from .graph import Graph
from . import limits
from .interpreter import Interpreter, NodeExecutionError, build_module
from .types import ScalarType, TensorType, ValueType, concrete_dim, dtype_from_name, generalize_batch, type_of


_log = logging.getLogger(__name__)


class _Recorder(Interpreter):
    """Interpreter that keeps the type of every value it computes. With ``known`` (on the meta
    device), a tensor-typed node stands in as an empty tensor of its type, unrun: only the
    nodes whose types are unknown are worked out."""

    def __init__(self, graph: Graph, root: nn.Module, trust: Iterable[str] = (),
                 known: tuple[int, dict[str, TensorType]] | None = None) -> None:
        super().__init__(graph, root, trust)
        self.types: dict[str, ValueType] = {}
        self.known = known

    def _stand_in(self, node) -> torch.Tensor | None:
        if self.known is None or node.op in ("input", "output") or node.name not in self.known[1]:
            return None
        batch, types = self.known
        shape = [concrete_dim(d, batch) for d in types[node.name].shape]
        if not all(isinstance(d, int) for d in shape):
            return None
        return torch.empty(shape, dtype=dtype_from_name(types[node.name].dtype), device="meta")

    def run(self, *args: Any, **kwargs: Any) -> Any:
        env = self.bind_inputs(args, kwargs)
        for node in self.graph.inputs:
            self.types[node.name] = type_of(env[node.name])
        result = None
        for node in self.graph.nodes:
            if node.op == "input":
                continue
            value = self._stand_in(node)
            if value is None:
                value = self.run_node(node, env)
            env[node.name] = value
            self.types[node.name] = type_of(value)
            if node.op == "output":
                result = value
        return result


def _observe(graph: Graph, root: nn.Module, args: tuple, kwargs: dict, trust=(),
             known: tuple[int, dict[str, TensorType]] | None = None) -> dict[str, ValueType]:
    recorder = _Recorder(graph, root, trust, known)
    with torch.no_grad():
        recorder.run(*args, **kwargs)
    return recorder.types


@contextlib.contextmanager
def _quiet_fake_tensors() -> Iterator[None]:
    """Fake tensors log every failing meta kernel with its traceback at error level; a failure
    here is an answer (the model fixes its batch size), so keep the terminal quiet."""
    log = logging.getLogger("torch._subclasses.fake_tensor")
    level, log.level = log.level, logging.CRITICAL + 1
    try:
        yield
    finally:
        log.setLevel(level)


def _observe_fake(graph: Graph, root: nn.Module, args: tuple, kwargs: dict) -> dict[str, ValueType]:
    """Types without arithmetic: fake tensors carry shapes and dtypes only. Used only to see
    how dimensions follow the batch size; falls back to real execution for data-dependent
    ops that fake tensors cannot answer."""
    try:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        fake = lambda v: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
        fake_args, fake_kwargs = tuple(fake(a) for a in args), {k: fake(v) for k, v in kwargs.items()}
        with mode, _quiet_fake_tensors():
            return _observe(graph, root, fake_args, fake_kwargs)
    except Exception:  # noqa: BLE001 - any fake-mode gap: compute for real instead
        return _observe(graph, root, args, kwargs)


def _grow_batch(value: Any, batch_dim: int) -> Any:
    """The same input with one more sample along the batch dimension."""
    if isinstance(value, torch.Tensor) and value.dim() > batch_dim:
        return torch.cat([value, value.narrow(batch_dim, 0, 1)], dim=batch_dim)
    return value


def _batch_size(args: tuple, kwargs: dict, batch_dim: int) -> int | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > batch_dim:
            return int(value.shape[batch_dim])
    return None


def merge_observations(graph: Graph, small: dict, large: dict | None, b_small: int | None, b_large: int | None) -> None:
    for node in graph.nodes:
        observed = small.get(node.name)
        if observed is None:
            continue
        if large is not None and node.name in large and b_small is not None:
            observed = generalize_batch(observed, large[node.name], b_small, b_large)
        node.type = observed


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for a while; every module's own flag is restored after."""
    flags = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        yield model
    finally:
        for name, m in model.named_modules():
            m.training = flags.get(name, m.training)


def record_types(graph: Graph, model: nn.Module, args: tuple, kwargs: dict, batch_dim: int | None) -> None:
    """Type ``graph`` by running it with ``model``'s weights on the example inputs."""
    with evaluation_mode(model):
        small = _observe(graph, model, args, kwargs)  # real values decide the structure
        large, b_small, b_large = None, None, None
        b_small = _batch_size(args, kwargs, batch_dim) if batch_dim is not None else None
        if b_small is not None:
            grown_args = tuple(_grow_batch(a, batch_dim) for a in args)
            grown_kwargs = {k: _grow_batch(v, batch_dim) for k, v in kwargs.items()}
            try:
                large, b_large = _observe_fake(graph, model, grown_args, grown_kwargs), b_small + 1
            except IRError:
                large = None  # the model fixes its batch size: keep concrete shapes
                _log.info("%s works only at batch size %s; its types keep concrete shapes", graph.name, b_small)
        graph.meta["symbolic_batch"] = large is not None
        merge_observations(graph, small, large, b_small, b_large)


def example_inputs(graph: Graph, batch_size: int, device: str | torch.device = "cpu") -> tuple:
    """Zero tensors matching the graph's input types, at a given batch size."""
    values = []
    for node in graph.inputs:
        t = node.type
        if isinstance(t, TensorType):
            shape = tuple(concrete_dim(d, batch_size) for d in t.shape)
            dtype = dtype_from_name(t.dtype)
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            if torch.device(device).type != "meta" and size > limits.MAX_BUILD_BYTES:
                raise IRError(f"input {node.name!r} of type {t} would take {size / 2**20:,.1f} MiB at "
                              f"batch size {batch_size}, over the limit of {limits.MAX_BUILD_BYTES / 2**20:,.1f} MiB")
            values.append(torch.zeros(shape, dtype=dtype, device=device))
        elif node.args:
            values.append(node.args[0])
        elif isinstance(t, ScalarType) and t.name == "None":
            values.append(None)
        else:
            raise IRError(f"cannot make an example for input {node.name!r} of type {t}")
    return tuple(values)


PROBE_BATCH_SIZES = (2, 3)


def observe_types(graph: Graph, trust: Iterable[str] = (),
                  keep_known: bool = False) -> tuple[dict[str, ValueType], dict[str, ValueType]]:
    """Types seen at the two probe batch sizes on fresh weights: on the meta device (no
    arithmetic), or on the CPU where an op has no meta kernel (a real error repeats there).
    ``keep_known``: on the meta device, nodes that have a tensor type already keep it unrun.
    The probes' random draws (weights, dropout) leave the global random stream as it was."""
    sizes = PROBE_BATCH_SIZES if graph.meta.get("symbolic_batch", True) else (_fixed_batch(graph),) * 2
    typed = {n.name: n.type for n in graph.nodes if isinstance(n.type, TensorType)} if keep_known else None

    def observe_on(device: str) -> tuple[dict[str, ValueType], dict[str, ValueType]]:
        module = build_module(graph, trust, device=device)
        small, large = (_observe(graph, module, example_inputs(graph, b, device), {}, trust,
                                 (b, typed) if typed is not None and device == "meta" else None) for b in sizes)
        return small, large

    with torch.random.fork_rng(devices=[]):
        try:
            return observe_on("meta")
        except (NodeExecutionError, NotImplementedError, RuntimeError):
            return observe_on("cpu")


def _fixed_batch(graph: Graph) -> int:
    for node in graph.inputs:
        if isinstance(node.type, TensorType) and node.type.shape and isinstance(node.type.shape[0], int):
            return node.type.shape[0]
    return 2


def infer_types(graph: Graph, trust: Iterable[str] = (), keep_known: bool = False) -> Graph:
    """Recompute every node's type from the input types (after a mutation, say); with
    ``keep_known``, only the types of nodes that have none yet (a rewrite that typed what it
    made keeps those types, and the rest costs nothing to run)."""
    small, large = observe_types(graph, trust=trust, keep_known=keep_known)
    symbolic = graph.meta.get("symbolic_batch", True)
    merge_observations(graph, small, large if symbolic else None, *PROBE_BATCH_SIZES)
    return graph
