"""The Graph: nodes in execution order, plus what is needed to rebuild the model's state.

A graph owns
- ``nodes``: operations in a valid execution (topological) order;
- ``modules``: a ModuleSpec for every leaf module, keyed by its qualified name
  (``layer1.0.conv1``), so the original state_dict keys are kept;
- ``attributes``: parameters and buffers that belong to non-leaf modules, read by
  ``get_attr`` nodes (a ViT's ``cls_token``, a normalisation buffer);
- ``constants``: tensors captured from code, which no state_dict holds;
- ``aliases``: a second path to a module or parameter that the model shares (tied
  weights, a layer registered under two names), mapped to the first path;
- ``module_types``: the class name of every module in the hierarchy, for readers;
- ``trust``: packages whose own code the graph may call besides torch: those of the traced
  model (tracing trusts it), or those the caller named in ``from_json(trust=[...])``. It is
  never read from JSON, so a graph cannot grant itself trust.
"""

from __future__ import annotations

import bisect
import copy as _copy
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

from .errors import GraphValidationError
from .module_spec import ModuleSpec
from .node import Node, map_args
from .types import UNKNOWN, ValueType


@dataclass
class AttributeSpec:
    """A parameter or buffer held directly by a (non-leaf) module."""

    kind: str  # "parameter" or "buffer"
    shape: tuple[int, ...]
    dtype: str
    requires_grad: bool = True
    persistent: bool = True
    value: torch.Tensor | None = None  # kept for non-persistent buffers: no state_dict holds them


class Graph:
    """A typed dataflow graph of one model (or of several merged models)."""

    def __init__(self, name: str = "Model") -> None:
        self.name = name
        self.nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self.modules: dict[str, ModuleSpec] = {}
        self.attributes: dict[str, AttributeSpec] = {}
        self.constants: dict[str, torch.Tensor] = {}
        self.aliases: dict[str, str] = {}
        self.module_types: dict[str, str] = {}
        self.meta: dict[str, Any] = {}
        self.trust: tuple[str, ...] = ()
        # The traced model's own state_dict (its tensors, not copies), for trials to start from;
        # not part of the JSON, and not carried by ``copy`` (a copy is made to be edited).
        self.weights: dict[str, torch.Tensor] | None = None

    def trusted(self, extra: Iterable[str] = ()) -> tuple[str, ...]:
        """The packages this graph's code may come from: its own trust plus ``extra``."""
        if isinstance(extra, str):
            extra = (extra,)
        return tuple(dict.fromkeys((*self.trust, *extra)))

    # ------------------------------------------------------------------ queries
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"graph {self.name!r} has no node {name!r}") from None

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "input"]

    @property
    def output(self) -> Node:
        outputs = [n for n in self.nodes if n.op == "output"]
        if len(outputs) != 1:
            raise GraphValidationError(f"graph {self.name!r} has {len(outputs)} output nodes, expected 1")
        return outputs[0]

    def users(self, node: Node) -> list[Node]:
        """Nodes of this graph that read ``node``, in execution order (kept per node: O(users))."""
        return [n for n in node.users if n.graph is self]

    def nodes_in(self, scope: str) -> list[Node]:
        """Nodes created inside the module ``scope`` (``layer1.0``) or its children."""
        prefix = scope + "."
        return [n for n in self.nodes if n.scope == scope or n.scope.startswith(prefix)
                or n.op == "call_module" and (n.target == scope or n.target.startswith(prefix))]

    # ------------------------------------------------------------------ editing
    def unique_name(self, base: str) -> str:
        base = re.sub(r"\W", "_", base) or "v"
        if base[0].isdigit():
            base = "_" + base
        name, i = base, 1
        while name in self._by_name:
            name = f"{base}_{i}"
            i += 1
        return name

    def add_node(self, op: str, target: str, args: tuple = (), kwargs: dict | None = None,
                 name: str | None = None, type: ValueType = UNKNOWN, scope: str = "",
                 before: Node | None = None, after: Node | None = None) -> Node:
        """Create a node; by default before the output node (or at the end)."""
        if name is not None and name in self._by_name:
            raise GraphValidationError(f"graph {self.name!r} already has a node named {name!r}")
        node = Node(self, name or self.unique_name(target.rsplit(".", 1)[-1]), op, target,
                    args, kwargs, type, scope)
        if after is not None:
            index = self._index(after) + 1
        elif before is not None:
            index = self._index(before)
        else:
            last = self.nodes[-1] if self.nodes else None
            index = len(self.nodes) - 1 if last is not None and last.op == "output" and op != "output" \
                else len(self.nodes)
        self._insert(index, node)
        self._by_name[node.name] = node
        return node

    def _insert(self, index: int, node: Node) -> None:
        """Put ``node`` at list position ``index`` with a position key between its neighbours."""
        low = self.nodes[index - 1]._position if index > 0 else 0.0
        high = self.nodes[index]._position if index < len(self.nodes) else low + 2.0
        if high - low < 1e-9:
            self._renumber()
            low = self.nodes[index - 1]._position if index > 0 else 0.0
            high = self.nodes[index]._position if index < len(self.nodes) else low + 2.0
        node._position = (low + high) / 2
        self.nodes.insert(index, node)

    def _renumber(self) -> None:
        for i, n in enumerate(self.nodes):
            n._position = float(i + 1)

    def _index(self, node: Node) -> int:
        """List position of ``node``: a binary search on position keys, not a scan."""
        index = bisect.bisect_left(self.nodes, node._position, key=lambda n: n._position)
        if index < len(self.nodes) and self.nodes[index] is node:
            return index
        raise GraphValidationError(f"node {node.name!r} is not in graph {self.name!r}")

    def replace_all_uses(self, old: Node, new: Node, only_in: Iterable[Node] | None = None) -> None:
        """Make every user of ``old`` (or only those in ``only_in``) read ``new`` instead."""
        users = list(only_in) if only_in is not None else self.users(old)
        for user in users:
            if user is new:
                continue
            swap = lambda n: new if n is old else n  # noqa: E731
            user.args = map_args(user.args, swap)
            user.kwargs = map_args(user.kwargs, swap)

    def remove_node(self, node: Node) -> None:
        """Remove a node nobody reads; raise naming its users otherwise. A module it called
        stays in ``modules``: its weights are part of the model's state either way."""
        users = self.users(node)
        if users:
            raise GraphValidationError(
                f"cannot remove node {node.name!r}: still read by {', '.join(u.name for u in users)}")
        self.nodes.pop(self._index(node))
        node.detach()
        del self._by_name[node.name]

    def rename(self, node: Node, new_name: str) -> None:
        if new_name in self._by_name:
            raise GraphValidationError(f"graph {self.name!r} already has a node named {new_name!r}")
        del self._by_name[node.name]
        node.name = new_name
        self._by_name[new_name] = node

    def reorder(self, nodes: list[Node]) -> None:
        """List the same nodes in a new execution order (the caller keeps it topological)."""
        if len(nodes) != len(self.nodes) or {id(n) for n in nodes} != {id(n) for n in self.nodes}:
            raise GraphValidationError(f"reorder of graph {self.name!r} must list exactly its nodes")
        self.nodes = list(nodes)
        self._renumber()

    def eliminate_dead_code(self) -> list[str]:
        """Remove nodes whose value no one uses (inputs, output and in-place calls stay).

        One pass from the end with use counts, so a long chain of dead nodes costs O(N)."""
        uses = {n.name: 0 for n in self.nodes}
        for node in self.nodes:
            for source in node.inputs:
                uses[source.name] += 1
        removed: list[str] = []
        for node in reversed(list(self.nodes)):
            if node.op in ("input", "output") or has_side_effect(node) or uses[node.name]:
                continue
            for source in node.inputs:
                uses[source.name] -= 1
            removed.append(node.name)
        dead = set(removed)
        self.nodes = [n for n in self.nodes if n.name not in dead]
        for name in dead:
            self._by_name.pop(name).detach()
        return removed

    def copy(self) -> "Graph":
        """A deep copy: editing it never touches this graph."""
        clone = Graph(self.name)
        mapping: dict[int, Node] = {}
        for node in self.nodes:
            new = Node(clone, node.name, node.op, node.target,
                       map_args(node.args, lambda n: mapping[id(n)]),
                       map_args(node.kwargs, lambda n: mapping[id(n)]), node.type, node.scope)
            new.meta = _copy.deepcopy(node.meta)
            new._position = node._position
            mapping[id(node)] = new
            clone.nodes.append(new)
            clone._by_name[new.name] = new
        clone.modules = _copy.deepcopy(self.modules)
        clone.attributes = _copy.deepcopy(self.attributes)
        clone.constants = {k: v.clone() for k, v in self.constants.items()}
        clone.aliases = dict(self.aliases)
        clone.module_types = dict(self.module_types)
        clone.meta = _copy.deepcopy(self.meta)
        clone.trust = self.trust
        return clone

    # ------------------------------------------------------------------ views
    def __str__(self) -> str:
        from .printing import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.nodes)} nodes, {len(self.modules)} modules>"

    def to_networkx(self):
        from .analysis import to_networkx

        return to_networkx(self)

    def to_json(self, indent: int | None = None) -> str:
        from .serialize import graph_to_json

        return graph_to_json(self, indent=indent)

    @staticmethod
    def from_json(text: str | bytes, trust: Iterable[str] = ()) -> "Graph":
        from .serialize import graph_from_json

        return graph_from_json(text, trust=trust)

    def validate(self, check_types: bool = True, trust: Iterable[str] = ()) -> "Graph":
        from .validate import validate

        validate(self, check_types=check_types, trust=trust)
        return self

    def infer_types(self, trust: Iterable[str] = (), keep_known: bool = False) -> "Graph":
        from .shape_inference import infer_types

        infer_types(self, trust=trust, keep_known=keep_known)
        return self

    # ------------------------------------------------------------------ rewrites (for mutators)
    # Thin wrappers over retiarii_ir.rewrite, which documents each edit.
    def inline(self, node: Node, subgraph: Graph, module_prefix: str, name_of=None) -> list[Node]:
        """Replace call node ``node`` by a copy of ``subgraph``, its modules under ``module_prefix``."""
        from .rewrite import inline

        return inline(self, node, subgraph, module_prefix, name_of)

    def replace_op(self, node: Node, op: str, target: str, args: tuple | None = None,
                   kwargs: dict | None = None, module: ModuleSpec | None = None) -> Node:
        """Make ``node`` compute something else, keeping its name and users."""
        from .rewrite import replace_op

        return replace_op(self, node, op, target, args, kwargs, module)

    def insert_on_edge(self, source: Node, user: Node, op: str, target: str, args: tuple | None = None,
                       kwargs: dict | None = None, module: ModuleSpec | None = None,
                       name: str | None = None) -> Node:
        """A new node between ``source`` and ``user`` (reading ``source`` unless ``args`` say otherwise)."""
        from .rewrite import insert_on_edge

        return insert_on_edge(self, source, user, op, target, args, kwargs, module, name)

    def add_edge(self, source: Node, dest: Node, combine: str = "operator.add", name: str | None = None) -> Node:
        """Users of ``dest`` read ``combine(dest, source)`` instead (a skip connection)."""
        from .rewrite import add_edge

        return add_edge(self, source, dest, combine, name)

    def bypass(self, node: Node, replacement: Node | None = None) -> None:
        """Remove ``node``; its users read ``replacement`` (default: its first input)."""
        from .rewrite import bypass

        bypass(self, node, replacement)

    def set_module(self, qualname: str, spec: ModuleSpec) -> None:
        """Define or redefine the module at ``qualname``."""
        from .rewrite import set_module

        set_module(self, qualname, spec)

_SIDE_EFFECT_FUNCTIONS = {"operator.setitem", "builtins.setattr", "torch._assert"}


def has_side_effect(node: Node) -> bool:
    """In-place ops (``add_``, ``aten.fill_.Scalar``, ``inplace=True``) and assertions run
    even if unread."""
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_function":
        parts = node.target.split(".")
        # torch.ops.aten.<op>.<overload> names the op third from the end
        op = parts[3] if parts[:2] == ["torch", "ops"] and len(parts) > 3 else parts[-1]
        return (node.target in _SIDE_EFFECT_FUNCTIONS or op.endswith("_") and not op.startswith("__")
                or op.startswith(("_assert", "sym_constrain")))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_") or node.target == "__setitem__"
    return False
