"""A node of the IR: one operation, its arguments, and the type of the value it produces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

from .types import UNKNOWN, ValueType

if TYPE_CHECKING:
    from .graph import Graph

OP_KINDS = ("input", "call_module", "call_function", "call_method", "get_attr", "constant", "output")
"""What a node does. ``target`` means, by kind: the parameter name; the qualified name of
the module called; the dotted name of the function; the tensor method name; the qualified
name of a parameter or buffer; the key into ``Graph.constants``; and ``"output"``."""


TRAINING_FLAG = "training"
"""``get_attr`` target meaning the model's own train/eval flag (``self.training``)."""


class Node:
    """One operation. Arguments may hold other nodes (the edges) and plain constants."""

    __slots__ = ("name", "op", "target", "_args", "_kwargs", "type", "scope", "graph", "meta", "_users", "_position")

    def __init__(self, graph: "Graph", name: str, op: str, target: str, args: tuple = (),
                 kwargs: dict | None = None, type: ValueType = UNKNOWN, scope: str = "") -> None:
        if op not in OP_KINDS:
            raise ValueError(f"node {name!r}: unknown op kind {op!r}; expected one of {OP_KINDS}")
        self.graph = graph
        self.name = name
        self.op = op
        self.target = target
        self.type = type
        self.scope = scope
        self.meta: dict[str, Any] = {}
        self._users: dict[Node, None] = {}  # nodes reading this one, kept up to date on every edit
        self._position = 0  # maintained by the graph: a sort key for execution order
        self._args: tuple = ()
        self._kwargs: dict = {}
        self._set_arguments(tuple(args), dict(kwargs or {}))

    @property
    def args(self) -> tuple:
        return self._args

    @args.setter
    def args(self, value: tuple) -> None:
        self._set_arguments(tuple(value), self._kwargs)

    @property
    def kwargs(self) -> dict:
        return self._kwargs

    @kwargs.setter
    def kwargs(self, value: dict) -> None:
        self._set_arguments(self._args, dict(value))

    def _set_arguments(self, args: tuple, kwargs: dict) -> None:
        """Replace the arguments and move this node between its inputs' user lists."""
        self.detach()
        self._args, self._kwargs = args, kwargs
        for source in iter_nodes((args, kwargs)):
            source._users[self] = None

    def detach(self) -> None:
        """Stop being a user of the nodes this one reads (before it leaves a graph)."""
        for source in iter_nodes((self._args, self._kwargs)):
            source._users.pop(self, None)

    @property
    def inputs(self) -> list["Node"]:
        """Nodes this node reads, in argument order, without repeats."""
        seen: dict[str, Node] = {}
        for node in iter_nodes((self.args, self.kwargs)):
            seen.setdefault(node.name, node)
        return list(seen.values())

    @property
    def users(self) -> list["Node"]:
        """Nodes that read this one, in execution order."""
        return sorted(self._users, key=lambda n: n._position)

    @property
    def origin(self) -> list[tuple[str, str]]:
        """``(trial, node name)`` pairs this node stands for in a merged graph (empty otherwise)."""
        return list(self.meta.get("origin", ()))

    def describe(self) -> str:
        """``name (op target)``, the way errors name a node."""
        return f"{self.name!r} ({self.op} {self.target})"

    def __repr__(self) -> str:
        return f"Node({self.name})"


def iter_nodes(value: Any) -> Iterator[Node]:
    """Every node inside a nested argument structure."""
    if isinstance(value, Node):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from iter_nodes(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_nodes(item)
    elif isinstance(value, slice):
        yield from iter_nodes((value.start, value.stop, value.step))


def map_args(value: Any, fn: Callable[[Node], Any]) -> Any:
    """Rebuild a nested argument structure with every node replaced by ``fn(node)``."""
    if isinstance(value, Node):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_args(v, fn) for v in value))
    if isinstance(value, tuple):
        return tuple(map_args(v, fn) for v in value)
    if isinstance(value, list):
        return [map_args(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_args(v, fn) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(map_args(value.start, fn), map_args(value.stop, fn), map_args(value.step, fn))
    return value
