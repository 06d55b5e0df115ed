"""Graph.validate(): structure first (names, dangling inputs, cycles), then types."""

from __future__ import annotations

from typing import Iterable

import networkx as nx

from .errors import GraphValidationError, SchemaError, TypeMismatchError
from .graph import Graph
from .interpreter import NodeExecutionError
from .node import Node, iter_nodes
from .targets import (check_attribute_path, check_call, check_method, check_method_call, check_qualname,
                      resolve_function)
from .types import DictType, TensorType, TupleType, ValueType


def validate(graph: Graph, check_types: bool = True, trust: Iterable[str] = ()) -> None:
    """Raise GraphValidationError (or TypeMismatchError) naming the offending nodes."""
    trust = graph.trusted(trust)
    _check_names(graph)
    _check_targets(graph, trust)
    _check_edges(graph)
    _check_acyclic_and_ordered(graph)
    if check_types:
        _check_types(graph, trust)


def _check_names(graph: Graph) -> None:
    seen: dict[str, Node] = {}
    for node in graph.nodes:
        if node.name in seen:
            raise GraphValidationError(
                f"duplicate node name {node.name!r}: {seen[node.name].describe()} and {node.describe()}")
        seen[node.name] = node
    inputs = [n.target for n in graph.inputs]
    duplicates = {t for t in inputs if inputs.count(t) > 1}
    if duplicates:
        raise GraphValidationError(f"duplicate input names {sorted(duplicates)}")
    outputs = [n.name for n in graph.nodes if n.op == "output"]
    if len(outputs) != 1:
        raise GraphValidationError(f"graph {graph.name!r} needs exactly one output node, has {outputs}")
    if graph.nodes[-1].op != "output":
        raise GraphValidationError(f"output node {outputs[0]!r} must be the last node")


def _check_targets(graph: Graph, trust: tuple[str, ...]) -> None:
    for node in graph.nodes:
        try:
            if node.op == "call_module":
                check_qualname(node.target, f"node {node.name!r} module")
                if node.target not in graph.modules:
                    raise GraphValidationError(
                        f"node {node.describe()} calls module {node.target!r}, which the graph does not define")
            elif node.op == "call_function":
                resolve_function(node.target, trust)
                check_call(node.target, node.args, node.kwargs, f"node {node.name!r}")
            elif node.op == "call_method":
                check_method(node.target)
                check_method_call(node.target, node.kwargs, f"node {node.name!r}")
            elif node.op == "get_attr":
                check_attribute_path(node.target, graph.modules, f"node {node.name!r} attribute")
            elif node.op == "constant" and node.target not in graph.constants:
                raise GraphValidationError(
                    f"node {node.describe()} reads constant {node.target!r}, which the graph does not define")
        except SchemaError as e:
            raise GraphValidationError(f"node {node.describe()}: {e}") from None


def _check_edges(graph: Graph) -> None:
    members = {id(n) for n in graph.nodes}
    for node in graph.nodes:
        for source in iter_nodes((node.args, node.kwargs)):
            if id(source) not in members:
                raise GraphValidationError(
                    f"dangling input: node {node.describe()} reads {source.name!r}, which is not in the graph")
            if source.op == "output":
                raise GraphValidationError(f"node {node.describe()} reads the output node {source.name!r}")


def _check_acyclic_and_ordered(graph: Graph) -> None:
    """Every node reads only nodes listed before it: that alone rules out cycles (linear time).
    Only when it fails is networkx asked for the cycle, to name it."""
    position = {n.name: i for i, n in enumerate(graph.nodes)}
    late = next(((node, source) for node in graph.nodes for source in node.inputs
                 if position[source.name] >= position[node.name]), None)
    if late is None:
        return
    try:
        cycle = nx.find_cycle(graph.to_networkx())
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
        raise GraphValidationError(f"cycle in graph {graph.name!r}: {path}")
    node, source = late
    raise GraphValidationError(f"node {node.describe()} reads {source.name!r}, which comes after it; "
                               f"nodes must be in execution order")


def _compatible(recorded: ValueType, observed: ValueType) -> bool:
    """Whether an observed type matches the recorded one (unknown matches anything)."""
    if isinstance(recorded, TensorType) and isinstance(observed, TensorType):
        return recorded == observed
    if isinstance(recorded, TupleType) and isinstance(observed, TupleType):
        return len(recorded.elements) == len(observed.elements) and all(
            _compatible(r, o) for r, o in zip(recorded.elements, observed.elements))
    if isinstance(recorded, DictType) and isinstance(observed, DictType):
        return [k for k, _ in recorded.items] == [k for k, _ in observed.items] and all(
            _compatible(r, o) for (_, r), (_, o) in zip(recorded.items, observed.items))
    if isinstance(recorded, (TensorType, TupleType, DictType)) or isinstance(observed, (TensorType, TupleType, DictType)):
        return False
    return True


def _check_types(graph: Graph, trust: tuple[str, ...]) -> None:
    from .shape_inference import PROBE_BATCH_SIZES, merge_observations, observe_types

    scratch = graph.copy()
    try:
        small, large = observe_types(scratch, trust=trust)
    except NodeExecutionError as e:
        node = graph.node(e.node_name) if e.node_name in graph else None
        producers = ", ".join(f"{p.name} ({p.type})" for p in node.inputs) if node else "?"
        raise TypeMismatchError(
            f"type mismatch at node {node.describe() if node else e.node_name}: it cannot take what "
            f"its producers give ({producers}): {e.reason}") from None
    merge_observations(scratch, small, large, *PROBE_BATCH_SIZES)
    for node in graph.nodes:
        observed = scratch.node(node.name).type
        if not _compatible(node.type, observed):
            readers = ", ".join(u.name for u in graph.users(node)) or "no consumers"
            raise TypeMismatchError(
                f"type mismatch: node {node.describe()} is recorded as {node.type} but produces "
                f"{observed} (read by {readers})")
