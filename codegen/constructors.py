"""Leaf modules as constructor calls with their real arguments: ``torch.nn.Conv2d(3, 64, kernel_size=7)``."""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch

from retiarii_ir.errors import UnsafeTargetError
from retiarii_ir.module_spec import ModuleSpec, module_signature
from retiarii_ir.node import Node
from retiarii_ir.targets import resolve_module_class

from .errors import CodegenError
from .literals import literal
from .names import check_dotted, is_identifier


def _no_nodes(node: Node) -> str:
    raise CodegenError(f"a module constructor argument refers to node {node.name!r}")


def constructor_call(spec: ModuleSpec, what: str) -> str:
    """The expression that builds a fresh module of ``spec``; the first required arguments positional."""
    callee, arguments, _ = constructor_arguments(spec, what)
    return f"{callee}({', '.join(f'{k}={v}' if k else v for k, _, v in arguments)})"


def constructor_arguments(spec: ModuleSpec, what: str) -> tuple[str, list[tuple[str | None, str, str]], dict]:
    """``(class path, [(keyword or None, parameter name, source)], {parameter: default source})``
    for ``spec``: the arguments ``constructor_call`` writes, and the defaults of those it leaves out."""
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
    arguments = [(None, k, argument(kwargs[k], what)) for k in positional]
    arguments += [(k, k, argument(v, what)) for k, v in kwargs.items() if k not in positional]
    return spec.type, arguments, dict(_defaults(cls))


@lru_cache(maxsize=256)
def _defaults(cls: type) -> dict:
    """The source of each constructor default that can be written as a literal."""
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return {}
    found = {}
    for param in params:
        if param.default is not param.empty:
            try:
                found[param.name] = literal(param.default, _no_nodes, "default")
            except CodegenError:
                continue
    return found


def argument(value: object, what: str) -> str:
    """A constructor argument as source: modules (``TransformerEncoder``'s ``encoder_layer``)
    as their own constructor calls, inside containers too; everything else as a literal."""
    if isinstance(value, ModuleSpec):
        return constructor_call(value, what)
    if type(value) in (list, tuple) and _holds_module(value):
        items = [argument(v, what) for v in value]
        if type(value) is list:
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if type(value) is dict and _holds_module(value):
        if not all(type(k) is str for k in value):
            raise CodegenError(f"{what}: dict keys of a constructor argument must be strings")
        return "{" + ", ".join(f"{literal(k, _no_nodes, what)}: {argument(v, what)}" for k, v in value.items()) + "}"
    return literal(value, _no_nodes, what)


def _holds_module(value: object) -> bool:
    if isinstance(value, ModuleSpec):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_module(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_module(v) for v in value.values())
    return False


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
    """What must not change when an argument is simplified (``module_signature``), or None
    when the class refuses the arguments."""
    try:
        with torch.device("meta"):
            module = ModuleSpec(type_name, kwargs).build()
    except Exception:  # noqa: BLE001 - an argument the class refuses: keep the recorded form
        return None
    return module_signature(module)


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
