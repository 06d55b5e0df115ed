"""Run a Graph, node by node, against a module tree that holds its weights.

``Interpreter`` is the reference semantics of the IR: generated code and merged graphs
are checked against it. ``build_module`` makes an nn.Module from a graph alone (fresh
weights, the original state_dict keys) whose forward is the interpreter.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

from . import limits
from .errors import IRError, NodeExecutionError, first_line
from .graph import Graph
from .node import TRAINING_FLAG, Node, map_args
from .targets import (AllocationBudget, check_arguments, check_call, check_method, check_method_call,
                      check_receiver, check_value, resolve_function)
from .types import dtype_from_name


class Interpreter:
    """Executes ``graph`` with modules, parameters and buffers looked up in ``root``."""

    def __init__(self, graph: Graph, root: nn.Module, trust: Iterable[str] = ()) -> None:
        self.graph = graph
        self.root = root
        self.trust = graph.trusted(trust)
        self._functions: dict[str, Callable[..., Any]] = {}
        self.budget = AllocationBudget()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.budget = AllocationBudget()
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
        return bind_inputs(self.graph, args, kwargs)

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
        what = f"an argument of node {node.name!r}"
        if op == "call_function":
            function = self.function(node.target)
            check_call(node.target, node.args, node.kwargs, f"node {node.name!r}")
            check_arguments((args, kwargs), what)
            self.budget.charge(node.target, args, kwargs, f"node {node.name!r}")
            if function is getattr:
                check_receiver(args[0], args[1], "attribute")
                return check_value(function(*args, **kwargs), f"attribute {args[1]!r} read by node {node.name!r}")
            return function(*args, **kwargs)
        if op == "call_method":
            if not args:
                raise IRError(f"node {node.describe()} calls a method without a receiver")
            receiver, *rest = args
            name = check_method(node.target)
            check_method_call(name, node.kwargs, f"node {node.name!r}")
            check_receiver(receiver, name)
            check_arguments((rest, kwargs), what)
            return getattr(receiver, name)(*rest, **kwargs)
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


def bind_inputs(graph: Graph, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Input node name -> value, matching ``args`` and ``kwargs`` to ``graph``'s inputs the way
    Python binds a call (defaults included); TypeError naming the inputs otherwise. Running a
    graph and inlining one into a call site both bind this way."""
    inputs = graph.inputs
    taken = ", ".join(n.target for n in inputs)
    if len(args) > len(inputs):
        raise TypeError(f"{graph.name} takes {len(inputs)} inputs ({taken}) but {len(args)} were given")
    unknown = set(kwargs) - {n.target for n in inputs}
    if unknown:
        raise TypeError(f"{graph.name} got unexpected keyword inputs {sorted(unknown)}; it takes {taken}")
    env: dict[str, Any] = {}
    for i, node in enumerate(inputs):
        if i < len(args):
            env[node.name] = args[i]
        elif node.target in kwargs:
            env[node.name] = kwargs[node.target]
        elif node.args:
            env[node.name] = node.args[0]
        else:
            raise TypeError(f"{graph.name} is missing input {node.target!r}")
    return env


def fetch_attribute(root: nn.Module, qualname: str) -> Any:
    """A parameter, buffer or the train/eval flag: never a method or submodule object."""
    owner, _, attr = qualname.rpartition(".")
    module = root.get_submodule(owner) if owner else root
    value = getattr(module, attr)
    if qualname == TRAINING_FLAG or isinstance(value, torch.Tensor):
        return value
    raise IRError(f"attribute {qualname!r} is a {type(value).__name__}, not a parameter or buffer")


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


def _spec_bytes(qualname: str, spec: Any, trust: tuple[str, ...]) -> int:
    """Bytes one module's state would take, measured on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module = _checked_build(qualname, spec, trust)
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _checked_build(qualname: str, spec: Any, trust: tuple[str, ...]) -> nn.Module:
    try:
        return spec.build(trust)
    except IRError:
        raise
    except Exception as e:  # noqa: BLE001 - the constructor refused the recorded arguments
        raise IRError(f"module {qualname!r} ({spec.type}) cannot be built from its recorded "
                      f"arguments: {first_line(e)}") from None


def graph_bytes(graph: Graph, trust: Iterable[str] = ()) -> int:
    """What building ``graph`` would allocate for its modules, attributes and constants."""
    trust = graph.trusted(trust)
    total = sum(_spec_bytes(q, spec, trust) for q, spec in graph.modules.items())
    for attr in graph.attributes.values():
        total += math.prod(attr.shape) * torch.empty((), dtype=dtype_from_name(attr.dtype)).element_size()
    return total + sum(t.numel() * t.element_size() for t in graph.constants.values())


def check_buildable(graph: Graph, trust: Iterable[str] = (), max_bytes: int | None = None) -> None:
    """Refuse, allocating nothing, what building ``graph`` would refuse: a module whose recorded
    arguments its constructor rejects (tried on the meta device), or weights over ``max_bytes``
    (default ``limits.MAX_BUILD_BYTES``). ``build_module`` and generated code share this check."""
    limit = limits.MAX_BUILD_BYTES if max_bytes is None else max_bytes
    try:
        needed = graph_bytes(graph, trust)
    except IRError:
        raise
    except (ValueError, TypeError, RuntimeError, OverflowError) as e:
        raise IRError(f"graph {graph.name!r} cannot be sized: {first_line(e)}") from None
    if needed > limit:
        raise IRError(f"graph {graph.name!r} would allocate {needed / 2**20:,.1f} MiB of weights, "
                      f"over the limit of {limit / 2**20:,.1f} MiB; pass max_bytes= to build it anyway")


class IRModule(nn.Module):
    """An nn.Module made from a graph alone; ``forward`` interprets the graph."""

    def __init__(self, graph: Graph, trust: Iterable[str] = (), device: torch.device | str | None = None,
                 max_bytes: int | None = None) -> None:
        super().__init__()
        self.graph = graph
        self._trust = graph.trusted(trust)
        if torch.device(device or "cpu").type != "meta":  # the meta device allocates nothing
            check_buildable(graph, self._trust, max_bytes)
        try:
            self._populate(graph, device)
            self._interpreter = Interpreter(graph, self, self._trust)
        except IRError:
            raise
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, RecursionError) as e:
            raise IRError(f"graph {graph.name!r} cannot be built: {first_line(e)}") from None

    def _populate(self, graph: Graph, device: torch.device | str | None) -> None:
        with torch.device(device or "cpu"):
            for qualname, spec in sorted(graph.modules.items()):
                set_submodule(self, qualname, _checked_build(qualname, spec, self._trust))
            for qualname, attr in sorted(graph.attributes.items()):
                owner, name = _owner(self, qualname)
                value = (attr.value.detach().to(device or "cpu", copy=True) if attr.value is not None
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

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._interpreter.run(*args, **kwargs)


def build_module(graph: Graph, trust: Iterable[str] = (), device: torch.device | str | None = None,
                 max_bytes: int | None = None) -> IRModule:
    """An nn.Module for ``graph`` with fresh weights and the original state_dict keys; refuses
    a graph whose weights would take more than ``max_bytes`` (default ``limits.MAX_BUILD_BYTES``)."""
    return IRModule(graph, trust, device, max_bytes)


def run_graph(graph: Graph, root: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """Run ``graph`` once with the weights of ``root`` (e.g. the traced model itself)."""
    return Interpreter(graph, root).run(*args, **kwargs)
