"""How a leaf module is built again from a graph: its class name and constructor arguments.

PyTorch does not record constructor arguments, so they are recovered from the instance
(``Conv2d.in_channels``...) and then *verified*: the rebuilt module must print the same
and hold the same parameter and buffer shapes. A module that cannot be recovered that way
becomes opaque (``kwargs is None``): it runs from the original instance, but code cannot
be generated for it.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .errors import IRError
from .targets import qualified_name, resolve_function, resolve_module_class


@dataclass(frozen=True)
class FunctionRef:
    """A function passed as a constructor argument, e.g. ``activation=F.gelu``."""

    path: str

    def resolve(self, trust: Iterable[str] = ()) -> Callable[..., Any]:
        return resolve_function(self.path, trust)


@dataclass
class ModuleSpec:
    """A module class by dotted name and the keyword arguments that rebuild it."""

    type: str
    kwargs: dict[str, Any] | None = field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return self.type.rsplit(".", 1)[-1]

    @property
    def is_opaque(self) -> bool:
        return self.kwargs is None

    def build(self, trust: Iterable[str] = ()) -> nn.Module:
        """A fresh module (random weights) of this spec."""
        if self.kwargs is None:
            raise IRError(f"module of class {self.type} was recorded as opaque: its constructor "
                          f"arguments could not be recovered, so it cannot be rebuilt from the graph")
        cls = resolve_module_class(self.type, trust)
        kwargs = {k: _build_value(v, trust) for k, v in self.kwargs.items()}
        return cls(**kwargs)


def _build_value(value: Any, trust: Iterable[str]) -> Any:
    if isinstance(value, ModuleSpec):
        return value.build(trust)
    if isinstance(value, FunctionRef):
        return value.resolve(trust)
    if isinstance(value, list):
        return [_build_value(v, trust) for v in value]
    return value


_CONSTANT_TYPES = (int, float, bool, str, type(None), torch.dtype)


def _is_constant(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_constant(v) for v in value)
    return isinstance(value, _CONSTANT_TYPES)


def _as_argument(value: Any) -> Any:
    """A constructor argument as a graph value, or raise ValueError when it has none."""
    if isinstance(value, nn.Module):
        return spec_of(value, strict=True)
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return FunctionRef(qualified_name(value))
    if _is_constant(value):
        return value
    raise ValueError(f"cannot record {type(value).__name__} value")


def _generic_kwargs(module: nn.Module) -> dict[str, Any]:
    signature = inspect.signature(type(module).__init__)
    kwargs: dict[str, Any] = {}
    for name, param in list(signature.parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in ("device", "dtype"):
            continue
        has_default = param.default is not param.empty
        if name.startswith("_") or not hasattr(module, name):
            if has_default:
                continue
            raise ValueError(f"required argument {name!r} is not stored on the module")
        value = getattr(module, name)
        if isinstance(param.default, bool) and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None  # e.g. Linear(bias=True) stores the bias tensor
        value = _as_argument(value)
        if has_default and _same_as_default(value, param.default):
            continue
        kwargs[name] = value
    return kwargs


def _same_as_default(value: Any, default: Any) -> bool:
    if type(value) is type(default) and value == default:
        return True
    return (isinstance(value, tuple) and value and isinstance(default, int)
            and not isinstance(default, bool) and all(v == default for v in value))


def _compact(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kernel_size=(3, 3)`` as ``kernel_size=3``: what people write."""
    return {k: v[0] if isinstance(v, tuple) and len(v) > 1 and len(set(v)) == 1
            and isinstance(v[0], int) else v for k, v in kwargs.items()}


def _mha_kwargs(m: nn.MultiheadAttention) -> dict[str, Any]:
    kwargs = dict(embed_dim=m.embed_dim, num_heads=m.num_heads, dropout=m.dropout,
                  bias=m.in_proj_bias is not None, add_bias_kv=m.bias_k is not None,
                  add_zero_attn=m.add_zero_attn, kdim=m.kdim, vdim=m.vdim, batch_first=m.batch_first)
    return kwargs


def _encoder_layer_kwargs(m: nn.TransformerEncoderLayer) -> dict[str, Any]:
    return dict(d_model=m.self_attn.embed_dim, nhead=m.self_attn.num_heads,
                dim_feedforward=m.linear1.out_features, dropout=m.dropout.p,
                activation=_as_argument(m.activation), layer_norm_eps=m.norm1.eps,
                batch_first=m.self_attn.batch_first, norm_first=m.norm_first,
                bias=m.linear1.bias is not None)


def _stack_kwargs(m: nn.Module, layer_arg: str) -> dict[str, Any]:
    kwargs = {layer_arg: spec_of(m.layers[0], strict=True), "num_layers": len(m.layers),
              "norm": spec_of(m.norm, strict=True) if m.norm is not None else None}
    if isinstance(m, nn.TransformerEncoder):
        kwargs["enable_nested_tensor"] = m.enable_nested_tensor
        kwargs["mask_check"] = m.mask_check
    return kwargs


def _rnn_kwargs(m: nn.RNNBase) -> dict[str, Any]:
    """LSTM/GRU/RNN take ``*args``; their arguments are stored under the same names."""
    kwargs = dict(input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers,
                  bias=m.bias, batch_first=m.batch_first, dropout=m.dropout, bidirectional=m.bidirectional)
    if isinstance(m, nn.LSTM) and m.proj_size:
        kwargs["proj_size"] = m.proj_size
    if isinstance(m, nn.RNN):
        kwargs["nonlinearity"] = m.nonlinearity
    return kwargs


_SPECIAL: dict[type, Callable[[Any], dict[str, Any]]] = {
    nn.LSTM: _rnn_kwargs,
    nn.GRU: _rnn_kwargs,
    nn.RNN: _rnn_kwargs,
    nn.MultiheadAttention: _mha_kwargs,
    nn.TransformerEncoderLayer: _encoder_layer_kwargs,
    nn.TransformerDecoderLayer: _encoder_layer_kwargs,  # same fields and attribute names
    nn.TransformerEncoder: lambda m: _stack_kwargs(m, "encoder_layer"),
    nn.TransformerDecoder: lambda m: _stack_kwargs(m, "decoder_layer"),
}


def module_signature(module: nn.Module) -> tuple:
    """What must agree between a module and one rebuilt from its spec (or a simpler spelling of
    it): its printout, and the name, shape and dtype of every state_dict entry."""
    tensors = [(k, tuple(v.shape), v.dtype) for k, v in module.state_dict().items()]
    return repr(module), tensors


def _rebuilds(module: nn.Module, spec: ModuleSpec) -> bool:
    try:
        with torch.device("meta"):
            rebuilt = spec.build(trust=_trust_for(module))
    except Exception:
        return False
    return module_signature(rebuilt) == module_signature(module)


def _trust_for(module: nn.Module) -> tuple[str, ...]:
    root = type(module).__module__.split(".")[0]
    return () if root == "torch" else (root,)


def spec_of(module: nn.Module, strict: bool = False) -> ModuleSpec:
    """The spec that rebuilds ``module``; opaque (or ValueError when strict) if none does."""
    cls = type(module)
    type_name = qualified_name(cls)
    candidates: list[dict[str, Any]] = []
    try:
        raw = _SPECIAL[cls](module) if cls in _SPECIAL else _generic_kwargs(module)
        candidates = [_compact(raw), raw] if _compact(raw) != raw else [raw]
    except (ValueError, AttributeError, TypeError):
        pass
    for kwargs in candidates:
        spec = ModuleSpec(type_name, kwargs)
        if _rebuilds(module, spec):
            return spec
    if strict:
        raise ValueError(f"cannot recover the constructor arguments of {type_name}")
    return ModuleSpec(type_name, None)
