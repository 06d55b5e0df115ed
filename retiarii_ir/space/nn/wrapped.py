"""torch.nn layers that accept ValueChoice arguments (``retiarii_ir.nn.Conv2d(3, width, ks)``).

Given plain arguments, or under ``fixed_arch``, the constructor returns the plain torch
layer itself. Given choices, it builds the layer with every choice at its first value and
remembers which constructor argument depends on which choice, so tracing can turn the
layer into a choice point whose module spec the ValueChoice mutator rewrites.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ...module_spec import ModuleSpec, spec_of
from .context import current_fixed
from .value_choice import ValueExpr, default_of, leaves_of

_WRAPPERS: dict[type, type] = {}
_COPYING = "__retiarii_copy__"  # what copy.deepcopy passes to __new__ (see __getnewargs_ex__)


def _copying(args: tuple) -> bool:
    """Whether copy.deepcopy is re-creating a wrapper (``==`` on a choice raises, so no tuple compare)."""
    return len(args) == 1 and isinstance(args[0], str) and args[0] == _COPYING


class ValueChoiceLayer:
    """Marker base of wrapped layers; ``value_args`` maps constructor argument -> expression."""

    value_args: dict[str, Any]
    base_class: type


def wrap_layer(base: type) -> type:
    """The ValueChoice-aware twin of a torch.nn layer class (cached)."""
    if not (isinstance(base, type) and issubclass(base, nn.Module)):
        raise TypeError(f"wrap_layer needs an nn.Module class, got {base!r}")
    if base in _WRAPPERS:
        return _WRAPPERS[base]
    signature = inspect.signature(base.__init__)

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is not wrapper or _copying(args):  # a user subclass, or copy.deepcopy
            return nn.Module.__new__(cls)
        if current_fixed() is not None or not leaves_of((args, kwargs)):
            return base(*args, **kwargs)
        return nn.Module.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if type(self) is not wrapper:
            if leaves_of((args, kwargs)):
                raise TypeError(f"{type(self).__name__} subclasses retiarii_ir.nn.{base.__name__}: pass "
                                f"ValueChoice arguments to retiarii_ir.nn.{base.__name__} itself, not to a subclass")
            base.__init__(self, *args, **kwargs)
            return
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{base.__name__}: {e}") from None
        value_args: dict[str, Any] = {}
        for name, value in list(bound.arguments.items())[1:]:
            kind = signature.parameters[name].kind
            if leaves_of(value):
                if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                    raise TypeError(f"{base.__name__}: choices cannot go through *{name}")
                value_args[name] = value
        plain_args = (default_of(args), default_of(kwargs))
        base.__init__(self, *plain_args[0], **plain_args[1])
        self.value_args = value_args
        self.plain_args = plain_args

    def __getnewargs_ex__(self) -> tuple[tuple, dict]:
        return (_COPYING,), {}

    wrapper = type(base.__name__, (ValueChoiceLayer, base),
                   {"__new__": __new__, "__init__": __init__, "__getnewargs_ex__": __getnewargs_ex__,
                    "__module__": "retiarii_ir.nn",
                    "base_class": base, "__doc__": f"{base.__name__} that accepts ValueChoice arguments."})
    _WRAPPERS[base] = wrapper
    return wrapper


def plain_spec(layer: ValueChoiceLayer) -> ModuleSpec:
    """The torch.nn spec of ``layer`` with every choice at its first value."""
    args, kwargs = layer.plain_args
    with torch.device("meta"):
        spec = spec_of(layer.base_class(*args, **kwargs))
    if spec.is_opaque:
        raise TypeError(f"{layer.base_class.__name__} cannot take ValueChoice arguments: its "
                        f"constructor arguments cannot be recovered from an instance")
    return spec


__all__ = ["ValueChoiceLayer", "ValueExpr", "plain_spec", "wrap_layer"]


def searched_arguments(layer: Any) -> dict[str, Any]:
    """The constructor arguments a layer was given as choices (argument -> expression); empty for
    any other module. A supernet turns a layer with some into a weight-sharing one."""
    return dict(layer.__dict__.get("value_args") or {}) if isinstance(layer, ValueChoiceLayer) else {}
