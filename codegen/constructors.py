"""Leaf modules as constructor calls with their real arguments: ``torch.nn.Conv2d(3, 64, kernel_size=7)``."""

from __future__ import annotations

import inspect

import torch

from retiarii_ir.errors import UnsafeTargetError
from retiarii_ir.module_spec import ModuleSpec
from retiarii_ir.node import Node
from retiarii_ir.targets import resolve_module_class

from .errors import CodegenError
from .names import check_dotted, is_identifier


def _no_nodes(node: Node) -> str:
    raise CodegenError(f"a module constructor argument refers to node {node.name!r}")


def constructor_call(spec: ModuleSpec, what: str) -> str:
    """The expression that builds a fresh module of ``spec``; the first required arguments positional."""
    from .literals import literal

    if not isinstance(spec, ModuleSpec):
        raise CodegenError(f"{what} is not described by a ModuleSpec")
    check_dotted(spec.type, f"{what} class")
    if spec.kwargs is None:
        raise CodegenError(
            f"{what} ({spec.type}) is opaque: its constructor arguments were not recovered at "
            f"trace time, so no source can rebuild it; replace it with a module whose arguments "
            f"are recoverable, or trace through it")
    if not spec.type.startswith("torch."):
        raise CodegenError(f"{what} is a {spec.type}, not a torch module; generated files import only torch")
    try:
        cls = resolve_module_class(spec.type)
    except UnsafeTargetError as e:
        raise CodegenError(f"{what}: {e}") from None
    for key in spec.kwargs:
        if not is_identifier(key):
            raise CodegenError(f"{what}: constructor argument name {key!r} is not a plain identifier")
    kwargs = _simplest_kwargs(spec)
    positional = _leading_required(cls, kwargs)
    parts = [literal(kwargs[k], _no_nodes, what) for k in positional]
    parts += [f"{k}={literal(v, _no_nodes, what)}" for k, v in kwargs.items() if k not in positional]
    return f"{spec.type}({', '.join(parts)})"


_SIMPLEST: dict[str, dict] = {}


def _simplest_kwargs(spec: ModuleSpec) -> dict:
    """``kernel_size=3`` rather than ``(3,)``, kept only where the module built is the same."""
    key = repr(spec)
    if key not in _SIMPLEST:
        kwargs = dict(spec.kwargs)
        reference = _signature(spec.type, kwargs)
        for name, value in spec.kwargs.items():
            if (isinstance(value, tuple) and value and len(set(value)) == 1 and type(value[0]) is int
                    and reference is not None):
                trial = {**kwargs, name: value[0]}
                if _signature(spec.type, trial) == reference:
                    kwargs = trial
        if len(_SIMPLEST) > 4096:
            _SIMPLEST.clear()
        _SIMPLEST[key] = kwargs
    return _SIMPLEST[key]


def _signature(type_name: str, kwargs: dict) -> tuple | None:
    """What must not change when an argument is simplified: printout and tensor shapes."""
    try:
        with torch.device("meta"):
            module = ModuleSpec(type_name, kwargs).build()
    except Exception:  # noqa: BLE001 - an argument the class refuses: keep the recorded form
        return None
    return repr(module), [(k, tuple(v.shape), v.dtype) for k, v in module.state_dict().items()]


def _leading_required(cls: type, kwargs: dict, limit: int = 2) -> list[str]:
    """The first (at most two) required arguments, written positionally as people do:
    ``Conv2d(3, 64, kernel_size=7)``, ``Linear(512, 10)``."""
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return []
    names: list[str] = []
    for param in params:
        if (param.kind is not param.POSITIONAL_OR_KEYWORD or param.default is not param.empty
                or param.name not in kwargs):
            break
        names.append(param.name)
    return names[:limit]
