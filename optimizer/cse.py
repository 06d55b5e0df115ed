"""Common-subgraph elimination across trials: a node that computes the same value for
several trials (no weights, or only frozen weights with equal values, nothing random, and
nothing an op changes in place) is computed once and read by all of them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from retiarii_ir import Graph, node_hashes
from retiarii_ir.graph import has_side_effect
from retiarii_ir.node import TRAINING_FLAG, Node

from .state import KeyIndex, StateRef

RANDOM_FUNCTIONS = frozenset({
    "torch.nn.functional.dropout", "torch.nn.functional.dropout1d", "torch.nn.functional.dropout2d",
    "torch.nn.functional.dropout3d", "torch.nn.functional.alpha_dropout", "torch.nn.functional.feature_alpha_dropout",
    "torch.nn.functional.rrelu", "torch.nn.functional.gumbel_softmax", "torch.dropout", "torch.rand", "torch.randn",
    "torch.rand_like", "torch.randn_like", "torch.randint", "torch.randint_like", "torch.bernoulli",
    "torch.multinomial", "torch.normal", "torch.randperm", "torch.poisson",
})
RANDOM_METHODS = frozenset({"bernoulli", "bernoulli_", "uniform_", "normal_", "random_", "exponential_",
                            "geometric_", "cauchy_", "log_normal_"})


@dataclass
class SharedNode:
    """A node now computed once for ``len(origin)`` trials."""

    name: str
    origin: list[tuple[str, str]]


def is_random(graph: Graph, node: Node) -> bool:
    if node.op == "call_function":
        return node.target in RANDOM_FUNCTIONS or ".ops.aten." in node.target and (
            "dropout" in node.target or "rand" in node.target or "bernoulli" in node.target)
    if node.op == "call_method":
        return node.target in RANDOM_METHODS
    if node.op == "call_module":
        spec = graph.modules.get(node.target)
        return spec is not None and ("Dropout" in spec.class_name or spec.class_name == "RReLU")
    return False


def eliminate_common_subgraphs(graph: Graph, state_maps: list[dict[str, StateRef]],
                               frozen_values: dict[str, torch.Tensor],
                               eval_layers: frozenset[str] = frozenset()) -> list[SharedNode]:
    """Share equal computations in place; ``state_maps`` are updated so each trial's entries
    point at the copy that is kept. ``frozen_values`` holds the merged keys that do not
    train, with their initial values; ``eval_layers`` the merged layers that run in eval mode
    (only a layer in the same mode computes the same value)."""
    all_keys = {ref.key for refs in state_maps for ref in refs.values()}
    index = KeyIndex(all_keys)
    # A value an op changes in place stays each trial's own: a shared copy would be changed
    # for every trial by the op of one.
    changed_in_place = {i.name for node in graph.nodes if has_side_effect(node) for i in node.inputs}
    unshareable = []
    for node in graph.nodes:
        reads = (index.under(node.target)
                 if node.op == "call_module" or node.op == "get_attr" and node.target != TRAINING_FLAG else [])
        random = is_random(graph, node) and node.target not in eval_layers  # dropout in eval mode draws nothing
        if (any(k not in frozen_values for k in reads) or random or has_side_effect(node)
                or node.name in changed_in_place
                or node.op == "get_attr" and node.target != TRAINING_FLAG and not reads):
            unshareable.append(node.name)
    modes = {n.name: "eval" for n in graph.nodes if n.op == "call_module" and n.target in eval_layers}
    hashes = node_hashes(graph, params=frozen_values, distinct=unshareable, tags=modes)
    kept: dict[str, Node] = {}
    shared: dict[str, SharedNode] = {}
    renamed: dict[str, str] = {}
    for node in list(graph.nodes):
        if node.op in ("input", "output"):
            continue
        first = kept.setdefault(hashes[node.name], node)
        if first is node:
            continue
        graph.replace_all_uses(node, first)
        first.meta["origin"] = first.origin + node.origin
        shared[first.name] = SharedNode(first.name, first.origin)
        if node.op in ("call_module", "get_attr") and node.target != first.target:
            renamed[node.target] = first.target
        graph.remove_node(node)
    _point_state_at_kept_copies(graph, state_maps, renamed)
    return list(shared.values())


def _point_state_at_kept_copies(graph: Graph, state_maps: list[dict[str, StateRef]], renamed: dict[str, str]) -> None:
    # A copy stays while anything still reaches it or a tensor inside it: a call, a direct read
    # of one of its weights, or a tie (``dec.weight`` is ``enc.weight``).
    used = {n.target for n in graph.nodes if n.op in ("call_module", "get_attr")}
    used |= set(graph.aliases) | set(graph.aliases.values())
    still_used = {".".join(parts[:end]) for parts in (path.split(".") for path in used)
                  for end in range(1, len(parts) + 1)}
    for removed, first in renamed.items():
        if removed in still_used:
            continue
        for refs in state_maps:
            for key, ref in refs.items():
                if ref.key == removed or ref.key.startswith(removed + "."):
                    refs[key] = StateRef(first + ref.key[len(removed):], ref.rows)
        graph.modules.pop(removed, None)
        graph.attributes.pop(removed, None)
