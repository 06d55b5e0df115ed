"""A model space as plain data: the factory that builds the model (``module:callable``) and the
types of its example inputs. Any process, on any machine that has the code, rebuilds the same
``ModelSpace`` from it, so nothing live is ever pickled."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

import retiarii_ir as ir
from retiarii_ir.errors import first_line

from .experiment_errors import ConfigError
from .references import reference_of, resolve

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}
_BUILT: dict[str, ir.ModelSpace] = {}  # one build per process and spec


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
    if not isinstance(shape, (tuple, list)) or not all(type(d) is int and d > 0 for d in shape):
        raise ConfigError(f"an example input is a shape of positive integers (optionally with a dtype name), "
                          f"got {item!r}")
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return tuple(shape), dtype


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
        object.__setattr__(self, "inputs", tuple(_input_type(i) for i in items))
        object.__setattr__(self, "trust", tuple(self.trust))
        object.__setattr__(self, "kwargs", _json_kwargs(self.kwargs))

    def to_dict(self) -> dict:
        return {"factory": self.factory, "inputs": [[list(s), d] for s, d in self.inputs], "trust": list(self.trust),
                "kwargs": dict(self.kwargs)}

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @classmethod
    def from_dict(cls, raw: dict) -> "SpaceSpec":
        try:
            return cls(raw["factory"], tuple((tuple(s), d) for s, d in raw["inputs"]), tuple(raw.get("trust", ())),
                       raw.get("kwargs", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed space spec {raw!r}: {first_line(e)}") from None

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(0)
        return tuple(torch.randn(shape, generator=generator).to(_DTYPES[dtype]) if _DTYPES[dtype].is_floating_point
                     else torch.zeros(shape, dtype=_DTYPES[dtype]) for shape, dtype in self.inputs)

    def build(self) -> ir.ModelSpace:
        """The ModelSpace (built once per process: the factory and trace are deterministic; a
        space with frozen weights is built afresh, since the file they come from may change)."""
        key = json.dumps(self.to_dict(), sort_keys=True)
        if key not in _BUILT:
            factory = resolve(self.factory)
            if not callable(factory):
                raise ConfigError(f"{self.factory!r} is not a class or factory")
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
