"""Constants as Python source: every value is re-spelled from its type, never pasted as text.

Strings go through ``repr`` (always a closed, escaped literal), numbers through their
canonical spelling, torch enums through a name checked against ``torch`` itself. Anything
else is refused, so a hostile graph cannot place arbitrary text in the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from retiarii_ir.module_spec import FunctionRef, ModuleSpec
from retiarii_ir.node import Node
from retiarii_ir.targets import resolve_function

from .errors import CodegenError
from .names import check_dotted

NodeRef = Callable[[Node], str]
SMALL_TENSOR = 64  # elements; larger tensors are embedded as raw bytes

_ENUM_TYPES = (torch.dtype, torch.memory_format, torch.layout)


def torch_enum(value: Any) -> str:
    """``torch.float32``, ``torch.channels_last``...: a torch attribute checked by identity."""
    name = str(value).removeprefix("torch.")
    if not name.isidentifier() or getattr(torch, name, None) is not value:
        raise CodegenError(f"cannot spell {value!r} as a torch attribute")
    return f"torch.{name}"


def number(value: float) -> str:
    if isinstance(value, (bool, int)):
        return repr(bool(value)) if isinstance(value, bool) else repr(int(value))
    if math.isnan(value):
        return 'float("nan")'
    if math.isinf(value):
        return 'float("inf")' if value > 0 else '-float("inf")'
    return repr(float(value))


def function_name(path: Any, what: str) -> str:
    """A function name from a graph, spelled as dotted identifiers; aten's operator forms
    (``torch.ops.aten.__and__.Tensor``) are the one place a dunder segment is allowed."""
    if isinstance(path, str) and path.startswith("torch.ops.aten."):
        head, _, rest = path.partition("torch.ops.aten.")[2].partition(".")
        if head.startswith("__") and head.endswith("__") and is_dunder_free(rest):
            check_dotted(f"torch.ops.aten.{head.strip('_')}" + (f".{rest}" if rest else ""), what)
            return path
    return check_dotted(path, what)


def is_dunder_free(dotted: str) -> bool:
    return not any(p.startswith("__") for p in dotted.split(".")) if dotted else True


def function_path(path: Any, what: str) -> str:
    """A function named by a graph, as source; only allow-listed torch functions."""
    function_name(path, what)
    if not path.startswith("torch."):
        raise CodegenError(f"{what} {path!r} is not a torch function; generated files import only torch")
    resolve_function(path)
    return path


def literal(value: Any, ref: NodeRef, what: str = "constant") -> str:
    """``value`` as a Python expression; nodes become their variable names via ``ref``."""
    if isinstance(value, Node):
        return ref(value)
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (int, float)) and type(value) in (int, float):
        return number(value)
    if isinstance(value, str) and type(value) is str:
        return repr(value)
    if value is Ellipsis:
        return "..."
    if isinstance(value, _ENUM_TYPES):
        return torch_enum(value)
    if isinstance(value, torch.device):
        return f"torch.device({str(value)!r})"
    if isinstance(value, torch.Size):
        return f"torch.Size([{', '.join(number(int(d)) for d in value)}])"
    if isinstance(value, tuple):
        items = [literal(v, ref, what) for v in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, list):
        return f"[{', '.join(literal(v, ref, what) for v in value)}]"
    if isinstance(value, dict):
        for key in value:
            if type(key) is not str:
                raise CodegenError(f"{what}: dict key {key!r} is not a string")
        return "{" + ", ".join(f"{k!r}: {literal(v, ref, what)}" for k, v in value.items()) + "}"
    if isinstance(value, slice):
        return f"slice({', '.join(literal(p, ref, what) for p in (value.start, value.stop, value.step))})"
    if isinstance(value, FunctionRef):
        return function_path(value.path, what)
    if isinstance(value, ModuleSpec):  # only constructor arguments hold modules: constructors.argument
        raise CodegenError(f"{what}: a module ({value.type}) appears outside a module constructor")
    if isinstance(value, torch.Tensor):
        return tensor_literal(value, what)
    raise CodegenError(f"{what}: cannot write a value of type {type(value).__name__} as source")


def operand(value: Any, ref: NodeRef, what: str) -> str:
    """A literal that can stand next to an operator or a dot without changing meaning."""
    text = literal(value, ref, what)
    if isinstance(value, (Node, str, tuple, list, dict)) or value is None or isinstance(value, bool) or (
            isinstance(value, (int, float)) and text[0].isdigit() and "(" not in text):
        return text
    return f"({text})"


def subscript(value: Any, ref: NodeRef, what: str) -> str:
    """The text between the brackets of ``x[...]``, with slices as ``a:b`` and ``...``."""
    if isinstance(value, tuple) and value:
        parts = [_index_item(v, ref, what) for v in value]
        return parts[0] + "," if len(parts) == 1 else ", ".join(parts)
    return _index_item(value, ref, what)


def _index_item(value: Any, ref: NodeRef, what: str) -> str:
    if isinstance(value, slice):
        bounds = ["" if p is None else literal(p, ref, what) for p in (value.start, value.stop, value.step)]
        text = f"{bounds[0]}:{bounds[1]}"
        return text + f":{bounds[2]}" if bounds[2] else text
    return literal(value, ref, what)


def tensor_literal(tensor: torch.Tensor, what: str = "constant") -> str:
    """Source that rebuilds ``tensor`` exactly: a nested list when small, raw bytes otherwise."""
    t = tensor.detach().cpu()
    if t.layout is not torch.strided or t.is_quantized:
        raise CodegenError(f"{what}: only dense tensors can be embedded in source")
    dtype = torch_enum(t.dtype)
    shape = ", ".join(str(int(d)) for d in t.shape)
    if t.numel() == 0:
        return f"torch.empty(({shape}{',' if t.dim() == 1 else ''}), dtype={dtype})"
    if t.numel() <= SMALL_TENSOR and not t.is_complex():
        return f"torch.tensor({_nested(t.tolist())}, dtype={dtype})"
    raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return (f"torch.frombuffer(bytearray({raw!r}), dtype=torch.uint8)"
            f".view({dtype}).reshape({shape if t.dim() else '()'})")


def _nested(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_nested(v) for v in value) + "]"
    return number(value)
