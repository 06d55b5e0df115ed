"""Run a Graph, node by node, against a module tree that holds its weights.

``Interpreter`` is the reference semantics of the IR: generated code and merged graphs
are checked against it. ``build_module`` makes an nn.Module from a graph alone (fresh
weights, the original state_dict keys) whose forward is the interpreter.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from .errors import IRError, first_line
from .graph import Graph
from .node import Node, map_args
from .targets import check_method, resolve_function
from .types import dtype_from_name


class NodeExecutionError(IRError):
    """A node failed while running; names the node and the types it was given."""

    def __init__(self, message: str, node_name: str, reason: str, given: str = "") -> None:
        super().__init__(message)
        self.node_name = node_name
        self.reason = reason
        self.given = given  # the argument types the node was actually called with


class Interpreter:
    """Executes ``graph`` with modules, parameters and buffers looked up in ``root``."""

    def __init__(self, graph: Graph, root: nn.Module, trust: Iterable[str] = ()) -> None:
        self.graph = graph
        self.root = root
        self.trust = tuple(trust)
        self._functions: dict[str, Callable[..., Any]] = {}

    def run(self, *args: Any, **kwargs: Any) -> Any:
        env = self.bind_inputs(args, kwargs)
        for node in self.graph.nodes:
            if node.op == "input":
                continue
            value = self.run_node(node, env)
            if node.op == "output":
                return value
            env[node.name] = value
        raise IRError(f"graph {self.graph.name!r} has no output node")

    def bind_inputs(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """Match call arguments to input nodes the way Python binds a forward call."""
        inputs = self.graph.inputs
        if len(args) > len(inputs):
            raise TypeError(f"{self.graph.name} takes {len(inputs)} inputs "
                            f"({', '.join(n.target for n in inputs)}) but {len(args)} were given")
        env: dict[str, Any] = {}
        names = {n.target for n in inputs}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"{self.graph.name} got unexpected keyword inputs {sorted(unknown)}; "
                            f"it takes {', '.join(n.target for n in inputs)}")
        for i, node in enumerate(inputs):
            if i < len(args):
                env[node.name] = args[i]
            elif node.target in kwargs:
                env[node.name] = kwargs[node.target]
            elif node.args:
                env[node.name] = node.args[0]
            else:
                raise TypeError(f"{self.graph.name} is missing input {node.target!r}")
        return env

    def run_node(self, node: Node, env: dict[str, Any]) -> Any:
        args = map_args(node.args, lambda n: env[n.name])
        kwargs = map_args(node.kwargs, lambda n: env[n.name])
        try:
            return self._dispatch(node, args, kwargs)
        except IRError:
            raise
        except Exception as e:
            given = ", ".join(_describe_value(a) for a in args)
            raise NodeExecutionError(_failure_message(node, given, e), node.name, first_line(e), given) from e

    def _dispatch(self, node: Node, args: tuple, kwargs: dict) -> Any:
        op = node.op
        if op == "call_module":
            return self.root.get_submodule(node.target)(*args, **kwargs)
        if op == "call_function":
            return self.function(node.target)(*args, **kwargs)
        if op == "call_method":
            receiver, *rest = args
            return getattr(receiver, check_method(node.target))(*rest, **kwargs)
        if op == "get_attr":
            return fetch_attribute(self.root, node.target)
        if op == "constant":
            return self.constant(node.target)
        if op == "output":
            return args[0] if len(args) == 1 and not kwargs else args
        raise IRError(f"cannot run node {node.describe()}")

    def function(self, target: str) -> Callable[..., Any]:
        fn = self._functions.get(target)
        if fn is None:
            fn = self._functions[target] = resolve_function(target, self.trust)
        return fn

    def constant(self, key: str) -> torch.Tensor:
        holder = getattr(self.root, "_ir_constants", None)
        if isinstance(holder, nn.Module) and hasattr(holder, key):
            return getattr(holder, key)
        return self.graph.constants[key]


def fetch_attribute(root: nn.Module, qualname: str) -> Any:
    owner, _, attr = qualname.rpartition(".")
    module = root.get_submodule(owner) if owner else root
    return getattr(module, attr)


def _describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')}{list(value.shape)}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_describe_value(v) for v in value) + ")"
    return type(value).__name__


def _failure_message(node: Node, given: str, error: Exception) -> str:
    inputs = ", ".join(f"{i.name}: {i.type}" for i in node.inputs) or "no node inputs"
    return (f"node {node.describe()} in scope {node.scope or '<root>'!r} failed: {first_line(error)}\n"
            f"  reads {inputs}\n  got ({given})")


# ---------------------------------------------------------------------- building
def set_submodule(root: nn.Module, qualname: str, module: nn.Module) -> None:
    """Place ``module`` at ``a.b.c``, creating empty container modules on the way."""
    owner = root
    *path, last = qualname.split(".")
    for part in path:
        child = owner._modules.get(part)
        if child is None:
            child = nn.Module()
            owner.add_module(part, child)
        owner = child
    owner.add_module(last, module)


def _owner(root: nn.Module, qualname: str) -> tuple[nn.Module, str]:
    owner_name, _, attr = qualname.rpartition(".")
    if owner_name:
        try:
            return root.get_submodule(owner_name), attr
        except AttributeError:
            set_submodule(root, owner_name, nn.Module())
            return root.get_submodule(owner_name), attr
    return root, attr


def _share(root: nn.Module, alias: str, original: str) -> None:
    """Make ``alias`` the very same module or tensor as ``original`` (tied weights)."""
    owner, attr = _owner(root, original)
    if attr not in owner._parameters and attr not in owner._buffers:
        if attr not in owner._modules:  # a module with no state of its own: an empty container
            owner.add_module(attr, nn.Module())
        set_submodule(root, alias, owner._modules[attr])
        return
    target, name = _owner(root, alias)
    if attr in owner._parameters:
        target.register_parameter(name, owner._parameters[attr])
    else:
        target.register_buffer(name, owner._buffers[attr], persistent=name not in target._non_persistent_buffers_set)


class IRModule(nn.Module):
    """An nn.Module made from a graph alone; ``forward`` interprets the graph."""

    def __init__(self, graph: Graph, trust: Iterable[str] = (), device: torch.device | str | None = None) -> None:
        super().__init__()
        self.graph = graph
        self._trust = tuple(trust)
        with torch.device(device or "cpu"):
            for qualname, spec in sorted(graph.modules.items()):
                set_submodule(self, qualname, spec.build(self._trust))
            for qualname, attr in sorted(graph.attributes.items()):
                owner, name = _owner(self, qualname)
                value = (attr.value.clone() if attr.value is not None
                         else torch.zeros(attr.shape, dtype=dtype_from_name(attr.dtype)))
                if attr.kind == "parameter":
                    owner.register_parameter(name, nn.Parameter(value, requires_grad=attr.requires_grad))
                else:
                    owner.register_buffer(name, value, persistent=attr.persistent)
            for alias, original in sorted(graph.aliases.items()):
                _share(self, alias, original)
            if graph.constants:
                holder = nn.Module()
                for key, tensor in graph.constants.items():
                    holder.register_buffer(key, tensor.clone(), persistent=False)
                self._ir_constants = holder
        self._interpreter = Interpreter(graph, self, self._trust)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._interpreter.run(*args, **kwargs)


def build_module(graph: Graph, trust: Iterable[str] = (), device: torch.device | str | None = None) -> IRModule:
    """An nn.Module for ``graph`` with fresh weights and the original state_dict keys."""
    return IRModule(graph, trust, device)


def run_graph(graph: Graph, root: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """Run ``graph`` once with the weights of ``root`` (e.g. the traced model itself)."""
    return Interpreter(graph, root).run(*args, **kwargs)
