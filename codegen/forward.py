"""One ``forward`` as statements, with the names a person would give its values.

A value that dies in the statement computing the next one hands its name on
(``x = self.conv1(x)``, ``x = self.bn1(x)``), so a chain of operations reads as one variable;
a chain takes its first operation's name (``query``, ``flatten``) or the input it starts from.
A child that a class may lack (``downsample=None``) is called as
``x if self.downsample is None else self.downsample(x)``.
"""

from __future__ import annotations

import re

from collections.abc import Callable
from dataclasses import dataclass, field

from retiarii_ir.node import Node

from .bodies import CallItem, CommentItem, Item, NodeItem
from .expressions import ForwardWriter, Statement
from .hierarchy import Hierarchy
from .imports import Imports
from .names import NameTable, identifier_from


@dataclass
class Forward:
    """A written ``forward``: its parameters, statements (comments included) and return value."""

    parameters: list[str]
    statements: list[Statement]
    result: str | None
    imports: set[str] = field(default_factory=set)

    @property
    def text(self) -> str:
        """Everything that makes two forwards the same code."""
        lines = [f"{s.target} = {s.expression}" if s.target else s.expression for s in self.statements]
        return "\n".join([", ".join(self.parameters), *lines, f"return {self.result}"])


class _Scoped:
    """The hierarchy as seen from inside container ``scope`` (``self`` is that container)."""

    def __init__(self, hierarchy: Hierarchy, scope: str) -> None:
        self.graph = hierarchy.graph
        self._hierarchy, self._scope = hierarchy, scope

    def path(self, qualname: str) -> str:
        return self._hierarchy.path(qualname, self._scope)

    def owner_prefix(self, qualname: str):
        return self._hierarchy.owner_prefix(qualname, self._scope)


def member_of(item: Item, scope: str) -> str | None:
    """The direct child of ``scope`` that an item calls or reads, if any."""
    if isinstance(item, CallItem):
        path = item.qualname
    elif isinstance(item, NodeItem) and item.node.op in ("call_module", "get_attr"):
        path = item.node.target
    else:
        return None
    if scope and not path.startswith(scope + "."):
        return None
    return path[len(scope) + 1 if scope else 0:].split(".")[0]


def single_call(item: Item) -> tuple[Node, Node] | None:
    """(input, output) of an item that calls one child on one value and returns one value."""
    if isinstance(item, CallItem) and len(item.inputs) == 1 and len(item.outputs) == 1:
        return item.inputs[0], item.outputs[0]
    if isinstance(item, NodeItem) and item.node.op == "call_module" and not item.node.kwargs \
            and len(item.node.args) == 1 and isinstance(item.node.args[0], Node):
        return item.node.args[0], item.node
    return None


def write_forward(items: list[Item], scope: str, hierarchy: Hierarchy, inputs: list[tuple[Node, str]],
                  returned: Callable[[Callable[[Node], str]], str], returned_nodes: list[Node],
                  names: NameTable, imports: Imports | None = None, constant_path=None,
                  optional: frozenset[str] = frozenset(), dropped: frozenset[str] = frozenset(),
                  chain_names: bool = True) -> Forward:
    """The forward of container ``scope`` from its items. ``inputs`` pairs each outside value
    with its parameter name; ``returned`` writes the return value from a node->name function.
    Children in ``dropped`` are left out (their input passed on): the code of an instance that
    lacks them; children in ``optional`` may be None. Without ``chain_names`` every node keeps
    its own name (the root's forward, whose node names a reader of the graph knows)."""
    substitute: dict[str, Node] = {}
    kept: list[Item] = []
    for item in items:
        if member_of(item, scope) in dropped:
            source, result = single_call(item)
            substitute[result.name] = substitute.get(source.name, source)
        else:
            kept.append(item)
    resolve = lambda node: substitute.get(node.name, node)  # noqa: E731
    if chain_names:
        variables = _names(kept, scope, inputs, returned_nodes, names, resolve, hierarchy.graph.module_types)
    else:
        variables = _node_names(kept, scope, inputs, names, hierarchy.graph.module_types)
    for name, node in substitute.items():
        variables[name] = variables[node.name]
    writer = ForwardWriter(variables, _Scoped(hierarchy, scope), constant_path or _no_constants, names, imports)
    statements: list[Statement] = []
    for item in kept:
        if isinstance(item, CommentItem):
            statements.append(Statement(None, f"# {_comment(item.text)}"))
        elif member_of(item, scope) in optional and single_call(item) is not None:
            source, result = single_call(item)
            path = hierarchy.path(f"{scope}.{member_of(item, scope)}" if scope else member_of(item, scope), scope)
            value = variables[resolve(source).name]
            statements.append(Statement(variables[result.name], f"{value} if {path} is None else {path}({value})"))
        elif isinstance(item, CallItem):
            arguments = ", ".join(variables[resolve(n).name] for n in item.inputs)
            targets = ", ".join(variables[n.name] for n in item.outputs)
            statements.append(Statement(targets or None, f"{hierarchy.path(item.qualname, scope)}({arguments})"))
        else:
            statements.extend(writer.statements(item.node))
    result = returned(lambda node: variables[resolve(node).name])
    statements, result = _return_last(statements, result, kept, returned_nodes, resolve)
    return Forward([name for _, name in inputs], statements, result, writer.imports)


def _comment(text: str) -> str:
    """Comment text from validated module paths; anything else is replaced, never emitted."""
    return re.sub(r"[^A-Za-z0-9_.,:' ()-]", "?", text)


def _node_names(items: list[Item], scope: str, inputs: list[tuple[Node, str]], names: NameTable,
                module_types: dict) -> dict[str, str]:
    variables = {node.name: name for node, name in inputs}
    for item in items:
        if isinstance(item, NodeItem):
            variables[item.node.name] = names.claim(item.node.name, "node name")
        elif isinstance(item, CallItem):
            for position, node in enumerate(item.outputs):
                variables[node.name] = names.claim(_stem(item, position, scope, module_types), "variable name")
    return variables


def _no_constants(key: str) -> str:
    raise AssertionError(f"constant {key!r} inside a submodule's forward")


def _return_last(statements, result, items, returned_nodes, resolve):
    """``return self.fc(x)`` rather than ``x = self.fc(x)`` and ``return x``."""
    if not statements or not items or len(returned_nodes) != 1:
        return statements, result
    last, node = statements[-1], resolve(returned_nodes[0])
    defines = _defined(items[-1])
    if defines != [node] or last.target != result or _is_store(items[-1]):
        return statements, result
    if sum(1 for item in items for n in _used(item, resolve) if n is node):
        return statements, result
    return statements[:-1], last.expression


def _defined(item: Item) -> list[Node]:
    if isinstance(item, NodeItem):
        return [item.node]
    if isinstance(item, CallItem):
        return list(item.outputs)
    return []


def _used(item: Item, resolve) -> list[Node]:
    if isinstance(item, NodeItem):
        return [resolve(n) for n in item.node.inputs]
    if isinstance(item, CallItem):
        return [resolve(n) for n in item.inputs]
    return []


def _is_store(item: Item) -> bool:
    return isinstance(item, NodeItem) and item.node.op == "call_function" and item.node.target == "operator.setitem"


def _names(items: list[Item], scope: str, inputs: list[tuple[Node, str]], returned_nodes: list[Node],
           names: NameTable, resolve, module_types: dict) -> dict[str, str]:
    """A variable for every value: a value that dies where the next is made hands on its name."""
    last_use: dict[str, int] = {}
    for index, item in enumerate(items):
        for node in _used(item, resolve):
            last_use[node.name] = index
    for node in returned_nodes:
        last_use[resolve(node).name] = len(items)
    chain: dict[str, str] = {node.name: node.name for node, _ in inputs}  # value -> chain head
    heads: dict[str, Item | str] = {node.name: name for node, name in inputs}
    for index, item in enumerate(items):
        defined = _defined(item)
        if not defined:
            continue
        passes_on = None
        if len(defined) == 1 and not _is_store(item):
            passes_on = next((n for n in _used(item, resolve) if last_use.get(n.name) == index
                              and n.name in chain), None)
        if passes_on is not None:
            chain[defined[0].name] = chain[passes_on.name]
            continue
        for position, node in enumerate(defined):
            chain[node.name] = node.name
            heads[node.name] = (item, position)
    members: dict[str, set[str]] = {}  # chain head -> the children its operations call
    for index, item in enumerate(items):
        for node in _defined(item):
            member = member_of(item, scope)
            if member is not None:
                members.setdefault(chain[node.name], set()).add(member)
    variables: dict[str, str] = {}
    for head, origin in heads.items():
        if isinstance(origin, str):
            variables[head] = origin
        elif len(members.get(head, ())) > 1:  # a path through several layers: ``out``, as people write
            variables[head] = names.claim("out", "variable name")
        else:
            variables[head] = names.claim(_stem(*origin, scope, module_types), "variable name")
    return {value: variables[head] for value, head in chain.items()}


def _stem(item: Item, position: int, scope: str, module_types: dict) -> str:
    """A name for the value an item makes: its module's, function's or method's name."""
    if isinstance(item, CallItem):
        parts = item.qualname[len(scope) + 1 if scope else 0:].split(".")
        named = [p for p in parts if not p.isdigit()]
        if named:  # ``self.blocks[0]``: the container's name and the index
            text = "_".join([named[-1], *parts[parts.index(named[-1]) + 1:]][-2:]) if parts[-1].isdigit() else named[-1]
        else:  # ``getattr(self, "2")``: the module's kind and its index
            text = f"{module_types.get(item.qualname, 'module')}_{parts[-1]}"
    else:
        node = item.node
        if node.op in ("call_module", "get_attr"):
            parts = [p for p in node.target.split(".") if not p.isdigit()]
            text = parts[-1] if parts else "module"
        elif node.op == "constant":
            text = "constant"
        else:
            text = [p for p in node.target.split(".") if p.strip("_")][-1]
    text = identifier_from(text.strip("_")).lower() if text.strip("_") else "value"
    return text if not text[0].isdigit() else f"value_{text}"
