"""Names of callables and module classes, and their safe resolution.

A graph refers to functions and module classes by dotted name only, so that it stays a
plain value. For an untrusted graph a name is resolved to an object without importing
anything (module namespaces are read directly, lazy-import hooks never fire), and then
the *object* is checked against ``allowlist``: its identity, its real module, its name.
Only namespaces the caller names in ``trust=[...]`` may be imported and used freely.
"""

from __future__ import annotations

import builtins
import importlib
import math
import operator
import re
import sys
import types
from typing import Any, Callable, Iterable

import torch
from torch.fx.node import _get_qualified_name

from . import allowlist
from .errors import UnsafeTargetError

_SEGMENT = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
_PUBLIC = re.compile(r"\A[A-Za-z][A-Za-z0-9_]*\Z")
# A module name segment: what PyTorch accepts and models use (``layer1``, ``0``, ``block1-0``),
# limited to characters that are inert wherever a path is written (quoted in generated source).
_QUALNAME_PART = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
_ROOTS = {"torch": torch, "operator": operator, "math": math, "builtins": builtins}
_MISSING = object()


def qualified_name(obj: Callable[..., Any]) -> str:
    """The dotted name under which ``obj`` can be resolved again."""
    if isinstance(obj, type):
        name = f"{obj.__module__}.{obj.__qualname__}"
        # torch.nn classes live in private modules; prefer their public alias.
        short = f"torch.nn.{obj.__name__}"
        if obj.__module__.startswith("torch.nn.") and getattr(torch.nn, obj.__name__, None) is obj:
            return short
        return name
    if _is_user_function(obj):
        return _module_and_qualname(obj)
    name = _get_qualified_name(obj)
    if name.startswith("_operator."):
        return "operator." + name.removeprefix("_operator.")
    if name in allowlist.SAFE_BUILTINS or hasattr(builtins, name) and getattr(builtins, name) is obj:
        return f"builtins.{name}"
    if name.startswith("torch._C._nn."):
        public = name.replace("torch._C._nn.", "torch.nn.functional.")
        try:
            if resolve_function(public) is obj:
                return public
        except UnsafeTargetError:
            pass
    return name


def _is_user_function(obj: Any) -> bool:
    """A plain Python function from outside torch and the standard roots (a model's own helper)."""
    home = getattr(obj, "__module__", None)
    return (isinstance(obj, types.FunctionType) and isinstance(home, str)
            and home.split(".")[0] not in (*_ROOTS, "_operator"))


def _module_and_qualname(obj: Any) -> str:
    """``module.qualname``: the one spelling that finds ``obj`` again even when a package's
    ``__init__`` re-exports it under the name of its own submodule."""
    qualname = obj.__qualname__
    if "<" in qualname:
        raise UnsafeTargetError(f"function {obj.__module__}.{qualname} is defined inside another function, so "
                                f"no name can find it again; define it at module level")
    return f"{obj.__module__}.{qualname}"


def package_of(obj: Any) -> str | None:
    """The top-level package whose code ``obj`` is, when it is neither torch nor a standard root;
    tracing trusts it (the model's own code), loading JSON needs it in ``trust=[...]``."""
    home = allowlist.home_of(obj)
    if home is None:
        return None
    top = home.split(".")[0]
    return None if top in (*_ROOTS, "_operator") else top


def check_identifier(name: str, what: str) -> str:
    """Raise unless ``name`` is a plain Python identifier without a leading double underscore."""
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
        if not _QUALNAME_PART.match(part) or part.startswith("__"):
            raise UnsafeTargetError(f"{what} {name!r} has a forbidden segment {part!r}")
    return name


def check_attribute_name(name: Any, what: str = "attribute") -> str:
    """Raise unless ``getattr`` may read ``name``: public, and not an autograd or memory handle."""
    if not isinstance(name, str) or not _PUBLIC.match(name):
        raise UnsafeTargetError(f"{what} {name!r} is not a public attribute name")
    if name in allowlist.FORBIDDEN_ATTRIBUTES:
        raise UnsafeTargetError(f"{what} {name!r} is not allowed in a graph")
    return name


_FACTORIES = frozenset({"torch.empty", "torch.zeros", "torch.ones", "torch.full", "torch.rand", "torch.randn",
                        "torch.randint", "torch.arange", "torch.eye", "torch.linspace", "torch.logspace",
                        "torch.empty_strided", "torch.tril_indices", "torch.triu_indices"})
_REPEATERS = frozenset({"operator.mul", "operator.imul", "operator.pow", "operator.ipow", "operator.lshift",
                        "operator.ilshift", "builtins.pow", "math.pow", "math.ldexp"})
_MAX_REPEAT = 2**24


MODULE_MEMBERS = frozenset(dir(torch.nn.Module)) | frozenset(vars(torch.nn.Module()))
"""Names an nn.Module already uses for itself (methods, ``training``, ``_parameters``...)."""
BUILT_MODULE_MEMBERS = frozenset({"_ir_constants", "_interpreter", "_trust", "graph"})
"""What ``build_module`` adds to the module it makes."""


def check_attribute_path(target: Any, modules: Iterable[str], what: str) -> str:
    """A ``get_attr`` reads a parameter, a buffer or the train flag: a public name that is
    neither a module of the graph nor one of nn.Module's own members (``forward``, ``to``)."""
    if target == "training":
        return target
    check_qualname(target, what)
    last = target.rsplit(".", 1)[-1]
    if last.startswith("_") or last in MODULE_MEMBERS or any(p in BUILT_MODULE_MEMBERS for p in target.split(".")):
        raise UnsafeTargetError(f"{what} {target!r} is not a parameter or buffer name")
    if any(m == target or m.startswith(target + ".") for m in modules):
        raise UnsafeTargetError(f"{what} {target!r} is a module, not a parameter or buffer")
    return target


def check_call(target: str, args: tuple, kwargs: dict, what: str) -> None:
    """Checks that depend on a call's arguments, not only on its target: ``getattr`` reads only
    a constant public name; nothing gets a ``key=`` to call; constant sizes stay in bounds."""
    if target == "builtins.getattr":
        if len(args) not in (2, 3) or kwargs:
            raise UnsafeTargetError(f"{what}: getattr takes an object and an attribute name")
        check_attribute_name(args[1], f"{what}: getattr of")
    if "key" in kwargs and target in ("builtins.min", "builtins.max"):
        raise UnsafeTargetError(f"{what}: {target} with key= would call a value of the graph")
    if target in _FACTORIES or target.startswith("torch.ops.aten.") and target.split(".")[3] in (
            "empty", "zeros", "ones", "full", "arange", "rand", "randn", "eye"):
        _check_constant_size(target, args, kwargs, what)
    repeated = _repetition(args) if target in ("operator.mul", "operator.imul") else None
    if repeated and len(repeated[0]) * repeated[1] > _MAX_REPEAT:
        raise UnsafeTargetError(f"{what}: repeating a constant {len(repeated[0])} long {repeated[1]} times is "
                                f"over the limit of {_MAX_REPEAT} items")
    if target in _REPEATERS:
        big = [v for v in args if type(v) is int and abs(v) > _MAX_REPEAT]
        if big:
            raise UnsafeTargetError(f"{what}: {target} with the constant {big[0]} could take unbounded "
                                    f"time or memory (constants up to {_MAX_REPEAT} are allowed)")


def _sizes(args: tuple, kwargs: dict) -> list[int]:
    """The integers a tensor factory was given, alone or as a shape."""
    sizes = [v for v in (*args, *kwargs.values()) if type(v) is int]
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple, torch.Size)) and all(type(v) is int for v in value):
            sizes.extend(value)
    return sizes


def _factory_bytes(sizes: list[int]) -> int:
    """At most what a factory of these sizes allocates (16 bytes: the widest type, complex128)."""
    total = 16
    for size in sizes:
        total *= max(abs(size), 1)
    return total


def _repetition(args: tuple) -> tuple[Any, int] | None:
    """``(sequence, count)`` when ``operator.mul`` repeats a string, list or tuple."""
    sequence = next((a for a in args if isinstance(a, (str, list, tuple))), None)
    count = next((a for a in args if type(a) is int), None)
    return None if sequence is None or count is None or len(args) != 2 else (sequence, count)


def _check_constant_size(target: str, args: tuple, kwargs: dict, what: str) -> None:
    """Refuse a tensor factory whose constant sizes alone exceed ``limits.MAX_BUILD_BYTES``."""
    from . import limits

    sizes = _sizes(args, kwargs)
    if _factory_bytes(sizes) > limits.MAX_BUILD_BYTES:
        raise UnsafeTargetError(f"{what}: {target} with constant sizes {sizes[:6]} would allocate more "
                                f"than the limit of {limits.MAX_BUILD_BYTES / 2**20:,.0f} MiB")


class AllocationBudget:
    """What one run of a graph may still allocate through factories and repetition, checked
    with the real (computed) sizes before each such call."""

    def __init__(self) -> None:
        from . import limits

        self.left = limits.MAX_BUILD_BYTES

    def charge(self, target: str, args: tuple, kwargs: dict, what: str) -> None:
        needed = 0
        if target in _FACTORIES:
            needed = _factory_bytes(_sizes(args, kwargs))
        elif target in ("operator.mul", "operator.imul") and (repeated := _repetition(args)):
            needed = len(repeated[0]) * max(repeated[1], 0) * 8
        if needed > self.left:
            raise UnsafeTargetError(f"{what}: {target} would allocate {needed / 2**20:,.0f} MiB, over what is "
                                    f"left of the limit (retiarii_ir.limits.MAX_BUILD_BYTES)")
        self.left -= needed


def check_method_call(name: str, kwargs: dict, what: str) -> None:
    """A method call gets no ``key=`` (``list.sort(key=f)`` would call a value of the graph)."""
    if "key" in kwargs:
        raise UnsafeTargetError(f"{what}: method {name!r} with key= would call a value of the graph")


# ---------------------------------------------------------------------- resolution
def _split(path: Any, what: str) -> list[str]:
    if not isinstance(path, str):
        raise UnsafeTargetError(f"{what} {path!r} is not a dotted name")
    parts = path.split(".")
    if not all(_SEGMENT.match(p) for p in parts):
        raise UnsafeTargetError(f"{what} {path!r} is not a dotted name of plain identifiers")
    return parts


def _trusted_root(path: str, trust: Iterable[str]) -> str | None:
    return next((t for t in sorted(trust, key=len, reverse=True)
                 if isinstance(t, str) and t and (path == t or path.startswith(t + "."))), None)


def _walk(parts: list[str], what: str) -> Any:
    """The object at ``parts`` under an allowed root, reading namespaces without importing."""
    path = ".".join(parts)
    obj: Any = _ROOTS.get(parts[0], _MISSING)
    if obj is _MISSING:
        raise UnsafeTargetError(
            f"{what} {path!r} is outside the allowed namespaces (torch, operator, math, builtins); "
            f"pass trust=[{parts[0]!r}] if you trust that package")
    for index, part in enumerate(parts[1:], 1):
        if part.startswith("__"):
            raise UnsafeTargetError(f"{what} {path!r} has a dunder segment {part!r}")
        child = vars(obj).get(part, _MISSING) if isinstance(obj, types.ModuleType) else _MISSING
        if isinstance(child, types.ModuleType):
            if child.__name__ != f"{obj.__name__}.{part}":
                raise UnsafeTargetError(
                    f"{what} {path!r} reaches module {child.__name__!r} through a re-export")
            _check_namespace(child.__name__, path, what)
        if child is _MISSING:
            raise UnsafeTargetError(f"{what} {path!r} cannot be resolved: "
                                    f"{'.'.join(parts[:index + 1])} does not exist (or is not loaded)")
        obj = child
    return obj


def _check_namespace(module_name: str, path: str, what: str) -> None:
    """A name may pass only through public torch namespaces that do no I/O or global edits."""
    if allowlist.under(module_name, allowlist.FORBIDDEN_HOMES):
        raise UnsafeTargetError(f"{what} {path!r} goes through {module_name}, which may do I/O, "
                                f"load code or change global state")
    private = any(p.startswith("_") for p in module_name.split(".")[1:])
    if private and module_name not in allowlist.WALKABLE_PRIVATE:
        raise UnsafeTargetError(f"{what} {path!r} goes through the private namespace {module_name}")


def _aten_op(parts: list[str], what: str) -> Any:
    """``torch.ops.aten.NAME[.OVERLOAD]``: torch's own operators, as torch.export emits them."""
    path = ".".join(parts)
    if len(parts) not in (4, 5) or parts[2] != "aten":
        raise UnsafeTargetError(f"{what} {path!r}: only torch.ops.aten.<op>[.<overload>] operators are allowed")
    reason = allowlist.aten_op_allowed(parts[3])
    if reason:
        raise UnsafeTargetError(f"{what} {path!r} is not allowed: {reason}")
    packet = getattr(torch.ops.aten, parts[3])
    if len(parts) == 4:
        return packet
    if parts[4] not in packet.overloads():
        raise UnsafeTargetError(f"{what} {path!r}: aten.{parts[3]} has no overload {parts[4]!r}")
    return getattr(packet, parts[4])


def _resolve_trusted(path: str, root: str, what: str) -> Any:
    """A name inside a namespace the caller trusts: the longest prefix that is a module
    (imported if needed), then the rest read as a qualified name inside it. Attributes are read
    from the module's own namespace, so a package ``__init__`` that re-exports a function under
    the name of its submodule does not hide the submodule."""
    parts = path.split(".")
    first = len(root.split("."))
    for cut in range(len(parts) - 1, first - 1, -1):
        module_name = ".".join(parts[:cut])
        module = sys.modules.get(module_name)
        if not isinstance(module, types.ModuleType):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
        obj: Any = module
        for part in parts[cut:]:
            namespace = vars(obj) if isinstance(obj, (types.ModuleType, type)) else {}
            obj = namespace.get(part, _MISSING)
            if obj is _MISSING:
                break
        if obj is not _MISSING and not isinstance(obj, types.ModuleType):
            return obj
    raise UnsafeTargetError(f"{what} {path!r} cannot be resolved in the trusted package {root!r}")


def _resolve(path: Any, trust: Iterable[str], what: str) -> tuple[Any, str | None]:
    """The object a name refers to, and the trusted root it was found under (if any)."""
    parts = _split(path, what)
    root = _trusted_root(path, tuple(trust)) if parts[0] not in _ROOTS else None
    if root is not None:
        return _resolve_trusted(path, root, what), root
    if parts[0] == "torch" and len(parts) > 1 and parts[1] == "ops":
        return _aten_op(parts, what), None
    return _walk(parts, what), None


def _trusted_home(obj: Any, root: str) -> bool:
    home = allowlist.home_of(obj) or ""
    top = root.split(".")[0]
    return home == top or home.startswith(top + ".")


def resolve_function(path: str, trust: Iterable[str] = ()) -> Callable[..., Any]:
    """The callable that a ``call_function`` node names, once the object itself is approved."""
    what = "function"
    obj, root = _resolve(path, trust, what)
    if isinstance(obj, types.ModuleType) or not callable(obj):
        raise UnsafeTargetError(f"{what} {path!r} is not a function")
    if isinstance(obj, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return obj
    if root is not None and _trusted_home(obj, root) and not isinstance(obj, type):
        return obj
    top = path.split(".")[0]
    reason = (allowlist.torch_function_allowed(obj) if top in ("torch",) or root is not None
              else allowlist.builtin_allowed(obj, top))
    if reason:
        raise UnsafeTargetError(f"{what} {path!r} is not allowed in a graph: {reason}")
    return obj


def resolve_module_class(path: str, trust: Iterable[str] = ()) -> type[torch.nn.Module]:
    """The nn.Module subclass a module spec names, once the class itself is approved."""
    what = "module class"
    obj, root = _resolve(path, trust, what)
    if root is not None and isinstance(obj, type) and issubclass(obj, torch.nn.Module) and _trusted_home(obj, root):
        return obj
    reason = allowlist.module_class_allowed(obj)
    if reason:
        raise UnsafeTargetError(f"{what} {path!r} is not allowed in a graph: {reason}; "
                                f"pass trust=[...] for your own packages")
    return obj


def check_method(name: str) -> str:
    """Raise unless ``name`` is a tensor method a graph may call."""
    if not isinstance(name, str) or not _SEGMENT.match(name):
        raise UnsafeTargetError(f"method {name!r} is not a plain identifier")
    if (name in allowlist.FORBIDDEN_METHODS or allowlist.forbidden_name(name) or allowlist.touches_raw_memory(name)
            or (name.startswith("_") and name not in allowlist.SAFE_DUNDER_METHODS)):
        raise UnsafeTargetError(f"method {name!r} is not allowed in a graph")
    if not hasattr(torch.Tensor, name):
        raise UnsafeTargetError(f"method {name!r} is not a torch.Tensor method")
    return name


_RECEIVER_TYPES = (torch.Tensor, torch.Size, tuple, list, dict, int, float, bool, complex, str, torch.dtype,
                   torch.device, torch.finfo, torch.iinfo, torch.memory_format, torch.layout, slice)


def check_receiver(receiver: Any, name: str, what: str = "method") -> None:
    """A method call or attribute read runs only on a value (tensor, size, number, container),
    never on a module, class or function."""
    if not isinstance(receiver, _RECEIVER_TYPES):
        raise UnsafeTargetError(f"{what} {name!r} used on a {type(receiver).__name__}, "
                                f"which is not a tensor or a plain value")


def check_value(value: Any, what: str) -> Any:
    """A value a node produces or passes on must be data: never a module, class or function,
    which a later node could call."""
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (int, float, str, bool)):
        return value
    if isinstance(value, (types.ModuleType, type)) or callable(value):
        raise UnsafeTargetError(f"{what} is a {type(value).__name__}; graph values must be data")
    return value


def check_arguments(values: Any, what: str) -> None:
    """Every argument a call gets is data (see ``check_value``), looking inside containers."""
    stack = [values]
    while stack:
        value = stack.pop()
        if isinstance(value, (tuple, list)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif not isinstance(value, torch.Tensor):
            check_value(value, what)
