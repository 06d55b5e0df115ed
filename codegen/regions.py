"""Which submodules the generated code can call as a whole, and why the others are written flat.

A container's *region* is every node created inside it (``node.scope`` at or below its path).
A region is clean when its nodes run one after another with nothing of the parent between
them, and everything they reach is held by the container itself: then the container gets its
own ``forward`` and its parent calls it (``x = self.layer1(x)``). Otherwise the parent writes
the region's operations itself, and the reason becomes a one-line comment in the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retiarii_ir.graph import Graph
from retiarii_ir.node import TRAINING_FLAG, Node

from .hierarchy import Hierarchy, walk


@dataclass
class Region:
    """A container called as a whole: its nodes, the values it reads and the values it returns."""

    qualname: str
    nodes: list[Node]
    inputs: list[Node] = field(default_factory=list)
    outputs: list[Node] = field(default_factory=list)


@dataclass(frozen=True)
class Flat:
    """A container whose operations its parent writes out, and the one-line reason."""

    qualname: str
    reason: str


def inside(scope: str, qualname: str) -> bool:
    """Whether module path ``scope`` is ``qualname`` or lies below it."""
    return scope == qualname or scope.startswith(qualname + ".")


def find_regions(graph: Graph, hierarchy: Hierarchy, candidates: set[str]) -> dict[str, Region | Flat]:
    """A Region or a Flat for each container of ``candidates`` (those whose form may have a
    ``forward``); containers that run no operation are absent."""
    position = {node.name: i for i, node in enumerate(graph.nodes)}
    found: dict[str, Region | Flat] = {}
    for container in walk(hierarchy.tree):
        qualname = container.qualname
        if qualname not in candidates:
            continue
        nodes = [n for n in graph.nodes if n.op not in ("input", "output") and inside(n.scope, qualname)]
        if nodes:
            found[qualname] = _classify(graph, hierarchy, qualname, nodes, position)
    return found


def _classify(graph: Graph, hierarchy: Hierarchy, qualname: str, nodes: list[Node],
              position: dict[str, int]) -> Region | Flat:
    members = {n.name for n in nodes}
    first, last = position[nodes[0].name], position[nodes[-1].name]
    if last - first + 1 != len(nodes):
        return Flat(qualname, _why_interrupted(graph, qualname, nodes, members, first, last))
    for node in nodes:
        reached = _reaches(node)
        if reached is not None and not hierarchy.holds(qualname, reached):
            return Flat(qualname, f"{qualname} uses {reached}, which it does not hold")
        if node.op == "constant":
            return Flat(qualname, f"{qualname} uses a tensor captured at trace time, which its parent holds")
    region = Region(qualname, nodes)
    for node in nodes:
        for source in node.inputs:
            if source.name not in members and source not in region.inputs:
                region.inputs.append(source)
        if any(user.name not in members for user in graph.users(node)):
            region.outputs.append(node)
    return region


def _reaches(node: Node) -> str | None:
    """The module or tensor path a node reads through ``self``, if any."""
    if node.op == "call_module" or node.op == "get_attr" and node.target != TRAINING_FLAG:
        return node.target
    return None


def _why_interrupted(graph: Graph, qualname: str, nodes: list[Node], members: set[str],
                     first: int, last: int) -> str:
    runs: list[list[Node]] = [[]]
    previous = first - 1
    for node in nodes:
        index = graph.nodes.index(node, previous + 1)
        if index != previous + 1 and runs[-1]:
            runs.append([])
        runs[-1].append(node)
        previous = index
    signatures = {tuple((n.op, n.target) for n in run) for run in runs}
    if len(runs) > 1 and len(signatures) == 1:
        return f"{qualname} is called {len(runs)} times with other work between the calls"
    for outside in graph.nodes[first:last + 1]:
        if outside.name not in members and any(source.name in members for source in outside.inputs):
            return f"a value leaves {qualname} before {qualname} finishes"
    return f"other work runs in the middle of {qualname}"
