"""Graph edits that mutators are made of: inline a subgraph, swap an op, insert on an edge.

Plain functions over a Graph (``Graph`` exposes each as a method). Each keeps the graph
in execution order and keeps ``modules``/``attributes``/``module_types`` in step with the
nodes, so the result validates and builds without further bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import GraphValidationError
from .graph import Graph
from .interpreter import bind_inputs
from .module_spec import ModuleSpec
from .node import Node, iter_nodes, map_args


def inline(graph: Graph, node: Node, sub: Graph, module_prefix: str,
           name_of: Callable[[str], str] | None = None) -> list[Node]:
    """Replace call node ``node`` by a copy of ``sub`` whose inputs read ``node``'s arguments.

    ``sub``'s modules and parameters move under ``module_prefix`` (its root module, if it
    is itself called, becomes ``module_prefix``); its node names become ``name_of(name)``
    (made unique). Returns the nodes added.
    """
    site_name = node.name
    name_of = name_of or (lambda n: f"{site_name}_{n}")
    graph.rename(node, graph.unique_name(f"{site_name}_replaced"))  # frees its name for the inlined nodes
    rename = lambda q: _prefixed(module_prefix, q)
    env: dict[str, Any] = _bind_inputs(node, sub)
    added: list[Node] = []
    for sub_node in sub.nodes:
        if sub_node.op in ("input", "output"):
            continue
        target = sub_node.target
        if sub_node.op in ("call_module", "get_attr"):
            target = rename(target)
        elif sub_node.op == "constant":
            target = graph.unique_name(f"{module_prefix.replace('.', '_')}_{target}")
            graph.constants[target] = sub.constants[sub_node.target].clone()
        new = graph.add_node(sub_node.op, target, map_args(sub_node.args, lambda n: env[n.name]),
                             map_args(sub_node.kwargs, lambda n: env[n.name]),
                             name=graph.unique_name(name_of(sub_node.name)), type=sub_node.type,
                             scope=rename(sub_node.scope), before=node)
        new.meta = dict(sub_node.meta)
        env[sub_node.name] = new
        added.append(new)
    result = map_args(sub.output.args[0], lambda n: env[n.name])
    if not isinstance(result, Node):
        if not any(True for _ in iter_nodes(result)) or not isinstance(result, (tuple, list)):
            raise GraphValidationError(f"cannot inline into {node.describe()}: the subgraph returns "
                                       f"{type(result).__name__}, not a value built from nodes")
        result = graph.add_node("call_function", f"builtins.{type(result).__name__}", (list(result),),
                                name=graph.unique_name(site_name), scope=node.scope, before=node)
        added.append(result)
    graph.replace_all_uses(node, result)
    graph.remove_node(node)
    forget_modules(graph, module_prefix)
    for qualname, spec in sub.modules.items():
        graph.modules[rename(qualname)] = spec
    for qualname, attr in sub.attributes.items():
        graph.attributes[rename(qualname)] = attr
    for qualname, type_name in sub.module_types.items():
        graph.module_types[rename(qualname)] = type_name
    for alias, original in sub.aliases.items():
        graph.aliases[rename(alias)] = rename(original)
    return added


def _prefixed(prefix: str, qualname: str) -> str:
    return f"{prefix}.{qualname}" if qualname and prefix else (qualname or prefix)


def _bind_inputs(node: Node, sub: Graph) -> dict[str, Any]:
    try:
        return bind_inputs(sub, node.args, node.kwargs)
    except TypeError as e:
        raise GraphValidationError(f"cannot inline into {node.describe()}: {e}") from None


def forget_modules(graph: Graph, prefix: str) -> None:
    """Drop the specs and class names of ``prefix`` and below unless a node still calls them."""
    called = {n.target for n in graph.nodes if n.op == "call_module"}
    inside = lambda q: q == prefix or q.startswith(prefix + ".")
    for qualname in [q for q in graph.modules if inside(q) and q not in called]:
        del graph.modules[qualname]
    if not any(inside(q) for q in called):
        for qualname in [q for q in graph.module_types if inside(q)]:
            del graph.module_types[qualname]


def set_module(graph: Graph, qualname: str, spec: ModuleSpec) -> None:
    """Define (or redefine) the module at ``qualname``."""
    if not isinstance(spec, ModuleSpec):
        raise TypeError(f"set_module needs a ModuleSpec, got {type(spec).__name__}")
    graph.modules[qualname] = spec
    graph.module_types[qualname] = spec.class_name


def replace_op(graph: Graph, node: Node, op: str, target: str, args: tuple | None = None,
               kwargs: dict | None = None, module: ModuleSpec | None = None) -> Node:
    """Make ``node`` compute something else, keeping its name and its users."""
    if op == "call_module":
        if module is not None:
            set_module(graph, target, module)
        elif target not in graph.modules:
            raise GraphValidationError(f"replace_op on {node.describe()}: module {target!r} is not defined; "
                                       f"pass module=ModuleSpec(...)")
    old_target = node.target if node.op == "call_module" else None
    node.op, node.target = op, target
    if args is not None:
        node.args = tuple(args)
    if kwargs is not None:
        node.kwargs = dict(kwargs)
    if old_target is not None and old_target != target:
        forget_modules(graph, old_target)
    return node


def insert_on_edge(graph: Graph, source: Node, user: Node, op: str, target: str, args: tuple | None = None,
                   kwargs: dict | None = None, module: ModuleSpec | None = None, name: str | None = None) -> Node:
    """Put a new node between ``source`` and ``user``; it reads ``args`` (default: the source)."""
    if source not in user.inputs:
        raise GraphValidationError(f"insert_on_edge: {user.describe()} does not read {source.name!r}")
    if op == "call_module" and module is not None:
        set_module(graph, target, module)
    new = graph.add_node(op, target, (source,) if args is None else args, kwargs, name=name,
                         scope=user.scope, before=user)
    graph.replace_all_uses(source, new, only_in=[user])
    return new


def add_edge(graph: Graph, source: Node, dest: Node, combine: str = "operator.add", name: str | None = None) -> Node:
    """Merge ``source`` into ``dest``'s value: every user of ``dest`` now reads ``combine(dest, source)``."""
    users = graph.users(dest)
    anchor = max(dest, source, key=lambda n: graph.nodes.index(n))
    if any(graph.nodes.index(u) <= graph.nodes.index(source) for u in users):
        raise GraphValidationError(f"add_edge: {source.name!r} is computed after a user of {dest.name!r}; "
                                   f"the new edge would form a cycle")
    new = graph.add_node("call_function", combine, (dest, source), name=name, scope=dest.scope, after=anchor)
    graph.replace_all_uses(dest, new, only_in=users)
    return new


def bypass(graph: Graph, node: Node, replacement: Node | None = None) -> None:
    """Remove ``node``; its users read ``replacement`` (default: its first input)."""
    if replacement is None:
        if not node.inputs:
            raise GraphValidationError(f"cannot bypass {node.describe()}: it reads no node")
        replacement = node.inputs[0]
    graph.replace_all_uses(node, replacement)
    graph.remove_node(node)
    if node.op == "call_module":
        forget_modules(graph, node.target)


def relocate(graph: Graph, old: str, new: str) -> Graph:
    """Move every module, parameter and scope under ``old`` to ``new`` ('' is the root).

    Qualified names outside ``old`` are dropped from ``module_types`` (a tracing wrapper).
    """
    def move(q: str) -> str:
        if q == old:
            return new
        if not q.startswith(old + "."):
            raise GraphValidationError(f"relocate: {q!r} is not under {old!r}")
        return _prefixed(new, q[len(old) + 1:])

    inside = lambda q: q == old or q.startswith(old + ".")
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr"):
            node.target = move(node.target)
        node.scope = move(node.scope) if inside(node.scope) else ""
    graph.modules = {move(q): s for q, s in graph.modules.items()}
    graph.attributes = {move(q): a for q, a in graph.attributes.items()}
    graph.module_types = {move(q): t for q, t in graph.module_types.items() if inside(q)}
    graph.aliases = {move(a): move(o) for a, o in graph.aliases.items() if inside(a) and inside(o)}
    return graph


def eliminate_dead_code_keeping_state(graph: Graph, drop_classes: frozenset[str] = frozenset()) -> list[str]:
    """Remove dead nodes but keep the modules they called (their weights stay in the
    state_dict, as in the eager model), except modules of the classes in ``drop_classes``."""
    called_before = {n.target for n in graph.nodes if n.op == "call_module"}
    removed = graph.eliminate_dead_code()
    called_now = {n.target for n in graph.nodes if n.op == "call_module"}
    for qualname in called_before - called_now:
        if graph.modules[qualname].class_name in drop_classes:
            del graph.modules[qualname]
    return removed
