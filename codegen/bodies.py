"""What each ``forward`` holds: the nodes a container runs itself, the children it calls whole,
and a comment where a child's operations are written out in its place.

A class container with a clean region is called whole; a numbered container (a ``Sequential``,
or a ``ModuleList`` used the same way) is called whole, as a ``Sequential``, when its children
run one after another, each reading the one before. Everything else is written
out in the parent, its own clean children still called by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from retiarii_ir.graph import Graph
from retiarii_ir.node import Node

from .hierarchy import Hierarchy, walk
from .regions import Flat, Region, find_regions


@dataclass(frozen=True)
class NodeItem:
    """One node, one statement."""

    node: Node


@dataclass(frozen=True)
class CallItem:
    """A child container called as a whole: ``a, b = self.child(x, y)``."""

    qualname: str
    inputs: tuple[Node, ...]
    outputs: tuple[Node, ...]


@dataclass(frozen=True)
class CommentItem:
    """Why the statements that follow are a child's operations written out."""

    text: str


Item = NodeItem | CallItem | CommentItem


class Layout:
    """For every container: whether its parent calls it whole, or why not."""

    def __init__(self, graph: Graph, hierarchy: Hierarchy) -> None:
        self.graph = graph
        self.hierarchy = hierarchy
        candidates = {q for q, node in hierarchy.nodes.items() if q and node.spec is None
                      and hierarchy.forms[q] in ("class", "sequence")}
        self.regions: dict[str, Region | Flat] = find_regions(graph, hierarchy, candidates)
        self.called: set[str] = set()
        self.reasons: dict[str, str] = {}
        for node in reversed(list(walk(hierarchy.tree))):  # children before their parents
            region = self.regions.get(node.qualname)
            has_forward = graph.module_types.get(node.qualname) not in ("ModuleList", "ModuleDict")
            if isinstance(region, Flat) and has_forward and (hierarchy.forms[node.qualname] == "class"
                                                             or hierarchy.is_sequential(node.qualname)):
                self.reasons[node.qualname] = region.reason
            elif isinstance(region, Region) and (hierarchy.forms[node.qualname] == "class" or self._chain(region)):
                self.called.add(node.qualname)
            elif isinstance(region, Region) and hierarchy.is_sequential(node.qualname):
                self.reasons[node.qualname] = (f"the children of {node.qualname} do not run one after "
                                               f"another, so each is called here")

    def region(self, qualname: str) -> Region:
        region = self.regions[qualname]
        assert isinstance(region, Region), qualname
        return region

    def items(self, scope: str, nodes: list[Node]) -> list[Item]:
        """The statements of container ``scope``'s forward (the root's when ``scope`` is '')."""
        items: list[Item] = []
        seen: set[str] = set()
        depth = len(scope.split(".")) if scope else 0
        for node in nodes:
            parts = node.scope.split(".") if node.scope else []
            item: Item = NodeItem(node)
            for end in range(depth + 1, len(parts) + 1):
                qualname = ".".join(parts[:end])
                if qualname in self.called:
                    if qualname not in seen:
                        region = self.region(qualname)
                        item = CallItem(qualname, tuple(region.inputs), tuple(region.outputs))
                    else:
                        item = None
                    break
                if qualname in self.reasons and qualname not in seen:
                    items.append(CommentItem(self.reasons[qualname]))
                seen.add(qualname)
            if item is not None:
                items.append(item)
                if isinstance(item, CallItem):
                    seen.add(item.qualname)
        return items

    def _chain(self, region: Region) -> bool:
        """A Sequential whose children each read the one before, in order, and nothing else."""
        children = list(self.hierarchy.nodes[region.qualname].children)
        items = self.items(region.qualname, region.nodes)
        if len(region.inputs) != 1 or len(items) != len(children):
            return False
        previous = region.inputs[0]
        for name, item in zip(children, items):
            qualname = f"{region.qualname}.{name}"
            if isinstance(item, CallItem) and item.qualname == qualname and item.inputs == (previous,) \
                    and len(item.outputs) == 1:
                previous = item.outputs[0]
            elif isinstance(item, NodeItem) and item.node.op == "call_module" and item.node.target == qualname \
                    and item.node.args == (previous,) and not item.node.kwargs:
                previous = item.node
            else:
                return False
        return region.outputs == [previous]
