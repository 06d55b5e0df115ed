"""What a graph from untrusted JSON may call: the allow-list, stated as objects and homes.

``targets`` resolves a dotted name to an object without importing anything, then asks
this module whether that *object* may run. Names are only a way to find the object: a
re-exported stdlib module (``torch.os``) or a class reached through another package's
namespace is judged by what it is and where it really lives.
"""

from __future__ import annotations

import builtins
import operator
import types
from typing import Any

import torch

# Homes under torch whose members do I/O, load code, compile, or change global state.
FORBIDDEN_HOMES = (
    "torch.hub", "torch.jit", "torch.package", "torch.utils", "torch.distributed",
    "torch.multiprocessing", "torch.backends", "torch.cuda", "torch.mps", "torch.xpu",
    "torch.compiler", "torch._dynamo", "torch._inductor", "torch.onnx", "torch.export",
    "torch.fx", "torch.serialization", "torch.storage", "torch.library", "torch.profiler",
    "torch.autograd.graph", "torch.classes", "torch.overrides", "torch.random", "torch.testing",
    "torch.ao.quantization", "torch.quantization", "torch.nn.utils", "torch.nn.parallel",
    "torch.nn.modules.module", "torch.func", "torch.cpu", "torch.mtia", "torch.accelerator",
)
# Private torch namespaces that hold ordinary tensor functions (what ``F.linear`` really is).
PRIVATE_TORCH_HOMES = frozenset({"torch._C._nn", "torch._C._fft", "torch._C._linalg", "torch._C._special"})
# Private torch functions that symbolic tracing itself emits.
PRIVATE_TORCH_FUNCTIONS = frozenset({"_assert", "_shape_as_tensor"})
# Pure Python helpers in torch's top-level namespace that traced code calls.
TORCH_HELPERS = frozenset({"_assert", "is_tensor", "sym_int", "sym_float", "sym_max", "sym_min", "sym_not"})
# Modules whose public functions are tensor functions and nothing else.
PUBLIC_FUNCTION_HOMES = frozenset({"torch.functional", "torch.nn.functional"})
# Modules a dotted name may pass through on its way to a function or class.
WALKABLE_PRIVATE = frozenset({"torch._C"}) | PRIVATE_TORCH_HOMES

FORBIDDEN_NAMES = frozenset({
    "load", "save", "load_library", "compile", "manual_seed", "seed", "initial_seed",
    "from_file", "use_deterministic_algorithms", "fork_rng", "import_module", "eval", "exec",
    "system", "open", "getenv", "putenv", "remove", "unlink", "rmdir", "fork", "wait",
})
FORBIDDEN_NAME_PREFIXES = ("set_", "_set", "register_", "_register")

SAFE_BUILTINS = frozenset({
    "getattr", "len", "int", "float", "bool", "tuple", "list", "slice", "range", "min",
    "max", "abs", "sum", "round", "pow", "divmod", "all", "any", "zip", "isinstance",
})
_SAFE_OPERATORS = (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "neg", "pos", "abs",
    "invert", "inv", "and_", "or_", "xor", "lshift", "rshift", "not_", "truth", "eq", "ne",
    "lt", "le", "gt", "ge", "getitem", "setitem", "delitem", "contains", "index", "is_",
    "is_not", "concat", "iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow",
    "imatmul", "iand", "ior", "ixor", "ilshift", "irshift", "iconcat",
)
# Identity sets: an object is approved by *being* one of these, not by its spelling.
_OPERATOR_IDS = frozenset(id(getattr(operator, name)) for name in _SAFE_OPERATORS)
_BUILTIN_IDS = frozenset(id(getattr(builtins, name)) for name in SAFE_BUILTINS)
_COSTLY_MATH = frozenset({"factorial", "comb", "perm", "prod"})  # time grows without bound in the argument
VALUE_TYPES = (int, float, bool, tuple, list, slice, range, torch.finfo, torch.iinfo, torch.Size)

SAFE_DUNDER_METHODS = frozenset({
    "__getitem__", "__setitem__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__",
    "__rmul__", "__truediv__", "__rtruediv__", "__floordiv__", "__matmul__", "__neg__",
    "__pow__", "__and__", "__or__", "__invert__", "__eq__", "__ne__", "__lt__", "__le__",
    "__gt__", "__ge__", "__iadd__", "__imul__", "__isub__", "__itruediv__",
})
FORBIDDEN_METHODS = frozenset({
    "backward", "register_hook", "register_post_accumulate_grad_hook", "storage",
    "untyped_storage", "data_ptr", "numpy", "tolist", "share_memory_", "set_", "pin_memory",
    "cuda", "apply_", "map_", "map2_", "record_stream", "retain_grad",
})
# Public attributes that lead from a tensor to autograd internals or raw memory.
FORBIDDEN_ATTRIBUTES = frozenset({"grad_fn", "untyped_storage", "storage", "data_ptr", "register_hook"})

# Module classes: torch's own layers, never its containers for scripting or parallelism.
MODULE_HOMES = ("torch.nn.modules",)


def under(home: str, prefixes: tuple[str, ...] | frozenset[str]) -> bool:
    """Whether dotted ``home`` is one of ``prefixes`` or inside one."""
    return any(home == p or home.startswith(p + ".") for p in prefixes)


def forbidden_name(name: str) -> bool:
    return name in FORBIDDEN_NAMES or name.startswith(FORBIDDEN_NAME_PREFIXES)


def home_of(obj: Any) -> str | None:
    """The module an object really belongs to, whatever path reached it."""
    if isinstance(obj, types.BuiltinFunctionType) and isinstance(obj.__self__, types.ModuleType):
        return obj.__self__.__name__
    home = getattr(obj, "__module__", None)
    return home if isinstance(home, str) else None


def torch_function_allowed(obj: Any) -> str | None:
    """None when a torch callable may run; otherwise why not.

    An explicit list of places, not a list of dangers: torch's own tensor operators (the
    ATen functions behind ``torch.add``), the public functions of ``torch.functional`` and
    ``torch.nn.functional``, the operator tables behind ``torch.fft``/``linalg``/``special``,
    and a handful of helpers symbolic tracing emits. Nothing here returns a module or calls
    a callable it is given."""
    if isinstance(obj, type):
        return None if obj in VALUE_TYPES else "it is a class, not a function"
    home = home_of(obj)
    name = getattr(obj, "__name__", None)
    if not isinstance(name, str) or home is None:
        return "it has no module and name of its own"
    if forbidden_name(name):
        return f"{name} changes global state or touches files"
    if touches_raw_memory(name):
        return f"{name} trusts indices or strides it is given (unchecked memory access)"
    if home == "torch" and getattr(torch._C._VariableFunctions, name, None) is obj:
        private = name.startswith("_") and name not in PRIVATE_TORCH_FUNCTIONS
        return f"{name} is private" if private else None
    if home == "torch" and name in TORCH_HELPERS:
        return None
    if home in PUBLIC_FUNCTION_HOMES or home in PRIVATE_TORCH_HOMES:
        return f"{name} is private" if name.startswith("_") else None
    return f"it is {home}.{name}, which is not one of torch's tensor functions"


def builtin_allowed(obj: Any, root: str) -> str | None:
    """None when an object reached from ``operator``, ``math`` or ``builtins`` may run."""
    if root == "operator":
        return None if id(obj) in _OPERATOR_IDS else "only arithmetic, comparison and item access operators are allowed"
    if root == "builtins":
        return None if id(obj) in _BUILTIN_IDS else f"only these builtins are allowed: {sorted(SAFE_BUILTINS)}"
    if root == "math":
        if isinstance(obj, types.BuiltinFunctionType) and home_of(obj) == "math" and obj.__name__ not in _COSTLY_MATH:
            return None
        return "only math's own functions are allowed (not factorial, comb, perm or prod)"
    return f"{root} is not an allowed namespace"


# Constructors that trust caller-given indices or strides (torch skips their checks by
# default): with hostile values they read and write outside the tensor's memory.
UNCHECKED_MEMORY = ("sparse", "as_strided", "_unsafe_index", "_unsafe_masked", "set_", "frombuffer", "from_blob",
                    "storage", "_reshape_alias", "_nested", "jagged", "_make_per_", "_efficientzerotensor")
# Private aten families torch.export never emits for a forward pass, refused by what they are:
# gradients, optimizer steps, device- or library-specific kernels, and forward-mode AD internals.
PRIVATE_ATEN_REFUSED = {
    "backward": "a gradient kernel", "_foreach_": "an optimizer kernel", "_fused_adam": "an optimizer kernel",
    "_fused_sgd": "an optimizer kernel", "_fused_adagrad": "an optimizer kernel", "_amp_": "an optimizer kernel",
    "_print": "it writes to the terminal", "_pin_memory": "it pins host memory", "_cudnn": "a cuDNN kernel",
    "_cufft": "it changes a global plan cache", "mkldnn": "a oneDNN layout kernel", "_copy_from": "a device copy kernel",
    "_resize": "it resizes storage in place", "int4pack": "a weight-packing kernel", "int8pack": "a weight-packing kernel",
    "prepack": "a weight-packing kernel", "4bit": "a weight-packing kernel",
    "quantize": "a quantization kernel", "_fw_primal": "forward-mode AD internals", "_dual": "forward-mode AD internals",
    "_has_same_storage": "it inspects storage", "_use_": "a backend query", "_nnpack": "a backend kernel",
    "_cslt": "a backend kernel", "_wrapped": "a backend kernel",
}


def touches_raw_memory(name: str) -> bool:
    return any(part in name for part in UNCHECKED_MEMORY)


def aten_op_allowed(packet_name: str) -> str | None:
    """None when an aten operator may run: torch's own operator namespace, as torch.export emits
    it (``aten.__and__``, ``aten._softmax``, ``aten._native_multi_head_attention``...), except
    what touches files, global state, autograd internals or unchecked memory."""
    bare = packet_name.strip("_")
    if (forbidden_name(packet_name) or forbidden_name(bare) or bare in ("print", "record_stream")
            or packet_name in FORBIDDEN_METHODS or bare in FORBIDDEN_METHODS):
        return f"aten.{packet_name} changes global state, touches files or reaches autograd internals"
    if touches_raw_memory(packet_name):
        return f"aten.{packet_name} trusts indices or strides it is given (unchecked memory access)"
    operator_form = packet_name.startswith("__") and packet_name.endswith("__")  # aten.__and__: x & y
    if packet_name.startswith("_") and not operator_form:
        family = next((part for part in PRIVATE_ATEN_REFUSED if part in packet_name), None)
        if family is not None:
            return f"aten.{packet_name} is {PRIVATE_ATEN_REFUSED[family]}, not part of a forward pass"
    if not torch._C._jit_get_schemas_for_operator(f"aten::{packet_name}"):
        return f"aten has no operator {packet_name!r}"
    return None


def module_class_allowed(cls: Any) -> str | None:
    """None when ``cls`` is one of torch.nn's own layer classes (not a lazy one: those have no
    shapes to record or check until they first run)."""
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        return "it is not an nn.Module class"
    if cls.__name__.startswith("Lazy"):
        return "lazy modules have no shapes until they run; record the layer after a forward instead"
    home = home_of(cls) or ""
    if not under(home, MODULE_HOMES):
        return f"it is defined in {home}, not in torch.nn"
    return None
