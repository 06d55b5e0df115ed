"""A readable listing of a graph: one line per node, with its type."""

from __future__ import annotations

from typing import Any

from .node import Node


def format_value(value: Any) -> str:
    """An argument as it would read in source: nodes by name, constants by repr."""
    if isinstance(value, Node):
        return value.name
    if isinstance(value, tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, slice):
        parts = [format_value(p) if p is not None else "" for p in (value.start, value.stop, value.step)]
        return ":".join(parts[:2]) + (f":{parts[2]}" if value.step is not None else "")
    if value is Ellipsis:
        return "..."
    return repr(value)


def format_call(node: Node) -> str:
    args = [format_value(a) for a in node.args]
    args += [f"{k}={format_value(v)}" for k, v in node.kwargs.items()]
    return ", ".join(args)


def format_node(node: Node, width: int = 0) -> str:
    graph = node.graph
    if node.op == "input":
        default = f" = {format_value(node.args[0])}" if node.args else ""
        return f"  {node.name:<{width}} = input {node.target}{default}  : {node.type}"
    if node.op == "output":
        return f"  return {format_call(node)}"
    if node.op == "call_module":
        spec = graph.modules.get(node.target)
        what = f"{node.target}<{spec.class_name if spec else '?'}>({format_call(node)})"
    elif node.op == "call_method":
        what = f"{format_value(node.args[0])}.{node.target}({', '.join(format_call(node).split(', ')[1:])})" \
            if node.args else f".{node.target}()"
    elif node.op == "call_function":
        what = f"{node.target}({format_call(node)})"
    elif node.op == "get_attr":
        what = f"self.{node.target}"
    else:
        what = f"constant {node.target}"
    return f"  {node.name:<{width}} = {what}  : {node.type}"


def format_graph(graph) -> str:
    width = max((len(n.name) for n in graph.nodes), default=0)
    signature = ", ".join(f"{n.name}: {n.type}" for n in graph.inputs)
    out_type = graph.output.type if any(n.op == "output" for n in graph.nodes) else "?"
    lines = [f"graph {graph.name}({signature}) -> {out_type}:"]
    lines += [format_node(n, width) for n in graph.nodes]
    return "\n".join(lines)
