"""ModelSpace: a base graph with choice points, the mutators that resolve them, and the
search space (plain data) that strategies explore.

``trace_space(model, inputs)`` builds one from a model written with ``retiarii_ir.nn``;
custom mutators (subclasses of ``Mutator``) compose with the built-in ones and run after
them, in the order given. ``freeze(sample)`` gives a concrete, typed Graph; the base
graph never changes. Parameters the traced model does not train (``requires_grad=False``:
a pretrained, frozen backbone) are kept with the space, so every concrete graph can start
from them (``frozen_state``).
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..analysis import structural_hash
from .choice_mutators import CHOICE_CLASS_NAMES, SiteMutator
from ..errors import GraphValidationError, IRError
from ..graph import Graph
from .mutator import Mutator, apply_mutators, infer_after_mutation
from ..rewrite import eliminate_dead_code_keeping_state
from .search_space import Choice, InvalidSampleError, Sample, SearchSpace, value_key


class ModelSpace:
    """A base graph plus the ordered mutators that turn a sample into a concrete graph."""

    def __init__(self, base: Graph, mutators: Iterable[Mutator] = (), trust: Iterable[str] = (), *,
                 frozen_weights: Mapping[str, torch.Tensor] | None = None) -> None:
        self.base = base
        self.mutators = list(mutators)
        self.trust = tuple(trust)
        self.frozen_weights = dict(frozen_weights or {})
        self._warned_layers: set[str] = set()
        self._base_hash = structural_hash(base)[:16]
        self.search_space = self._collect_search_space()

    @classmethod
    def from_module(cls, model: nn.Module, example_inputs: Any = (), example_kwargs: dict | None = None, *,
                    mutators: Iterable[Mutator] = (), batch_dim: int | None = 0,
                    leaf_modules: Iterable[type | str] = (), trust: Iterable[str] = ()) -> ModelSpace:
        from .tracing import trace_space_graph

        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        base, builtin = trace_space_graph(model, args, example_kwargs, batch_dim=batch_dim,
                                          leaf_modules=leaf_modules)
        frozen = {name: p.detach().clone() for name, p in model.named_parameters(remove_duplicate=False)
                  if not p.requires_grad}  # a tied weight under each of its names
        return cls(base, [*builtin, *mutators], trust, frozen_weights=frozen)

    # ------------------------------------------------------------------ the search space
    def _collect_search_space(self) -> SearchSpace:
        declared: dict[str, Choice] = {}
        for mutator in self.mutators:
            if isinstance(mutator, SiteMutator):
                for choice in mutator.declared_choices():
                    _merge_choice(declared, choice, mutator)
        builtin = _ordered(declared)
        custom = [m for m in self.mutators if not isinstance(m, SiteMutator)]
        if custom:
            graph = self.base.copy()
            default = self._default(builtin)
            for mutator in self.mutators:
                if isinstance(mutator, SiteMutator):
                    if mutator.applies(graph, default):
                        mutator.mutate_in_place(graph, default)
                    continue
                for choice in mutator.dry_run(graph):
                    if choice.label in declared:
                        raise IRError(f"{type(mutator).__name__} asks for label {choice.label!r}, which "
                                      f"another choice of the space already uses")
                    declared[choice.label] = choice
        return _ordered(declared)

    @staticmethod
    def _default(space: SearchSpace) -> Sample:
        sample: Sample = {}
        for label, choice in space.choices.items():
            if space.is_active(label, sample):
                sample[label] = choice.values[0]
        return sample

    @property
    def size(self) -> int:
        return self.search_space.size

    def choices(self) -> dict[str, list[Any]]:
        """label -> candidate values."""
        return self.search_space.as_dict()

    def grid(self) -> Iterator[Sample]:
        return self.search_space.grid()

    def random_sample(self, seed: random.Random | int | None = None) -> Sample:
        return self.search_space.random_sample(seed)

    def default_sample(self) -> Sample:
        """Every active choice at its first candidate."""
        return self._default(self.search_space)

    def validate(self, sample: Mapping[str, Any]) -> Sample:
        return self.search_space.validate(sample)

    # ------------------------------------------------------------------ freezing
    def freeze(self, sample: Mapping[str, Any]) -> Graph:
        """The concrete graph of ``sample``: validated, mutated, re-typed; history in ``meta``."""
        clean = self.search_space.validate(sample)
        graph, _, history = apply_mutators(self.base, self.mutators, clean)
        eliminate_dead_code_keeping_state(graph, CHOICE_CLASS_NAMES)
        _check_resolved(graph, clean)
        _prune_module_types(graph)
        graph.meta["sample"] = dict(clean)
        graph.meta["derived_from"] = {"graph": self.base.name, "structural_hash": self._base_hash}
        graph.meta["history"] = history
        infer_after_mutation(graph, clean, self.trust)
        graph.validate(check_types=False, trust=self.trust)
        return graph

    def frozen_state(self, graph: Graph) -> dict[str, torch.Tensor]:
        """The frozen weights ``graph`` starts from and never trains, under every name it has
        for them (tied weights included). A layer's frozen weights come all or none: none when
        the layer sits inside a choice (freezing renames a candidate's layers, so a name may
        then stand for another candidate) or when a choice changes one of their shapes. Those
        layers train from the seed, with a warning, once per space and layer."""
        from ..interpreter import build_module

        if not self.frozen_weights:
            return {}
        shapes = {k: v.shape for k, v in build_module(graph, self.trust, device="meta").state_dict().items()}
        layers: dict[str, list[str]] = {}
        for key in self.frozen_weights:
            layers.setdefault(key.rpartition(".")[0], []).append(key)
        carried = {}
        for layer, keys in layers.items():
            if not any(k in shapes for k in keys):
                continue  # not in this model (an unchosen candidate, a pruned branch)
            reason = self._frozen_layer_problem(layer, keys, shapes)
            if reason is None:
                carried.update((k, self.frozen_weights[k]) for k in keys)
            elif layer not in self._warned_layers:
                self._warned_layers.add(layer)
                warnings.warn(f"the frozen weights of {layer!r} are not carried into the models of this space "
                              f"({reason}): those models train them from their seed", stacklevel=2)
        return carried

    def frozen_fingerprint(self) -> str:
        """A digest of the frozen weights' names and values: two builds of a space that load
        different pretrained files have different fingerprints."""
        digest = hashlib.sha256()
        for key in sorted(self.frozen_weights):
            value = self.frozen_weights[key].detach().cpu().contiguous()
            digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
            digest.update(value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        return digest.hexdigest()

    def _frozen_layer_problem(self, layer: str, keys: list[str], shapes: dict) -> str | None:
        parts = layer.split(".")
        for i in range(1, len(parts) + 1):
            spec = self.base.modules.get(".".join(parts[:i]))
            if spec is not None and spec.class_name in CHOICE_CLASS_NAMES:
                return f"they sit inside the choice {'.'.join(parts[:i])!r}"
        for key in keys:
            if key not in shapes or shapes[key] != self.frozen_weights[key].shape:
                return f"a choice changes the shape of {key!r}"
        return None

    def fixed_arch(self, sample: Mapping[str, Any]):
        """``with space.fixed_arch(sample): model = MySpace()`` builds the plain module."""
        from .fixed import fixed_arch

        return fixed_arch(sample, space=self)

    def __repr__(self) -> str:
        return (f"<ModelSpace {self.base.name!r}: {len(self.search_space)} choices, size {self.size}, "
                f"{len(self.mutators)} mutators>")


def trace_space(model: nn.Module, example_inputs: Any = (), example_kwargs: dict | None = None, *,
                mutators: Iterable[Mutator] = (), batch_dim: int | None = 0,
                leaf_modules: Iterable[type | str] = (), trust: Iterable[str] = ()) -> ModelSpace:
    """Trace a model written with ``retiarii_ir.nn`` choices into a ModelSpace."""
    return ModelSpace.from_module(model, example_inputs, example_kwargs, mutators=mutators,
                                  batch_dim=batch_dim, leaf_modules=leaf_modules, trust=trust)


def _merge_choice(declared: dict[str, Choice], choice: Choice, mutator: Mutator) -> None:
    """Shared labels decide together: same candidates required; differing parents make it top-level."""
    known = declared.get(choice.label)
    if known is None:
        declared[choice.label] = choice
        return
    if [value_key(v) for v in known.values] != [value_key(v) for v in choice.values]:
        raise IRError(f"label {choice.label!r} is shared by choices with different candidates: "
                      f"{list(known.values)} and {list(choice.values)} (at {getattr(mutator, 'site', mutator)!r}); "
                      f"give them different labels or the same candidates")
    if known.parent != choice.parent:
        declared[choice.label] = Choice(known.label, known.values, None, known.kind)


def _ordered(declared: Mapping[str, Choice]) -> SearchSpace:
    """Parents before children, otherwise in discovery order."""
    space = SearchSpace()
    pending = list(declared.values())
    while pending:
        progress = False
        for choice in list(pending):
            parent = choice.parent
            if parent is not None and parent[0] not in declared:
                choice = Choice(choice.label, choice.values, None, choice.kind)
                parent = None
            if parent is None or parent[0] in space.choices:
                space.add(choice)
                pending = [c for c in pending if c.label != choice.label]
                progress = True
        if not progress:
            raise IRError(f"choices {[c.label for c in pending]} depend on each other in a cycle")
    return space


def _prune_module_types(graph: Graph) -> None:
    """Forget the class names of modules that hold nothing any more (unchosen candidates)."""
    paths = [*graph.modules, *graph.attributes, *graph.aliases]
    keep = {""}
    for path in paths:
        parts = path.split(".")
        keep.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    graph.module_types = {q: t for q, t in graph.module_types.items() if q in keep}


def _check_resolved(graph: Graph, sample: Mapping[str, Any]) -> None:
    for node in graph.nodes:
        if node.op == "call_module" and graph.modules.get(node.target) is not None \
                and graph.modules[node.target].is_opaque and graph.modules[node.target].class_name in CHOICE_CLASS_NAMES:
            raise GraphValidationError(f"choice point {node.target!r} ({node.describe()}) was not resolved by "
                                       f"sample {dict(sample)}; is its label active?")


__all__ = ["InvalidSampleError", "ModelSpace", "trace_space"]
