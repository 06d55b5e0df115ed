"""LayerChoice, InputChoice and Repeat: structural choices inside an ordinary nn.Module.

In a space they are modules whose forward runs the first candidate, so the space runs
as a model. Tracing turns each into a choice point. Under ``fixed_arch`` the
constructors return plain modules instead: the chosen candidate itself, a fixed
reduction of the chosen inputs, an ``nn.Sequential`` of the chosen depth.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .context import auto_label, check_label, current_fixed
from .value_choice import ResolvedInt, ValueChoice

REDUCTIONS = ("sum", "mean", "concat", "none")


# ---------------------------------------------------------------------- LayerChoice
def _candidate_table(candidates: Iterable[nn.Module] | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if isinstance(candidates, Mapping):
        table = dict(candidates)
        for key in table:
            if not isinstance(key, str) or not re.match(r"\A[A-Za-z0-9_]+\Z", key):
                raise ValueError(f"LayerChoice candidate names must be plain identifiers, got {key!r}")
    else:
        table = {str(i): m for i, m in enumerate(candidates)}
    if not table:
        raise ValueError("LayerChoice needs at least one candidate")
    for key, module in table.items():
        if not isinstance(module, nn.Module):
            raise TypeError(f"LayerChoice candidate {key!r} is a {type(module).__name__}, not an nn.Module")
    return table


class LayerChoice(nn.Module):
    """Pick one module among candidates (a list, sampled by index, or a dict, by name)."""

    def __new__(cls, candidates: Iterable[nn.Module] | Mapping[str, nn.Module] | None = None,
                label: str | None = None, *, parent: tuple[str, Any] | None = None):
        fixed = current_fixed()
        if fixed is None or candidates is None:  # None: copy.deepcopy re-creating an instance
            return super().__new__(cls)
        candidates = candidates if isinstance(candidates, Mapping) else list(candidates)
        table = _candidate_table(candidates)
        values = list(table) if isinstance(candidates, Mapping) else list(range(len(table)))
        label = check_label(label) if label is not None else auto_label("layerchoice")
        return table[str(fixed.value(label, values, values[0]))]

    def __init__(self, candidates: Iterable[nn.Module] | Mapping[str, nn.Module], label: str | None = None,
                 *, parent: tuple[str, Any] | None = None) -> None:
        super().__init__()
        candidates = candidates if isinstance(candidates, Mapping) else list(candidates)
        table = _candidate_table(candidates)
        self.label = check_label(label) if label is not None else auto_label("layerchoice")
        self.values: list[Any] = list(table) if isinstance(candidates, Mapping) else list(range(len(table)))
        self.parent = parent
        for key, module in table.items():
            self.add_module(key, module)

    def candidate(self, value: Any) -> nn.Module:
        return self._modules[str(value)]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.candidate(self.values[0])(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"label={self.label!r}"


# ---------------------------------------------------------------------- InputChoice
def reduce_inputs(inputs: list[Any], reduction: str) -> Any:
    """Combine chosen inputs; the frozen graph spells out exactly these operations."""
    if reduction == "none":
        return list(inputs)
    if reduction == "concat":
        return torch.cat(inputs, dim=1)
    total = inputs[0]
    for x in inputs[1:]:
        total = total + x
    if reduction == "mean" and len(inputs) > 1:
        total = total / len(inputs)
    return total


def input_candidates(n_candidates: int, n_chosen: int | None) -> list[Any]:
    """Sample values of an InputChoice: an index when one is chosen, else sorted index lists."""
    if n_chosen == 1:
        return list(range(n_candidates))
    sizes = [n_chosen] if n_chosen is not None else range(1, n_candidates + 1)
    return [list(c) for k in sizes for c in itertools.combinations(range(n_candidates), k)]


def chosen_indices(value: Any) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


class ChosenInputs(nn.Module):
    """What an InputChoice becomes under ``fixed_arch``: a fixed selection and reduction."""

    def __init__(self, chosen: list[int], reduction: str) -> None:
        super().__init__()
        self.chosen = list(chosen)
        self.reduction = reduction

    def forward(self, inputs: list[Any]) -> Any:
        return reduce_inputs([inputs[i] for i in self.chosen], self.reduction)

    def extra_repr(self) -> str:
        return f"chosen={self.chosen}, reduction={self.reduction!r}"


def _check_input_args(n_candidates: int, n_chosen: int | None, reduction: str) -> None:
    if not isinstance(n_candidates, int) or n_candidates < 1:
        raise ValueError(f"InputChoice needs n_candidates >= 1, got {n_candidates!r}")
    if n_chosen is not None and not (isinstance(n_chosen, int) and 1 <= n_chosen <= n_candidates):
        raise ValueError(f"InputChoice n_chosen must be in 1..{n_candidates} (or None for any), got {n_chosen!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"InputChoice reduction must be one of {REDUCTIONS}, got {reduction!r}")


class InputChoice(nn.Module):
    """Pick ``n_chosen`` of ``n_candidates`` inputs (passed as a list) and reduce them."""

    def __new__(cls, n_candidates: int | None = None, n_chosen: int | None = 1, reduction: str = "sum",
                label: str | None = None):
        fixed = current_fixed()
        if fixed is None or n_candidates is None:
            return super().__new__(cls)
        _check_input_args(n_candidates, n_chosen, reduction)
        label = check_label(label) if label is not None else auto_label("inputchoice")
        values = input_candidates(n_candidates, n_chosen)
        return ChosenInputs(chosen_indices(fixed.value(label, values, values[0])), reduction)

    def __init__(self, n_candidates: int, n_chosen: int | None = 1, reduction: str = "sum",
                 label: str | None = None) -> None:
        super().__init__()
        _check_input_args(n_candidates, n_chosen, reduction)
        self.n_candidates = n_candidates
        self.n_chosen = n_chosen
        self.reduction = reduction
        self.label = check_label(label) if label is not None else auto_label("inputchoice")
        self.values = input_candidates(n_candidates, n_chosen)

    def forward(self, inputs: list[Any]) -> Any:
        if len(inputs) != self.n_candidates:
            raise ValueError(f"InputChoice {self.label!r} expects {self.n_candidates} inputs, got {len(inputs)}")
        return reduce_inputs([inputs[i] for i in chosen_indices(self.values[0])], self.reduction)

    def extra_repr(self) -> str:
        return f"label={self.label!r}, n_candidates={self.n_candidates}, n_chosen={self.n_chosen}, " \
               f"reduction={self.reduction!r}"


# ---------------------------------------------------------------------- Repeat
def _depths(depth: Any) -> list[int]:
    if isinstance(depth, ValueChoice):
        values = list(depth.candidates)
    elif isinstance(depth, range):
        values = list(depth)
    elif isinstance(depth, tuple) and len(depth) == 2:
        values = list(range(depth[0], depth[1] + 1))
    elif isinstance(depth, int) and not isinstance(depth, bool):
        values = [depth]
    else:
        raise TypeError(f"Repeat depth must be an int, a range, a (min, max) tuple or a ValueChoice, got {depth!r}")
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ValueError(f"Repeat depths must be non-negative ints, got {values}")
    return values


def _block_factory(blocks: Any) -> Callable[[int], nn.Module]:
    if isinstance(blocks, nn.Module):
        return lambda i: copy.deepcopy(blocks)
    if isinstance(blocks, (list, tuple)):
        return lambda i: blocks[i]
    if callable(blocks):
        return blocks
    raise TypeError(f"Repeat blocks must be a module, a list of modules or a function of the index, got {blocks!r}")


def _build_blocks(blocks: Any, count: int) -> list[nn.Module]:
    if isinstance(blocks, (list, tuple)) and len(blocks) < count:
        raise ValueError(f"Repeat got {len(blocks)} blocks but may need {count}")
    make = _block_factory(blocks)
    built = [make(i) for i in range(count)]
    for i, block in enumerate(built):
        if not isinstance(block, nn.Module):
            raise TypeError(f"Repeat block {i} is a {type(block).__name__}, not an nn.Module")
    return built


class Repeat(nn.Module):
    """A stack of blocks whose depth is chosen (depth 0 is the identity).

    ``blocks``: a module (deep-copied for each position), a function ``i -> module`` or a
    list; ``depth``: an int, a range, a ``(min, max)`` tuple or a ValueChoice of ints.
    """

    def __new__(cls, blocks: Any = None, depth: Any = None, label: str | None = None):
        if depth is None:  # copy.deepcopy re-creating an instance
            return super().__new__(cls)
        depths = _depths(depth)
        fixed = current_fixed()
        if isinstance(depth, ResolvedInt):  # a ValueChoice already resolved by fixed_arch
            return nn.Sequential(*_build_blocks(blocks, max(depth.candidates))[:depth])
        if isinstance(depth, int) and not isinstance(depth, bool):
            return nn.Sequential(*_build_blocks(blocks, depth))
        if fixed is None:
            return super().__new__(cls)
        label = depth.label if isinstance(depth, ValueChoice) else (
            check_label(label) if label is not None else auto_label("repeat"))
        chosen = fixed.value(label, depths, depths[0])
        # Build every block, as the space does, so that the choices inside the unused ones
        # are met (and automatic labels count alike); keep the first ``chosen``.
        return nn.Sequential(*_build_blocks(blocks, max(depths))[:chosen])

    def __init__(self, blocks: Any, depth: Any, label: str | None = None) -> None:
        super().__init__()
        self.depths = _depths(depth)
        self.label = depth.label if isinstance(depth, ValueChoice) else (
            check_label(label) if label is not None else auto_label("repeat"))
        for i, block in enumerate(_build_blocks(blocks, max(self.depths))):
            self.add_module(str(i), block)

    def block(self, index: int) -> nn.Module:
        return self._modules[str(index)]

    def forward(self, x: Any) -> Any:
        for i in range(self.depths[0]):
            x = self.block(i)(x)
        return x

    def extra_repr(self) -> str:
        return f"label={self.label!r}, depths={self.depths}"
