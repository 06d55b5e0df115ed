"""Views of a graph for analysis: a networkx DiGraph and structural hashes of subgraphs."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Iterable, Mapping

import networkx as nx
import torch

from .node import Node, iter_nodes, map_args
from .serialize import HashRef, encode_value
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


def _digest(tensor: torch.Tensor) -> str:
    t = tensor.detach().cpu().contiguous()
    header = str((t.dtype, tuple(t.shape))).encode()
    return hashlib.sha256(header + t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else header).hexdigest()


def _tensor_digest(prefix: str, params: Mapping[str, torch.Tensor]) -> list:
    keys = sorted(k for k in params if k == prefix or k.startswith(prefix + "."))
    return [[k[len(prefix):], _digest(params[k])] for k in keys]


def _signature(node: Node, ref: Callable[[Node], list], params: Mapping[str, torch.Tensor] | None) -> str:
    """What a node computes, given what its inputs are: op, target (the module spec for a
    module call), constant arguments, type, and optionally the values of its weights."""
    def encode(value: Any) -> Any:
        return encode_value(map_args(value, lambda n: HashRef(ref(n))), refs_ok=True)

    weights = _tensor_digest(node.target, params) if params is not None and node.op in (
        "call_module", "get_attr") else None
    target: object = node.target
    if node.op == "call_module":
        spec = node.graph.modules.get(node.target)
        target = encode(spec) if spec is not None else node.target
    elif node.op == "input":
        target = "input"  # inputs count by position, not by name
    elif node.op == "get_attr" and weights:
        target = "attribute"  # a weight read directly counts by its value (below), not by its path
    signature = [node.op, target, encode(node.args), encode(node.kwargs), type_to_json(node.type)]
    if weights is not None:
        signature.append(weights)
    if node.op == "constant":
        signature.append(_digest(node.graph.constants[node.target]))
    text = json.dumps(signature, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def node_hashes(graph, params: Mapping[str, torch.Tensor] | None = None,
                distinct: Iterable[str] = (), tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """A hash per node from what it computes and its inputs' hashes, independent of names and
    of the order nodes are listed in: equal hashes mean the same computation on the same
    inputs (with ``params``, on the same weight values). Nodes named in ``distinct`` (e.g.
    ones holding trainable weights) hash apart from every other node; ``tags`` adds what the
    graph does not say to a node's hash (the mode its layer runs in, say)."""
    distinct = set(distinct)
    tags = tags or {}
    hashes: dict[str, str] = {}
    inputs = 0
    for node in graph.nodes:
        value = _signature(node, lambda n: ["node", hashes[n.name]], params)
        if node.name in tags:
            value = hashlib.sha256(f"{value}/tag {tags[node.name]}".encode()).hexdigest()
        if node.op == "input":
            value, inputs = hashlib.sha256(f"{value}/input {inputs}".encode()).hexdigest(), inputs + 1
        if node.name in distinct:
            value = hashlib.sha256(f"{value}/{node.name}".encode()).hexdigest()
        hashes[node.name] = value
    return hashes


def structural_hash(graph, nodes: Iterable[Node] | None = None,
                    params: Mapping[str, torch.Tensor] | None = None) -> str:
    """A hash equal for subgraphs with the same ops, attributes, wiring and types.

    Names, scopes, module paths and the order nodes are listed in do not count. Values from
    outside the subgraph count by type and by which of them is which. With ``params`` (a
    state_dict), the values of the parameters and buffers the subgraph reads count too, so
    two subgraphs hash alike only if they would also compute the same numbers.
    """
    chosen = list(graph.nodes if nodes is None else nodes)
    members = {n.name for n in chosen}
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    chosen.sort(key=lambda n: order[n.name])

    def hashes_with(external: Callable[[Node], list]) -> dict[str, str]:
        local: dict[str, str] = {}
        for node in chosen:
            local[node.name] = _signature(
                node, lambda n: ["node", local[n.name]] if n.name in members else external(n), params)
        return local

    # First without telling outside values apart, to get an order that does not depend on the
    # listing; then number outside values by their first reader in that order.
    anonymous = hashes_with(lambda n: ["external", type_to_json(n.type)])
    depth: dict[str, int] = {}
    for node in chosen:
        depth[node.name] = 1 + max((depth.get(i.name, 0) for i in node.inputs if i.name in members), default=0)
    numbering: dict[str, int] = {}
    for node in sorted(chosen, key=lambda n: (depth[n.name], anonymous[n.name])):
        for source in node.inputs:
            if source.name not in members:
                numbering.setdefault(source.name, len(numbering))
    final = hashes_with(lambda n: ["external", numbering[n.name], type_to_json(n.type)])
    inputs = [final[n.name] for n in chosen if n.op == "input"]  # calling order counts
    text = json.dumps([inputs, sorted(final.values())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
