"""Cell: a DARTS-style cell, built from InputChoice and LayerChoice.

Node ``i`` of a cell computes ``num_ops_per_node`` operations, each reading one
predecessor (a cell input or an earlier node) chosen by an InputChoice, with an op
chosen per edge (a LayerChoice nested under that input choice, so it only counts when
the edge is taken). The node sums its ops; the cell concatenates (along ``concat_dim``)
either all nodes or only the loose ends, the nodes no other node reads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .choices import ChosenInputs, InputChoice, LayerChoice
from .context import auto_label, check_label, current_fixed

OpFactory = Callable[..., nn.Module]


class LooseEndMerge(nn.Module):
    """Concatenation of the cell's loose ends; in a space it stands for all nodes."""

    def __init__(self, label: str, concat_dim: int = 1) -> None:
        super().__init__()
        self.label = label
        self.concat_dim = concat_dim

    def forward(self, nodes: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(nodes, dim=self.concat_dim)


def _call_factory(factory: OpFactory, node_index: int, op_index: int, input_index: int) -> nn.Module:
    try:
        n_params = sum(1 for p in inspect.signature(factory).parameters.values()
                       if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    except (TypeError, ValueError):
        n_params = 3
    args = (node_index, op_index, input_index)[3 - min(n_params, 3):]
    module = factory(*args)
    if not isinstance(module, nn.Module):
        raise TypeError(f"Cell op factory {factory!r} returned {type(module).__name__}, not an nn.Module")
    return module


class Cell(nn.Module):
    """A DARTS-style cell: ``forward(*predecessors)`` of ``num_predecessors`` tensors.

    ``op_candidates``: a dict name -> factory (or a list of factories); a factory takes
    ``(node_index, op_index, input_index)``, or only its trailing arguments, and returns a
    fresh module, e.g. a stride-2 conv when ``input_index < num_predecessors``.
    """

    def __init__(self, op_candidates: Mapping[str, OpFactory] | Sequence[OpFactory], num_nodes: int,
                 num_ops_per_node: int = 1, num_predecessors: int = 1, merge_op: str = "all",
                 label: str | None = None, concat_dim: int = 1) -> None:
        super().__init__()
        if merge_op not in ("all", "loose_end"):
            raise ValueError(f"Cell merge_op must be 'all' or 'loose_end', got {merge_op!r}")
        for name, value in (("num_nodes", num_nodes), ("num_ops_per_node", num_ops_per_node),
                            ("num_predecessors", num_predecessors)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Cell {name} must be a positive int, got {value!r}")
        factories = dict(op_candidates) if isinstance(op_candidates, Mapping) else \
            {str(i): f for i, f in enumerate(op_candidates)}
        self.label = check_label(label) if label is not None else auto_label("cell")
        self.num_nodes, self.num_ops_per_node = num_nodes, num_ops_per_node
        self.num_predecessors, self.merge_op, self.concat_dim = num_predecessors, merge_op, concat_dim
        fixed = current_fixed()
        self.inputs = nn.ModuleList()
        self.ops = nn.ModuleList()
        chosen_by_nodes: set[int] = set()
        for i in range(num_nodes):
            node_inputs, node_ops = nn.ModuleList(), nn.ModuleList()
            for j in range(num_ops_per_node):
                n_inputs = num_predecessors + i
                input_choice = InputChoice(n_inputs, 1, "sum", label=f"{self.label}/input_{i}_{j}")
                node_inputs.append(input_choice)
                edges = nn.ModuleDict()
                taken = input_choice.chosen if isinstance(input_choice, ChosenInputs) else range(n_inputs)
                chosen_by_nodes.update(taken if fixed is not None else ())
                for k in taken:
                    candidates = {name: _call_factory(f, i, j, k) for name, f in factories.items()}
                    parent = None if fixed is not None else (input_choice.label, k)
                    edges[str(k)] = LayerChoice(candidates, label=f"{self.label}/op_{i}_{j}_{k}", parent=parent)
                node_ops.append(edges)
            self.inputs.append(node_inputs)
            self.ops.append(node_ops)
        if merge_op == "all":
            self.merge: nn.Module = _FixedConcat(list(range(num_nodes)), concat_dim)
        elif fixed is not None:
            loose = [i for i in range(num_nodes) if i + num_predecessors not in chosen_by_nodes]
            self.merge = _FixedConcat(loose, concat_dim)
        else:
            self.merge = LooseEndMerge(self.label, concat_dim)

    def forward(self, *predecessors: torch.Tensor) -> torch.Tensor:
        if len(predecessors) != self.num_predecessors:
            raise ValueError(f"Cell {self.label!r} takes {self.num_predecessors} inputs, got {len(predecessors)}")
        states = list(predecessors)
        for i in range(self.num_nodes):
            outs = []
            for j in range(self.num_ops_per_node):
                edges = self.ops[i][j]
                candidates = [edges[str(k)](states[k]) if str(k) in edges else None for k in range(len(states))]
                outs.append(self.inputs[i][j](candidates))
            total = outs[0]
            for out in outs[1:]:
                total = total + out
            states.append(total)
        return self.merge(states[self.num_predecessors:])

    def extra_repr(self) -> str:
        return f"label={self.label!r}, num_nodes={self.num_nodes}, merge_op={self.merge_op!r}"


class _FixedConcat(nn.Module):
    """A fixed cell's merge: concatenate the given nodes."""

    def __init__(self, indices: list[int], dim: int) -> None:
        super().__init__()
        self.indices, self.dim = indices, dim

    def forward(self, nodes: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([nodes[i] for i in self.indices], dim=self.dim)
