"""Views of a graph for analysis: a networkx DiGraph and structural hashes of subgraphs."""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Mapping

import networkx as nx
import torch

from .node import Node, iter_nodes, map_args
from .types import type_to_json


def to_networkx(graph) -> nx.MultiDiGraph:
    """Nodes keyed by name with op/target/type/scope; one edge per argument use."""
    g = nx.MultiDiGraph(name=graph.name)
    for node in graph.nodes:
        g.add_node(node.name, op=node.op, target=node.target, type=str(node.type), scope=node.scope)
    for node in graph.nodes:
        for position, source in enumerate(iter_nodes((node.args, node.kwargs))):
            g.add_edge(source.name, node.name, position=position, type=str(source.type))
    return g


def _node_signature(node: Node, local: Mapping[str, int], external: dict[str, int],
                    params: Mapping[str, torch.Tensor] | None) -> list:
    def ref(n: Node):
        if n.name in local:
            return ["local", local[n.name]]
        external.setdefault(n.name, len(external))
        return ["external", external[n.name], type_to_json(n.type)]

    from .serialize import encode_value

    def encode(value):
        return encode_value(map_args(value, lambda n: _Ref(ref(n))), refs_ok=True)

    target: object = node.target
    if node.op == "call_module":
        spec = node.graph.modules.get(node.target)
        target = encode(spec) if spec is not None else node.target
    elif node.op == "input":
        target = "input"
    signature = [node.op, target, encode(node.args), encode(node.kwargs), type_to_json(node.type)]
    if params is not None and node.op in ("call_module", "get_attr"):
        signature.append(_tensor_digest(node.target, params))
    if node.op == "constant":
        signature.append(_digest(node.graph.constants[node.target]))
    return signature


class _Ref:
    """Stands for a node reference while hashing, encoded as its position."""

    def __init__(self, value: list) -> None:
        self.value = value


def _digest(tensor: torch.Tensor) -> str:
    t = tensor.detach().cpu().contiguous()
    return hashlib.sha256(str((t.dtype, tuple(t.shape))).encode() + t.view(-1).view(torch.uint8).numpy().tobytes()
                          if t.numel() else str((t.dtype, tuple(t.shape))).encode()).hexdigest()


def _tensor_digest(prefix: str, params: Mapping[str, torch.Tensor]) -> list:
    keys = sorted(k for k in params if k == prefix or k.startswith(prefix + "."))
    return [[k[len(prefix):], _digest(params[k])] for k in keys]


def structural_hash(graph, nodes: Iterable[Node] | None = None,
                    params: Mapping[str, torch.Tensor] | None = None) -> str:
    """A hash equal for subgraphs with the same ops, attributes, wiring and types.

    Names, scopes and module paths do not count. With ``params`` (a state_dict), the
    values of the parameters and buffers the subgraph reads count too, so two subgraphs
    hash alike only if they would also compute the same numbers.
    """
    chosen = list(graph.nodes if nodes is None else nodes)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    chosen.sort(key=lambda n: order[n.name])
    local: dict[str, int] = {}
    external: dict[str, int] = {}
    rows = []
    for node in chosen:
        rows.append(_node_signature(node, local, external, params))
        local[node.name] = len(local)
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
