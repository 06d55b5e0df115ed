"""Tracing a model space: the base graph with choice points, and one mutator per point.

Choice modules (LayerChoice, InputChoice, Repeat, a cell's loose-end merge, layers with
ValueChoice arguments) stay single ``call_module`` nodes. Each LayerChoice candidate and
each Repeat block is traced on its own, recursively, with the inputs it really receives,
so its graph can be inlined later and its own choices become nested mutators.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .choice_mutators import (
    InputChoiceMutator,
    LayerChoiceMutator,
    LooseEndMutator,
    RepeatMutator,
    SiteMutator,
    ValueChoiceMutator,
)
from ..errors import TraceError
from ..graph import Graph
from .nn.cell import LooseEndMerge
from .nn.choices import InputChoice, LayerChoice, Repeat
from .nn.wrapped import ValueChoiceLayer, plain_spec
from ..rewrite import relocate
from .search_space import AnyOf
from ..tracer import trace

STRUCTURAL_CHOICES: tuple[type, ...] = (LayerChoice, InputChoice, Repeat, LooseEndMerge)


def is_choice_layer(module: nn.Module) -> bool:
    """A torch layer built with ValueChoice arguments (not a user subclass of one)."""
    return isinstance(module, ValueChoiceLayer) and bool(module.__dict__.get("value_args"))


class _Holder1(nn.Module):
    """Wraps a candidate so that tracing keeps it as submodule ``c``."""

    def __init__(self, c: nn.Module) -> None:
        super().__init__()
        self.c = c

    def forward(self, x0):
        return self.c(x0)


class _Holder2(_Holder1):
    def forward(self, x0, x1):
        return self.c(x0, x1)


class _Holder3(_Holder1):
    def forward(self, x0, x1, x2):
        return self.c(x0, x1, x2)


class _Holder4(_Holder1):
    def forward(self, x0, x1, x2, x3):
        return self.c(x0, x1, x2, x3)


_HOLDERS = {1: _Holder1, 2: _Holder2, 3: _Holder3, 4: _Holder4}


def trace_space_graph(model: nn.Module, args: tuple, kwargs: dict | None = None, *, batch_dim: int | None = 0,
                      leaf_modules: Iterable[type | str] = (), name: str | None = None
                      ) -> tuple[Graph, list[SiteMutator]]:
    """The base graph of ``model`` and the mutators of its choice points, parents first."""
    kwargs = dict(kwargs or {})
    leaf_modules = tuple(leaf_modules)
    captured = _capture_inputs(model, args, kwargs)
    wrapped = [q for q, m in model.named_modules() if is_choice_layer(m)]
    graph = trace(model, args, kwargs, leaf_modules=STRUCTURAL_CHOICES + leaf_modules + tuple(wrapped),
                  batch_dim=batch_dim, name=name)
    mutators: list[SiteMutator] = []
    sub = {"batch_dim": batch_dim, "leaf_modules": leaf_modules}
    for site in _sites_in_order(graph, model):
        module = model.get_submodule(site)
        if is_choice_layer(module):
            spec = plain_spec(module)
            graph.modules[site] = spec
            graph.module_types[site] = spec.class_name
            mutators.append(ValueChoiceMutator(site, dict(module.value_args), spec))
        elif isinstance(module, LayerChoice):
            call_args = _call_args(captured, site, module)
            candidates: dict[str, Graph] = {}
            nested: list[SiteMutator] = []
            for value in module.values:
                cand_graph, cand_mutators = _trace_part(module.candidate(value), call_args, site, **sub)
                candidates[str(value)] = cand_graph
                nested += [m.lifted(site, (module.label, value)) for m in cand_mutators]
            mutators.append(LayerChoiceMutator(site, module.label, module.values, candidates, module.parent))
            mutators += nested
        elif isinstance(module, Repeat):
            (x,) = _call_args(captured, site, module)
            blocks: list[Graph] = []
            nested = []
            for i in range(max(module.depths)):
                block_graph, block_mutators = _trace_part(module.block(i), (x,), f"{site}.{i}", **sub)
                blocks.append(block_graph)
                deeper = tuple(d for d in module.depths if d > i)
                always = len(deeper) == len(module.depths)
                exists_when = None if always else (module.label, AnyOf(deeper))
                nested += [m.lifted(f"{site}.{i}", exists_when) for m in block_mutators]
                with torch.no_grad():
                    x = module.block(i)(x)
            mutators.append(RepeatMutator(site, module.label, module.depths, blocks))
            mutators += nested
        elif isinstance(module, InputChoice):
            mutators.append(InputChoiceMutator(site, module.label, module.values, module.reduction))
        elif isinstance(module, LooseEndMerge):
            mutators.append(LooseEndMutator(site, module.label, module.concat_dim))
    return graph, mutators


def _sites_in_order(graph: Graph, model: nn.Module) -> list[str]:
    """Choice modules in the order the graph first calls them; uncalled wrapped layers last."""
    order: list[str] = []
    for node in graph.nodes:
        if node.op == "call_module" and node.target not in order:
            order.append(node.target)
    order += [q for q in graph.modules if q not in order]
    return [q for q in order if isinstance(model.get_submodule(q), STRUCTURAL_CHOICES)
            or is_choice_layer(model.get_submodule(q))]


def _trace_part(part: nn.Module, call_args: tuple, site: str, **options: Any) -> tuple[Graph, list[SiteMutator]]:
    """A candidate or block traced alone, with its module paths relative to itself."""
    holder_cls = _HOLDERS.get(len(call_args))
    if holder_cls is None:
        raise TraceError(f"choice {site!r} is called with {len(call_args)} arguments; at most 4 are supported")
    part_graph, part_mutators = trace_space_graph(holder_cls(part), call_args, **options,
                                                  name=type(part).__name__)
    relocate(part_graph, "c", "")
    return part_graph, [_relative(m) for m in part_mutators]


def _relative(mutator: SiteMutator) -> SiteMutator:
    site = mutator.site
    mutator.site = "" if site == "c" else site.removeprefix("c.")
    return mutator


def _call_args(captured: dict[int, tuple], site: str, module: nn.Module) -> tuple:
    if id(module) not in captured:
        raise TraceError(f"choice module {site!r} ({type(module).__name__}) is never called by forward "
                         f"on the example inputs; remove it or call it")
    return captured[id(module)]


def _capture_inputs(model: nn.Module, args: tuple, kwargs: dict) -> dict[int, tuple]:
    """The arguments each LayerChoice and Repeat first receives on the example inputs."""
    captured: dict[int, tuple] = {}

    def hook(module: nn.Module, hook_args: tuple, hook_kwargs: dict) -> None:
        if hook_kwargs:
            raise TraceError(f"{type(module).__name__} {getattr(module, 'label', '')!r} is called with keyword "
                             f"arguments {sorted(hook_kwargs)}; pass them positionally")
        captured.setdefault(id(module), hook_args)

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in model.modules()
               if isinstance(m, (LayerChoice, Repeat))]
    flags = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        for name, m in model.named_modules():
            m.training = flags.get(name, m.training)
    return captured
