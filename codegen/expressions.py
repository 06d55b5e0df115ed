"""One node, one line of ``forward``: operators as operators, calls with their real keywords."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retiarii_ir.errors import UnsafeTargetError
from retiarii_ir.node import TRAINING_FLAG, Node
from retiarii_ir.targets import check_attribute_path, check_call, check_method, check_method_call, resolve_function

from .errors import CodegenError
from .literals import function_name, function_path, literal, operand, subscript
from .names import NameTable, identifier_from, is_identifier, is_public_attribute

if TYPE_CHECKING:
    from .hierarchy import Hierarchy
    from .imports import Imports

BINARY = {
    "add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%",
    "pow": "**", "matmul": "@", "and_": "&", "or_": "|", "xor": "^", "lshift": "<<",
    "rshift": ">>", "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
    "is_": "is", "is_not": "is not",
}
UNARY = {"neg": "-", "pos": "+", "invert": "~", "not_": "not "}
LINE = 80  # characters of a forward statement (after its indent) before black would wrap it


def _local_name(prefix: str) -> str:
    """``encoder.layer.0`` -> ``layer_0``: the container's name and the index."""
    parts = prefix.split(".")
    start = len(parts) - 1
    while start > 0 and parts[start].isdigit():
        start -= 1
    name = identifier_from("_".join(parts[start:]))
    return name if not name[0].isdigit() else f"module_{name}"


@dataclass(frozen=True)
class Statement:
    """``target = expression``, or the bare ``expression`` when ``target`` is None."""

    target: str | None
    expression: str


class ForwardWriter:
    """Writes the statements of ``forward``, one per node, in the graph's order."""

    def __init__(self, variables: dict[str, str], hierarchy: Hierarchy, constant_path: Callable[[str], str],
                 local_names: NameTable, imported: Imports | None = None) -> None:
        self.variables = variables
        self.hierarchy = hierarchy
        self.constant_path = constant_path
        self.local_names = local_names
        self.module_locals: dict[str, str] = {}  # owner module qualname -> local variable
        self.imports: set[str] = set()
        self.imported = imported

    def ref(self, node: Node) -> str:
        try:
            return self.variables[node.name]
        except KeyError:
            raise CodegenError(f"node {node.name!r} is read before it is defined") from None

    def statements(self, node: Node) -> list[Statement]:
        target = self.variables[node.name]
        what = f"node {node.name!r}"
        if node.op == "get_attr" and node.target == TRAINING_FLAG:
            return [Statement(target, "self.training")]
        if node.op == "get_attr":
            try:
                check_attribute_path(node.target, self.hierarchy.graph.modules, what)
            except UnsafeTargetError as e:
                raise CodegenError(f"{what}: {e}") from None
        if node.op in ("call_module", "get_attr"):
            return self._module_statements(node, target, what)
        if node.op == "constant":
            return [Statement(target, self.constant_path(node.target))]
        if node.op == "call_method":
            return [Statement(target, self._method(node, what))]
        if node.op == "call_function":
            return self._function(node, target, what)
        raise CodegenError(f"{what}: op {node.op!r} has no statement form")

    # ------------------------------------------------------------------ modules
    def _module_statements(self, node: Node, target: str, what: str) -> list[Statement]:
        """``target = self.a[0].b(x)``; a long line first binds the owner ``a_0 = self.a[0]`` to a local."""
        def text(path: str) -> str:
            return self._call(path, node, node.args, what) if node.op == "call_module" else path
        return self.module_statements(node.target, target, text)

    def module_statements(self, qualname: str, target: str | None, text: Callable[[str], str]) -> list[Statement]:
        """The statement ``target = text(path of qualname)``, the path's owner bound to a local
        first when the line would be too long to read."""
        found = self.hierarchy.owner_prefix(qualname)
        before: list[Statement] = []
        path = self.hierarchy.path(qualname)
        if found is not None:
            prefix, prefix_expression, rest = found
            line = f"{target} = {text(path)}" if target else text(path)
            if prefix not in self.module_locals and len(line) > LINE:
                self.module_locals[prefix] = self.local_names.claim(_local_name(prefix), "module local")
                before.append(Statement(self.module_locals[prefix], prefix_expression))
            if prefix in self.module_locals:
                path = self.module_locals[prefix] + rest
        return [*before, Statement(target, text(path))]

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
            check_method_call(name, node.kwargs, what)
        except UnsafeTargetError as e:
            raise CodegenError(f"{what}: {e}") from None
        if not node.args:
            raise CodegenError(f"{what}: method call {name!r} has no receiver")
        receiver = operand(node.args[0], self.ref, what)
        return self._call(f"{receiver}.{name}", node, node.args[1:], what)

    def _function(self, node: Node, target: str, what: str) -> list[Statement]:
        path = function_name(node.target, f"{what} function")
        callee = self.imported.callee(path) if self.imported is not None else None
        if callee is not None and not self.imported.is_bound(path):  # the model's own function, imported
            return [Statement(target, self._call(callee, node, node.args, what))]
        try:
            resolve_function(path)
            check_call(path, node.args, node.kwargs, what)
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
        if callee is not None:  # an aten operator, checked above and bound once at module level
            return [Statement(target, self._call(callee, node, node.args, what))]
        return [Statement(target, self._call(function_path(path, what), node, node.args, what))]

    def _builtin(self, node: Node, name: str, what: str) -> str:
        args = node.args
        if name != "getattr":
            return self._call(name, node, args, what)
        if len(args) not in (2, 3) or node.kwargs or not is_public_attribute(args[1]):
            raise CodegenError(f"{what}: getattr needs an object and a public attribute name, got {args[1:]!r}")
        if len(args) == 3:  # with a default: keep the call
            return self._call("getattr", node, args, what)
        return f"{operand(args[0], self.ref, what)}.{args[1]}"

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
