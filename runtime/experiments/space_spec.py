"""A model space as plain data: the factory that builds the model (``module:callable``) and the
types of its example inputs. Any process, on any machine that has the code, rebuilds the same
``ModelSpace`` from it, so nothing live is ever pickled."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

import retiarii_ir as ir
from retiarii_ir.errors import first_line

from retiarii_ir import limits

from retiarii_ir.runtime.errors import ConfigError
from retiarii_ir.runtime.references import Trust, reference_of, resolve

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}
_BUILT: dict[str, ir.ModelSpace] = {}  # one build per process and spec
MAX_INPUTS = 64
MAX_INPUT_DIMS = 16


def _input_type(item: Any) -> tuple[tuple[int, ...], str]:
    """``(2, 3, 32, 32)``, ``((2, 3), "int64")`` or a tensor -> (shape, dtype name)."""
    if isinstance(item, torch.Tensor):
        names = {v: k for k, v in _DTYPES.items()}
        if item.dtype not in names:
            raise ConfigError(f"example input dtype {item.dtype} is not supported; use one of {sorted(_DTYPES)}")
        return tuple(item.shape), names[item.dtype]
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], str):
        shape, dtype = item
    else:
        shape, dtype = item, "float32"
    if (not isinstance(shape, (tuple, list)) or len(shape) > MAX_INPUT_DIMS
            or not all(type(d) is int and d > 0 for d in shape)):
        raise ConfigError(f"an example input is a shape of at most {MAX_INPUT_DIMS} positive integers "
                          f"(optionally with a dtype name), got {str(item)[:200]}")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {str(dtype)[:40]!r}; use one of {sorted(_DTYPES)}")
    return tuple(shape), dtype


def _check_input_sizes(inputs: tuple) -> None:
    """Example inputs are allocated to trace the space: the limit ``build_module`` applies holds here."""
    if len(inputs) > MAX_INPUTS:
        raise ConfigError(f"a space takes at most {MAX_INPUTS} example inputs, got {len(inputs)}")
    total = sum(math.prod(shape) * _DTYPES[dtype].itemsize for shape, dtype in inputs)
    if total > limits.MAX_BUILD_BYTES:
        raise ConfigError(f"example inputs would allocate {total / 2**20:,.1f} MiB, over the limit of "
                          f"{limits.MAX_BUILD_BYTES / 2**20:,.1f} MiB (retiarii_ir.limits.MAX_BUILD_BYTES)")


def _json_kwargs(kwargs: Any) -> MappingProxyType:
    """The factory's keyword arguments, checked to survive the JSON trip to any worker unchanged."""
    if isinstance(kwargs, MappingProxyType):
        kwargs = dict(kwargs)
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise ConfigError(f"space kwargs must be a dict of keyword names to values, got {kwargs!r}")
    try:
        text = json.dumps(kwargs, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"space kwargs must be plain JSON values (numbers, strings, lists, dicts): "
                          f"{first_line(e)}") from None
    if json.loads(text) != kwargs:  # a tuple becomes a list, an int key a str: say so now, not in a worker
        raise ConfigError(f"space kwargs must be plain JSON values; {kwargs!r} would come back as {json.loads(text)!r}")
    return MappingProxyType(json.loads(text))  # read-only: what was checked is what workers get


@dataclass(frozen=True)
class SpaceSpec:
    """``SpaceSpec("mypkg.spaces:Net", inputs=[(2, 3, 32, 32)], kwargs={"classes": 10})``. The
    factory, called with ``kwargs`` (plain JSON values, recorded with the experiment), returns
    an ``nn.Module`` written with ``retiarii_ir.nn`` (traced with inputs of these types) or a
    ready ``ModelSpace`` (then ``inputs`` may be empty)."""

    factory: Any
    inputs: tuple = ()
    trust: tuple[str, ...] = field(default=())
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "factory", reference_of(self.factory))
        items = self.inputs if isinstance(self.inputs, (list, tuple)) else [self.inputs]
        if items and all(type(d) is int for d in items):  # a single shape
            items = [tuple(items)]
        if len(items) > MAX_INPUTS:
            raise ConfigError(f"a space takes at most {MAX_INPUTS} example inputs, got {len(items)}")
        object.__setattr__(self, "inputs", tuple(_input_type(i) for i in items))
        _check_input_sizes(self.inputs)
        trust = (self.trust,) if isinstance(self.trust, str) else self.trust
        if not isinstance(trust, (list, tuple)) or not all(isinstance(t, str) for t in trust):
            raise ConfigError(f"space trust is a list of names like 'mypkg.ops', got {str(self.trust)[:200]}")
        object.__setattr__(self, "trust", tuple(trust))
        object.__setattr__(self, "kwargs", _json_kwargs(self.kwargs))

    def to_dict(self) -> dict:
        return {"factory": self.factory, "inputs": [[list(s), d] for s, d in self.inputs], "trust": list(self.trust),
                "kwargs": dict(self.kwargs)}

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @classmethod
    def from_dict(cls, raw: Any) -> "SpaceSpec":
        """The spec a store or job line holds; checked, nothing imported."""
        if not isinstance(raw, dict) or set(raw) - {"factory", "inputs", "trust", "kwargs"}:
            raise ConfigError(f"malformed space spec: expected factory, inputs, trust, kwargs; got {str(raw)[:200]}")
        inputs = raw.get("inputs")
        if (not isinstance(inputs, list) or len(inputs) > MAX_INPUTS
                or not all(isinstance(i, list) and len(i) == 2 and isinstance(i[0], list) for i in inputs)):
            raise ConfigError(f"malformed space spec: inputs must be [[shape, dtype], ...], got {str(inputs)[:200]}")
        return cls(raw.get("factory"), tuple((tuple(s), d) for s, d in inputs), raw.get("trust", ()),
                   raw.get("kwargs", {}))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(0)
        return tuple(torch.randn(shape, generator=generator).to(_DTYPES[dtype]) if _DTYPES[dtype].is_floating_point
                     else torch.zeros(shape, dtype=_DTYPES[dtype]) for shape, dtype in self.inputs)

    def check(self, trust: Trust | None = None) -> None:
        """The factory resolves to a function or class of the user's code (imported, not called)."""
        resolve(self.factory, trust)

    def build(self, trust: Trust | None = None) -> ir.ModelSpace:
        """The ModelSpace (built once per process: the factory and trace are deterministic; a
        space with frozen weights is built afresh, since the file they come from may change).
        ``trust``: what a spec read from data may import (see ``references.resolve``)."""
        key = json.dumps(self.to_dict(), sort_keys=True)
        if key not in _BUILT:
            factory = resolve(self.factory, trust)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                try:
                    made = factory(**self.kwargs)
                except Exception as e:  # noqa: BLE001 - the user's factory: one line, no traceback
                    raise ConfigError(f"{self.factory} raised {type(e).__name__}: {first_line(e)}") from None
                if isinstance(made, ir.ModelSpace):
                    space = made
                elif isinstance(made, torch.nn.Module):
                    if not self.inputs:
                        raise ConfigError(f"{self.factory} returns a module: give its example input shapes "
                                          f"(inputs=[(2, 3, 32, 32)])")
                    space = ir.trace_space(made, self.example_inputs(), trust=self.trust)
                else:
                    raise ConfigError(f"{self.factory} returned {type(made).__name__}, "
                                      f"not an nn.Module or a ModelSpace")
            if space.frozen_weights:  # loaded from files that may change: built afresh each time
                return space
            _BUILT[key] = space
        return _BUILT[key]
