"""Rough work estimates per node (multiply-adds counted as 2 FLOPs, one sample), for the
plan's report: what sharing or batching a node saves, not a profiler."""

from __future__ import annotations

import math

from retiarii_ir import Graph, TensorType
from retiarii_ir.node import Node
from retiarii_ir.types import concrete_dim


def _numel(node: Node) -> int:
    t = node.type
    if isinstance(t, TensorType):
        return math.prod(concrete_dim(d, 1) for d in t.shape)
    return 0


def node_flops(graph: Graph, node: Node) -> int:
    """FLOPs of one node for one sample: convolutions and linear layers by their weights,
    everything else by the size of what it produces."""
    out = _numel(node)
    if node.op == "call_module":
        spec = graph.modules.get(node.target)
        kwargs = (spec.kwargs or {}) if spec is not None else {}
        name = spec.class_name if spec is not None else ""
        if name.startswith("Conv") and isinstance(node.type, TensorType) and len(node.type.shape) >= 3:
            kernel = kwargs.get("kernel_size", 1)
            taps = math.prod(kernel) if isinstance(kernel, tuple) else kernel ** (len(node.type.shape) - 2)
            fan_in = kwargs.get("in_channels", 1) // kwargs.get("groups", 1)
            return 2 * out * fan_in * taps
        if name == "Linear":
            return 2 * out * kwargs.get("in_features", 1)
    if node.op in ("call_module", "call_function", "call_method"):
        return out
    return 0
