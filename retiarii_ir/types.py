"""Value types carried by every node: tensors with a symbolic batch dimension, tuples, scalars."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

import torch

BATCH = "B"
_DIM_EXPR = re.compile(r"\A(?:(\d+)\*)?B(?:([+-])(\d+))?\Z")

Dim = Union[int, str]


def batch_dim(scale: int = 1, offset: int = 0) -> str:
    """A symbolic dimension ``scale * B + offset`` as a canonical string."""
    text = BATCH if scale == 1 else f"{scale}*{BATCH}"
    if offset:
        text += f"{'+' if offset > 0 else '-'}{abs(offset)}"
    return text


def parse_dim(dim: Dim) -> tuple[int, int] | None:
    """``(scale, offset)`` of a symbolic dimension, None for a concrete one."""
    if isinstance(dim, int):
        return None
    match = _DIM_EXPR.match(dim)
    if not match:
        raise ValueError(f"not a dimension expression: {dim!r} (expected like 'B', '2*B', 'B+1')")
    scale = int(match.group(1) or 1)
    offset = int(match.group(3) or 0) * (-1 if match.group(2) == "-" else 1)
    return scale, offset


def concrete_dim(dim: Dim, batch_size: int) -> int:
    """The size of ``dim`` for a given batch size."""
    parsed = parse_dim(dim)
    if parsed is None:
        return dim  # type: ignore[return-value]
    scale, offset = parsed
    return scale * batch_size + offset


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype called ``name`` ('float32'); ValueError for anything else."""
    # Read torch's namespace directly: getattr could fire a lazy import for an odd name.
    value = vars(torch).get(name) if isinstance(name, str) else None
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return value


_SHORT_DTYPES = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16",
                 "int64": "i64", "int32": "i32", "int8": "i8", "uint8": "u8", "bool": "bool"}


@dataclass(frozen=True)
class TensorType:
    """Shape (ints, or symbolic batch expressions like ``'B'``) and dtype of a tensor value."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for dim in self.shape:
            if isinstance(dim, bool) or not isinstance(dim, (int, str)) or isinstance(dim, int) and not 0 <= dim < 2**63:
                raise ValueError(f"bad dimension {dim!r} in shape {self.shape!r}")
            parse_dim(dim)
        dtype_from_name(self.dtype)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def concrete_shape(self, batch_size: int) -> tuple[int, ...]:
        return tuple(concrete_dim(d, batch_size) for d in self.shape)

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{_SHORT_DTYPES.get(self.dtype, self.dtype)}[{dims}]"


@dataclass(frozen=True)
class TupleType:
    """A tuple (or list) of values, e.g. the ``(output, (h, c))`` of an LSTM."""

    elements: tuple["ValueType", ...]
    is_list: bool = False

    def __str__(self) -> str:
        inner = ", ".join(str(e) for e in self.elements)
        return f"[{inner}]" if self.is_list else f"({inner})"


@dataclass(frozen=True)
class DictType:
    """A dict of values with string keys, e.g. ``{"out": ..., "aux": ...}``."""

    items: tuple[tuple[str, "ValueType"], ...]

    def __str__(self) -> str:
        return "{" + ", ".join(f"{k}: {v}" for k, v in self.items) + "}"


@dataclass(frozen=True)
class ScalarType:
    """A Python scalar or other non-tensor value (int, float, bool, NoneType, size, ...)."""

    name: str

    def __str__(self) -> str:
        return self.name


ValueType = Union[TensorType, TupleType, DictType, ScalarType]
UNKNOWN = ScalarType("unknown")


def type_of(value: Any) -> ValueType:
    """The type of a concrete runtime value (batch dimensions still concrete)."""
    if isinstance(value, torch.Tensor):
        return TensorType(tuple(int(d) for d in value.shape), dtype_name(value.dtype))
    if isinstance(value, (tuple, list)) and not isinstance(value, torch.Size):
        return TupleType(tuple(type_of(v) for v in value), is_list=isinstance(value, list))
    if isinstance(value, torch.Size):
        return ScalarType("size")
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return DictType(tuple((k, type_of(v)) for k, v in value.items()))
    if value is None:
        return ScalarType("None")
    return ScalarType(type(value).__name__)


def generalize_batch(small: ValueType, large: ValueType, batch_small: int, batch_large: int) -> ValueType:
    """Merge two types observed at two batch sizes into one with symbolic batch dimensions.

    A dimension that changed linearly with the batch size becomes ``scale*B+offset``.
    """
    if isinstance(small, TensorType) and isinstance(large, TensorType) and small.rank == large.rank:
        dims: list[Dim] = []
        for a, b in zip(small.shape, large.shape):
            if a == b:
                dims.append(a)
                continue
            step = batch_large - batch_small
            scale, rem = divmod(int(b) - int(a), step)
            offset = int(a) - scale * batch_small
            dims.append(batch_dim(scale, offset) if rem == 0 and scale > 0 else a)
        return TensorType(tuple(dims), small.dtype)
    if isinstance(small, TupleType) and isinstance(large, TupleType) and len(small.elements) == len(large.elements):
        return TupleType(tuple(generalize_batch(s, l, batch_small, batch_large)
                               for s, l in zip(small.elements, large.elements)), small.is_list)
    if isinstance(small, DictType) and isinstance(large, DictType) and [k for k, _ in small.items] == [
            k for k, _ in large.items]:
        return DictType(tuple((k, generalize_batch(s, l, batch_small, batch_large))
                              for (k, s), (_, l) in zip(small.items, large.items)))
    return small


def type_to_json(t: ValueType) -> Any:
    if isinstance(t, TensorType):
        return {"tensor": list(t.shape), "dtype": t.dtype}
    if isinstance(t, TupleType):
        return {"tuple": [type_to_json(e) for e in t.elements], "list": t.is_list}
    if isinstance(t, DictType):
        return {"dict": [[k, type_to_json(v)] for k, v in t.items]}
    return {"scalar": t.name}


def type_from_json(data: Any) -> ValueType:
    if not isinstance(data, dict):
        raise ValueError(f"a type must be an object, got {data!r}")
    if "tensor" in data:
        shape = data["tensor"]
        if not isinstance(shape, list):
            raise ValueError(f"tensor shape must be a list, got {shape!r}")
        return TensorType(tuple(shape), str(data.get("dtype", "float32")))
    if "tuple" in data:
        return TupleType(tuple(type_from_json(e) for e in data["tuple"]), bool(data.get("list", False)))
    if "dict" in data and isinstance(data["dict"], list):
        items = []
        for item in data["dict"]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise ValueError(f"bad dict type entry {item!r}")
            items.append((item[0], type_from_json(item[1])))
        return DictType(tuple(items))
    if "scalar" in data and isinstance(data["scalar"], str) and data["scalar"].replace("_", "").isalnum():
        return ScalarType(data["scalar"])
    raise ValueError(f"unknown type {data!r}")
