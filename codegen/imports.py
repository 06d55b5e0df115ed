"""The non-torch functions a graph calls, imported by name at the top of the generated file.

Tracing trusts the model's own code, so a graph may call, say, ``userpkg.ops.stochastic_depth``.
Each such function is resolved (with the graph's trust) to the object itself and imported
from the module that really defines it: ``from userpkg.ops.stochastic_depth import
stochastic_depth``. A graph that calls only torch gets no import beyond ``import torch``.
"""

from __future__ import annotations

from retiarii_ir.errors import UnsafeTargetError
from retiarii_ir.graph import Graph
from retiarii_ir.targets import package_of, resolve_function

from .errors import CodegenError
from .literals import function_name
from .names import NameTable, is_identifier

STANDARD_ROOTS = ("torch", "operator", "math", "builtins")


class Imports:
    """``from module import name [as alias]`` for every foreign function of ``graph``; the local
    name each call is written with (claimed in the module scope, so nothing shadows it)."""

    def __init__(self, graph: Graph, module_scope: NameTable) -> None:
        self.lines: list[str] = []
        self.bindings: list[str] = []  # aten operators bound once, below the imports
        self._binder: str | None = None  # the module-level helper that binds them
        self._callee: dict[str, str] = {}
        for node in graph.nodes:
            if node.op != "call_function" or node.target in self._callee:
                continue
            path = function_name(node.target, f"node {node.name!r} function")
            parts = path.split(".")
            if parts[:3] == ["torch", "ops", "aten"] and len(parts) == 5:
                self._callee[path] = self._bind(path, parts[3], parts[4], module_scope)
            elif parts[0] not in STANDARD_ROOTS:
                self._callee[path] = self._import(path, graph, module_scope, node.name)

    def _bind(self, path: str, op: str, overload: str, module_scope: NameTable) -> str:
        """An aten operator (what ``torch.export`` traces to) as a module-level name bound to the
        operator itself: calling the ``OpOverload`` wrapper costs a Python call each time, which
        made such generated code several percent slower than the model it came from."""
        if self._binder is None:
            self._binder = module_scope.claim("_bound", "aten binder")
            self.bindings += ["", "", f"def {self._binder}(operator):",
                              '    """An aten operator without its Python wrapper (a call each time it runs)."""',
                              '    return getattr(operator, "_op", operator)', "", ""]
        name = module_scope.claim(f"aten_{op.strip('_')}_{overload}", "aten operator")
        self.bindings.append(f"{name} = {self._binder}({path})")
        return name

    def _import(self, path: str, graph: Graph, module_scope: NameTable, node_name: str) -> str:
        try:
            fn = resolve_function(path, graph.trust)
        except UnsafeTargetError as e:
            raise CodegenError(f"node {node_name!r}: {e}") from None
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
        if package_of(fn) is None or not isinstance(module, str) or f"{module}.{qualname}" != path:
            raise CodegenError(f"node {node_name!r}: {path} is not the module-level name of the function it finds")
        first, _, rest = qualname.partition(".")
        if not is_identifier(first):
            raise CodegenError(f"node {node_name!r}: {path} cannot be imported by name")
        alias = module_scope.claim(first, "imported name")
        self.lines.append(f"from {module} import {first}" + (f" as {alias}" if alias != first else ""))
        return f"{alias}.{rest}" if rest else alias

    def callee(self, path: str) -> str | None:
        """The expression that calls ``path`` in generated code, when it is imported."""
        return self._callee.get(path)

    def is_bound(self, path: str) -> bool:
        """Whether ``path`` is an aten operator bound at module level (still a torch function)."""
        return path.startswith("torch.ops.aten.") and path in self._callee

    @property
    def names(self) -> set[str]:
        return {c.split(".")[0] for c in self._callee.values()} | ({self._binder} if self._binder else set())
