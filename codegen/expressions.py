"""One node, one line of ``forward``: operators as operators, calls with their real keywords."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from retiarii_ir.errors import UnsafeTargetError
from retiarii_ir.node import Node
from retiarii_ir.targets import check_method, resolve_function

from .errors import CodegenError
from .literals import function_path, literal, operand, subscript
from .names import check_dotted, is_identifier, is_public_attribute

BINARY = {
    "add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%",
    "pow": "**", "matmul": "@", "and_": "&", "or_": "|", "xor": "^", "lshift": "<<",
    "rshift": ">>", "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
    "is_": "is", "is_not": "is not",
}
UNARY = {"neg": "-", "pos": "+", "invert": "~", "not_": "not "}


@dataclass(frozen=True)
class Statement:
    """``target = expression``, or the bare ``expression`` when ``target`` is None."""

    target: str | None
    expression: str


class ForwardWriter:
    """Writes the statements of ``forward``, one per node, in the graph's order."""

    def __init__(self, variables: dict[str, str], module_path: Callable[[str], str],
                 constant_path: Callable[[str], str]) -> None:
        self.variables = variables
        self.module_path = module_path
        self.constant_path = constant_path
        self.imports: set[str] = set()

    def ref(self, node: Node) -> str:
        try:
            return self.variables[node.name]
        except KeyError:
            raise CodegenError(f"node {node.name!r} is read before it is defined") from None

    def statements(self, node: Node) -> list[Statement]:
        target = self.variables[node.name]
        what = f"node {node.name!r}"
        if node.op == "call_module":
            return [Statement(target, self._call(self.module_path(node.target), node, node.args, what))]
        if node.op == "get_attr":
            return [Statement(target, self.module_path(node.target))]
        if node.op == "constant":
            return [Statement(target, self.constant_path(node.target))]
        if node.op == "call_method":
            return [Statement(target, self._method(node, what))]
        if node.op == "call_function":
            return self._function(node, target, what)
        raise CodegenError(f"{what}: op {node.op!r} has no statement form")

    # ------------------------------------------------------------------ calls
    def _arguments(self, args: tuple, kwargs: dict, what: str) -> str:
        parts = [literal(a, self.ref, what) for a in args]
        for key, value in kwargs.items():
            if not is_identifier(key):
                raise CodegenError(f"{what}: keyword argument name {key!r} is not a plain identifier")
            parts.append(f"{key}={literal(value, self.ref, what)}")
        return ", ".join(parts)

    def _call(self, callee: str, node: Node, args: tuple, what: str) -> str:
        return f"{callee}({self._arguments(args, node.kwargs, what)})"

    def _method(self, node: Node, what: str) -> str:
        try:
            name = check_method(node.target)
        except UnsafeTargetError as e:
            raise CodegenError(f"{what}: {e}") from None
        if not node.args:
            raise CodegenError(f"{what}: method call {name!r} has no receiver")
        receiver = operand(node.args[0], self.ref, what)
        return self._call(f"{receiver}.{name}", node, node.args[1:], what)

    def _function(self, node: Node, target: str, what: str) -> list[Statement]:
        path = check_dotted(node.target, f"{what} function")
        try:
            resolve_function(path)
        except UnsafeTargetError as e:
            raise CodegenError(f"{what}: {e}") from None
        root, _, name = path.partition(".")
        if root == "operator":
            return self._operator(node, name, target, what)
        if root == "builtins":
            return [Statement(target, self._builtin(node, name, what))]
        if root == "math":
            self.imports.add("math")
            return [Statement(target, self._call(path, node, node.args, what))]
        return [Statement(target, self._call(function_path(path, what), node, node.args, what))]

    def _builtin(self, node: Node, name: str, what: str) -> str:
        args = node.args
        if name == "getattr":
            if len(args) != 2 or node.kwargs or type(args[1]) is not str:
                if len(args) >= 2 and type(args[1]) is str and not args[1].startswith("_"):
                    return self._call("getattr", node, args, what)
                raise CodegenError(f"{what}: getattr needs an object and an attribute name")
            if not is_public_attribute(args[1]):
                raise CodegenError(f"{what}: attribute {args[1]!r} is not a public attribute name")
            return f"{operand(args[0], self.ref, what)}.{args[1]}"
        return self._call(name, node, args, what)

    def _operator(self, node: Node, name: str, target: str, what: str) -> list[Statement]:
        args = node.args
        plain = not node.kwargs
        if name in BINARY and len(args) == 2 and plain:
            left, right = (operand(a, self.ref, what) for a in args)
            return [Statement(target, f"{left} {BINARY[name]} {right}")]
        if name in UNARY and len(args) == 1 and plain:
            return [Statement(target, f"{UNARY[name]}{operand(args[0], self.ref, what)}")]
        if name == "getitem" and len(args) == 2 and plain:
            return [Statement(target, f"{operand(args[0], self.ref, what)}[{subscript(args[1], self.ref, what)}]")]
        if name == "setitem" and len(args) == 3 and plain:
            container = operand(args[0], self.ref, what)
            store = Statement(None, f"{container}[{subscript(args[1], self.ref, what)}] = "
                                    f"{literal(args[2], self.ref, what)}")
            return [store, Statement(target, "None")]
        if name == "contains" and len(args) == 2 and plain:
            return [Statement(target, f"{operand(args[1], self.ref, what)} in {operand(args[0], self.ref, what)}")]
        self.imports.add("operator")
        return [Statement(target, self._call(f"operator.{name}", node, args, what))]


def output_expression(node: Node, ref: Callable[[Node], Any]) -> str:
    """What ``forward`` returns: the output node's structure of values."""
    what = f"output node {node.name!r}"
    if len(node.args) == 1 and not node.kwargs:
        return literal(node.args[0], ref, what)
    if node.kwargs:
        raise CodegenError(f"{what} has keyword arguments; an output is one (nested) value")
    return literal(tuple(node.args), ref, what)
