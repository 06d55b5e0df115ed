"""Names of callables and module classes, and their safe resolution.

A graph refers to functions and module classes by dotted name only, so that it stays a
plain value. Resolving a name never imports anything: it walks attributes of modules
that are already loaded, inside an allow-list of namespaces, so a hostile graph cannot
reach ``os.system``, ``torch.load`` or ``__import__``.
"""

from __future__ import annotations

import builtins
import math
import operator
import re
import sys
from typing import Any, Callable, Iterable

import torch
from torch.fx.node import _get_qualified_name

from .errors import UnsafeTargetError

_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ROOTS = {"torch": torch, "operator": operator, "math": math, "builtins": builtins}

# Namespaces under torch whose members may do I/O, load code, or change global state.
_FORBIDDEN_PREFIXES = (
    "torch.hub", "torch.jit", "torch.package", "torch.utils", "torch.distributed",
    "torch.multiprocessing", "torch.backends", "torch.cuda", "torch.mps", "torch.xpu",
    "torch.compiler", "torch._dynamo", "torch._inductor", "torch.onnx", "torch.export",
    "torch.fx", "torch.serialization", "torch.storage", "torch.library", "torch.profiler",
    "torch.autograd.graph", "torch.ops.load_library", "torch.classes", "torch._C._jit",
)
_FORBIDDEN_NAMES = {
    "load", "save", "load_library", "compile", "set_default_dtype", "set_default_device",
    "set_default_tensor_type", "manual_seed", "seed", "set_rng_state", "set_printoptions",
    "set_num_threads", "set_num_interop_threads", "use_deterministic_algorithms",
    "set_grad_enabled", "set_flush_denormal", "from_file", "set_warn_always",
}
_SAFE_BUILTINS = {
    "getattr", "len", "int", "float", "bool", "tuple", "list", "slice", "range", "min",
    "max", "abs", "sum", "round", "pow", "divmod", "all", "any", "zip", "isinstance",
}
_SAFE_DUNDER_METHODS = {
    "__getitem__", "__setitem__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__",
    "__rmul__", "__truediv__", "__rtruediv__", "__floordiv__", "__matmul__", "__neg__",
    "__pow__", "__and__", "__or__", "__invert__", "__eq__", "__ne__", "__lt__", "__le__",
    "__gt__", "__ge__", "__iadd__", "__imul__", "__isub__", "__itruediv__",
}
_FORBIDDEN_METHODS = {
    "backward", "register_hook", "register_post_accumulate_grad_hook", "storage",
    "untyped_storage", "data_ptr", "numpy", "tolist", "share_memory_", "set_", "pin_memory",
    "cuda", "apply_", "map_", "map2_", "record_stream", "retain_grad",
}


def qualified_name(obj: Callable[..., Any]) -> str:
    """The dotted name under which ``obj`` can be resolved again."""
    if isinstance(obj, type):
        name = f"{obj.__module__}.{obj.__qualname__}"
        # torch.nn classes live in private modules; prefer their public alias.
        short = f"torch.nn.{obj.__name__}"
        if obj.__module__.startswith("torch.nn.") and getattr(torch.nn, obj.__name__, None) is obj:
            return short
        return name
    name = _get_qualified_name(obj)
    if name.startswith("_operator."):
        return "operator." + name.removeprefix("_operator.")
    if name in _SAFE_BUILTINS or hasattr(builtins, name) and getattr(builtins, name) is obj:
        return f"builtins.{name}"
    if name.startswith("torch._C._nn."):
        public = name.replace("torch._C._nn.", "torch.nn.functional.")
        if _resolve_path(public, trust=()) is not None:
            return public
    return name


def check_identifier(name: str, what: str) -> str:
    """Raise unless ``name`` is a plain Python identifier (not a keyword-free check)."""
    if not isinstance(name, str) or not _SEGMENT.match(name) or name.startswith("__"):
        raise UnsafeTargetError(f"{what} {name!r} is not a plain identifier")
    return name


def check_qualname(name: str, what: str) -> str:
    """Raise unless ``name`` is a dotted module path such as ``layer1.0.conv1`` (or '')."""
    if name == "":
        return name
    if not isinstance(name, str):
        raise UnsafeTargetError(f"{what} {name!r} is not a string")
    for part in name.split("."):
        if not re.match(r"^[A-Za-z0-9_]+$", part) or part.startswith("__"):
            raise UnsafeTargetError(f"{what} {name!r} has a forbidden segment {part!r}")
    return name


def _is_forbidden(path: str) -> bool:
    if any(path == p or path.startswith(p + ".") for p in _FORBIDDEN_PREFIXES):
        return True
    return path.rsplit(".", 1)[-1] in _FORBIDDEN_NAMES


def _resolve_path(path: str, trust: Iterable[str]) -> Any | None:
    parts = path.split(".")
    if not all(_SEGMENT.match(p) and not p.startswith("__") for p in parts):
        return None
    if parts[0] in _ROOTS:
        obj: Any = _ROOTS[parts[0]]
        rest = parts[1:]
        if parts[0] == "builtins" and (len(rest) != 1 or rest[0] not in _SAFE_BUILTINS):
            return None
    else:
        # A trusted user namespace, already imported by the user.
        root = next((t for t in sorted(trust, key=len, reverse=True)
                     if path.startswith(t + ".") and t in sys.modules), None)
        if root is None:
            return None
        obj = sys.modules[root]
        rest = path[len(root) + 1:].split(".")
    for part in rest:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def resolve_function(path: str, trust: Iterable[str] = ()) -> Callable[..., Any]:
    """The callable that a ``call_function`` node names, or UnsafeTargetError."""
    if not isinstance(path, str) or _is_forbidden(path):
        raise UnsafeTargetError(f"function {path!r} is not allowed in a graph")
    obj = _resolve_path(path, trust)
    if obj is None or not callable(obj) or isinstance(obj, type) and not _is_value_type(obj):
        raise UnsafeTargetError(
            f"function {path!r} cannot be resolved inside the allowed namespaces "
            f"(torch, operator, math, safe builtins{', ' + ', '.join(trust) if trust else ''})")
    return obj


def _is_value_type(cls: type) -> bool:
    return cls in (int, float, bool, tuple, list, slice, range)


def resolve_module_class(path: str, trust: Iterable[str] = ()) -> type[torch.nn.Module]:
    """The nn.Module subclass a module spec names, or UnsafeTargetError."""
    if not isinstance(path, str) or _is_forbidden(path):
        raise UnsafeTargetError(f"module class {path!r} is not allowed in a graph")
    obj = _resolve_path(path, trust)
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise UnsafeTargetError(
            f"module class {path!r} is not an nn.Module inside the allowed namespaces "
            f"(torch.nn{', ' + ', '.join(trust) if trust else ''}); pass trust=[...] for your own packages")
    return obj


def check_method(name: str) -> str:
    """Raise unless ``name`` is a tensor method a graph may call."""
    if not isinstance(name, str) or not _SEGMENT.match(name):
        raise UnsafeTargetError(f"method {name!r} is not a plain identifier")
    if name in _FORBIDDEN_METHODS or (name.startswith("_") and name not in _SAFE_DUNDER_METHODS):
        raise UnsafeTargetError(f"method {name!r} is not allowed in a graph")
    if not hasattr(torch.Tensor, name):
        raise UnsafeTargetError(f"method {name!r} is not a torch.Tensor method")
    return name
