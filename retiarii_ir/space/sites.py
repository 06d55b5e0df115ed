"""A model space's choice sites as plain data, for readers (pictures among them): which module
each choice sits at, its label and candidates, each candidate's graph, and the choices nested in
a candidate (a choice inside a LayerChoice candidate, or inside a Repeat's block)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..graph import Graph
from .choice_mutators import (InputChoiceMutator, LayerChoiceMutator, LooseEndMutator, RepeatMutator, SiteMutator,
                              ValueChoiceMutator)
from .model_space import ModelSpace
from .search_space import AnyOf, value_key


@dataclass
class Candidate:
    """One candidate of a site: its title, its graph (None: no graph of its own), and the sites
    inside it, by module path in that graph."""

    title: str
    graph: Graph | None = None
    sites: dict[str, "ChoiceSite"] = field(default_factory=dict)


@dataclass
class ChoiceSite:
    """The choice made at one module. ``notes`` list the values where there are no candidate
    graphs (a ValueChoice's layer, an InputChoice)."""

    kind: str  # LayerChoice | Repeat | ValueChoice | InputChoice | Cell output | a custom mutator's class
    label: str
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chained: bool = False  # the candidates run one after another (a Repeat's blocks)
    skippable: bool = False  # the input may go straight through (a Repeat that may have depth 0)


def _under(site: str, prefix: str) -> str | None:
    return site[len(prefix) + 1:] if site.startswith(prefix + ".") else None


def _parent_is(mutator: SiteMutator, label: str, value: Any) -> bool:
    parent = mutator.parent
    if parent is None or parent[0] != label:
        return False
    wanted = parent[1].values if isinstance(parent[1], AnyOf) else (parent[1],)
    return value is None or value_key(value) in {value_key(v) for v in wanted}


def _values(values: Iterable[Any]) -> str:
    return " | ".join(str(v) for v in values)


def _site(mutator: SiteMutator, mutators: list[SiteMutator]) -> ChoiceSite:
    if isinstance(mutator, LayerChoiceMutator):
        candidates = []
        for value in mutator.values:
            inside = [m for m in mutators if _under(m.site, mutator.site) and _parent_is(m, mutator.label, value)]
            candidates.append(Candidate(f"{mutator.label} = {value}", mutator.candidates.get(str(value)),
                                        _sites(inside, mutators, mutator.site)))
        return ChoiceSite("LayerChoice", mutator.label, candidates)
    if isinstance(mutator, RepeatMutator):
        candidates = []
        for i, block in enumerate(mutator.blocks):
            inside = [m for m in mutators if _under(m.site, f"{mutator.site}.{i}") and _parent_is(m, mutator.label, None)]
            exists = [d for d in mutator.values if d > i]
            candidates.append(Candidate(f"block {i}: when {mutator.label} in {{{_values(exists)}}}", block,
                                        _sites(inside, mutators, f"{mutator.site}.{i}")))
        return ChoiceSite("Repeat", mutator.label, candidates, [f"{mutator.label}: {_values(mutator.values)}"],
                          chained=True, skippable=0 in mutator.values)
    if isinstance(mutator, ValueChoiceMutator):
        return ChoiceSite("ValueChoice", mutator.label,
                          notes=[f"{label}: {_values(v)}" for label, v in mutator.leaves.items()])
    if isinstance(mutator, InputChoiceMutator):
        return ChoiceSite("InputChoice", mutator.label,
                          notes=[f"inputs: {_values(mutator.values)}", f"reduce: {mutator.reduction}"])
    if isinstance(mutator, LooseEndMutator):
        return ChoiceSite("Cell output", mutator.label, notes=["concat of the nodes nothing reads"])
    return ChoiceSite(type(mutator).__name__, mutator.label, notes=[_values(mutator.values)])


def _sites(chosen: list[SiteMutator], mutators: list[SiteMutator], prefix: str | None) -> dict[str, ChoiceSite]:
    """The sites ``chosen`` as seen from the graph at ``prefix`` (None: the space's base graph)."""
    sites: dict[str, ChoiceSite] = {}
    for mutator in chosen:
        path = mutator.site if prefix is None else _under(mutator.site, prefix)
        site = _site(mutator, mutators)
        if path in sites and not sites[path].candidates and not site.candidates:  # two value choices on one layer
            sites[path].notes += [n for n in site.notes if n not in sites[path].notes]
        else:
            sites.setdefault(path, site)
    return sites


def choice_sites(space: ModelSpace) -> dict[str, ChoiceSite]:
    """The base graph's choice sites by module path, each holding its candidates and the sites
    nested in them. Choices of custom mutators (which have no site) are not among them."""
    mutators = [m for m in space.mutators if isinstance(m, SiteMutator)]
    nested = {id(m) for m in mutators for outer in mutators if outer is not m
              and isinstance(outer, (LayerChoiceMutator, RepeatMutator)) and _under(m.site, outer.site)
              and m.parent is not None and m.parent[0] == outer.label}
    return _sites([m for m in mutators if id(m) not in nested], mutators, None)
