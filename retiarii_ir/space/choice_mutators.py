"""The mutators that tracing a model space creates, one per choice point (a *site*).

A site is the qualified name of the choice module in the space (``stage1.op``); it stays
valid when the site sits inside a LayerChoice candidate or a Repeat block, because
inlining keeps module paths (``stage1.op.0.conv``), which is also what keeps the frozen
graph's state_dict keys equal to those of the ``fixed_arch`` model.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from ..graph import Graph
from ..module_spec import ModuleSpec
from .mutator import Mutator, mark
from .nn.choices import chosen_indices
from .nn.value_choice import evaluate, leaves_of
from ..node import Node
from ..rewrite import (
    eliminate_dead_code_keeping_state,
    forget_modules,
    inline,
    set_module,
)
from .search_space import Choice, parent_allows

CHOICE_CLASS_NAMES = frozenset({"LayerChoice", "InputChoice", "Repeat", "LooseEndMerge"})
"""Classes of the choice modules whose (opaque) specs go once their choice is resolved."""


class SiteMutator(Mutator):
    """A mutator bound to one choice module of the space, with its choices declared up front."""

    kind = "categorical"

    def __init__(self, site: str, label: str, values: list[Any], parent: tuple[str, Any] | None = None) -> None:
        super().__init__(label)
        self.site = site
        self.values = list(values)
        self.parent = parent

    def declared_choices(self) -> list[Choice]:
        return [Choice(self.label, tuple(self.values), self.parent, self.kind)]

    def labels(self) -> list[str]:
        return [c.label for c in self.declared_choices()]

    def applies(self, graph: Graph, sample: Mapping[str, Any]) -> bool:
        """Whether this site is in the graph and its labels are active in ``sample``."""
        return self.parent_holds(sample) and bool(self.site_nodes(graph)) and \
            all(label in sample for label in self.labels())

    def parent_holds(self, sample: Mapping[str, Any]) -> bool:
        """Whether the candidate this site lives in was chosen (always, for a top-level site)."""
        return parent_allows(self.parent, sample)

    def site_nodes(self, graph: Graph) -> list[Node]:
        return [n for n in graph.nodes if n.op == "call_module" and n.target == self.site]

    def lifted(self, prefix: str, parent: tuple[str, Any] | None) -> SiteMutator:
        """This mutator for the same site seen from an enclosing module (path ``prefix.site``)."""
        twin = copy.copy(self)
        twin.site = f"{prefix}.{self.site}" if self.site else prefix
        if twin.parent is None:
            twin.parent = parent
        return twin

    def history_entry(self, used: Mapping[str, Any], source: Mapping[str, Any] | None = None) -> dict:
        entry = super().history_entry(used, source)
        entry["site"] = self.site
        return entry


def _inlined_name(site_name: str, sub_name: str) -> str:
    """Names of inlined nodes: the tracing wrapper's ``c`` becomes the site node's name."""
    if sub_name == "c":
        return site_name
    if sub_name.startswith("c_"):
        return site_name + sub_name[1:]
    return f"{site_name}_{sub_name}"


class LayerChoiceMutator(SiteMutator):
    """Inline the chosen candidate's graph in place of the LayerChoice call."""

    kind = "layer"

    def __init__(self, site: str, label: str, values: list[Any], candidates: dict[str, Graph],
                 parent: tuple[str, Any] | None = None) -> None:
        super().__init__(site, label, values, parent)
        self.candidates = candidates

    def mutate(self, graph: Graph) -> None:
        value = self.choice(self.values, self.label)
        sub = self.candidates[str(value)]
        for node in self.site_nodes(graph):
            users = graph.users(node)
            added = inline(graph, node, sub, self.site, lambda n, name=node.name: _inlined_name(name, n))
            mark(added + users, [self.label])


class InputChoiceMutator(SiteMutator):
    """Replace the InputChoice call by the chosen inputs and their reduction."""

    kind = "input"

    def __init__(self, site: str, label: str, values: list[Any], reduction: str,
                 parent: tuple[str, Any] | None = None) -> None:
        super().__init__(site, label, values, parent)
        self.reduction = reduction

    def mutate(self, graph: Graph) -> None:
        chosen = chosen_indices(self.choice(self.values, self.label))
        for node in self.site_nodes(graph):
            users = graph.users(node)
            added: list[Node] = []
            emit = functools.partial(_emit, graph, node, added)
            items = self._items(node, chosen, emit)
            result = self._reduce(items, emit)
            graph.replace_all_uses(node, result)
            graph.remove_node(node)
            forget_modules(graph, self.site)
            mark(added + users, [self.label])

    @staticmethod
    def _items(node: Node, chosen: list[int], emit) -> list[Any]:
        inputs = node.args[0] if node.args else node.kwargs.get("inputs")
        if isinstance(inputs, (list, tuple)):
            return [inputs[i] for i in chosen]
        return [emit("operator.getitem", (inputs, i)) for i in chosen]  # a node holding the list

    def _reduce(self, items: list[Any], emit) -> Any:
        """The same operations as ``reduce_inputs``, which the fixed_arch module runs."""
        if self.reduction == "none":
            return emit("builtins.list", (list(items),))
        if self.reduction == "concat":
            return emit("torch.cat", (list(items),), {"dim": 1})
        total = items[0]
        for item in items[1:]:
            total = emit("operator.add", (total, item))
        if self.reduction == "mean" and len(items) > 1:
            total = emit("operator.truediv", (total, len(items)))
        return total


def _emit(graph: Graph, site_node: Node, added: list[Node], target: str, args: tuple,
          kwargs: dict | None = None) -> Node:
    """A call_function node placed where ``site_node`` is, named after it."""
    node = graph.add_node("call_function", target, args, kwargs, name=graph.unique_name(site_node.name),
                          scope=site_node.scope, before=site_node)
    added.append(node)
    return node


class ValueChoiceMutator(SiteMutator):
    """Write the chosen values into the module spec of a layer built with ValueChoice arguments."""

    kind = "value"

    def __init__(self, site: str, value_args: dict[str, Any], base_spec: ModuleSpec) -> None:
        leaves: dict[str, list[Any]] = {}
        for leaf in leaves_of(list(value_args.values())):
            leaves.setdefault(leaf.label, list(leaf.candidates))
        self.leaves = leaves
        first = next(iter(leaves))
        super().__init__(site, first, leaves[first])
        self.value_args = value_args
        self.base_spec = base_spec

    def declared_choices(self) -> list[Choice]:
        return [Choice(label, tuple(values), self.parent, self.kind) for label, values in self.leaves.items()]

    def applies(self, graph: Graph, sample: Mapping[str, Any]) -> bool:
        return self.parent_holds(sample) and self.site in graph.modules and \
            all(label in sample for label in self.leaves)

    def mutate(self, graph: Graph) -> None:
        values = {label: self.choice(candidates, label) for label, candidates in self.leaves.items()}
        kwargs = dict(self.base_spec.kwargs or {})
        kwargs.update({name: _plain(evaluate(expr, values)) for name, expr in self.value_args.items()})
        set_module(graph, self.site, ModuleSpec(self.base_spec.type, kwargs))
        mark(self.site_nodes(graph), list(values))


def _plain(value: Any) -> Any:
    """Lists become tuples: what torch.nn constructors store and specs hold."""
    return tuple(_plain(v) for v in value) if isinstance(value, list) else value


class RepeatMutator(SiteMutator):
    """Keep the first ``depth`` blocks of a Repeat, inlined one after another (0: identity)."""

    kind = "depth"

    def __init__(self, site: str, label: str, depths: list[int], blocks: list[Graph]) -> None:
        super().__init__(site, label, depths)
        self.blocks = blocks

    def mutate(self, graph: Graph) -> None:
        depth = self.choice(self.values, self.label)
        for node in self.site_nodes(graph):
            users = graph.users(node)
            previous: Any = node.args[0]
            placeholders = []
            for i in range(depth):
                previous = graph.add_node("call_module", f"{self.site}.{i}", (previous,),
                                          name=graph.unique_name(f"{node.name}_{i}"), scope=node.scope, before=node)
                placeholders.append(previous)
            graph.replace_all_uses(node, previous)
            graph.remove_node(node)
            forget_modules(graph, self.site)
            added: list[Node] = []
            for i, placeholder in enumerate(placeholders):
                added += inline(graph, placeholder, self.blocks[i], f"{self.site}.{i}",
                                lambda n, name=placeholder.name: _inlined_name(name, n))
            graph.module_types[self.site] = "Sequential"
            mark(added + users, [self.label])


class LooseEndMutator(SiteMutator):
    """Concatenate only the cell nodes that no other node reads (runs after the cell's choices)."""

    kind = "merge"

    def __init__(self, site: str, cell_label: str, concat_dim: int) -> None:
        super().__init__(site, cell_label, [None])
        self.concat_dim = concat_dim

    def declared_choices(self) -> list[Choice]:
        return []

    def applies(self, graph: Graph, sample: Mapping[str, Any]) -> bool:
        return self.parent_holds(sample) and bool(self.site_nodes(graph))

    def mutate(self, graph: Graph) -> None:
        eliminate_dead_code_keeping_state(graph, CHOICE_CLASS_NAMES)
        for node in self.site_nodes(graph):
            nodes = list(node.args[0])
            loose = [n for n in nodes if all(u is node for u in graph.users(n))]
            merged = graph.add_node("call_function", "torch.cat", (loose,), {"dim": self.concat_dim},
                                    name=graph.unique_name(node.name), scope=node.scope, before=node)
            graph.replace_all_uses(node, merged)
            graph.remove_node(node)
            forget_modules(graph, self.site)
            labels = [lbl for n in nodes for lbl in n.meta.get("mutated_by", ())]
            mark([merged], labels)
