"""``plan(trials)``: K trials as one merged graph, the map back to each trial, and a report.

    plan = optimizer.plan(trials)                    # all passes
    plan = optimizer.plan(trials, passes=("dedup",))  # input dedup only
    print(plan)                                      # what was shared and batched

The merged graph is an ordinary Graph (validates, round-trips JSON, generates code); its
output is the tuple of every trial's output, in trial order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from retiarii_ir import Graph
from retiarii_ir.errors import IRError

from .batching import BatchedGroup, batch_operators
from .cost import node_flops
from .cse import SharedNode, eliminate_common_subgraphs
from .matching import FuseDecision
from .merge import initial_state, merge_trials
from .modes import eval_layers, fixed_keys
from .report import TrialView, describe, trial_views
from .state import KeyIndex, StateRef, extract_trial_state, load_trial_state
from .trial import Trial

PASSES = ("dedup", "cse", "batch")
EXACT_PASSES = ("dedup", "cse")  # results equal training alone bit for bit; batching rounds otherwise


class PlanError(IRError):
    """Trials that cannot be planned together, or an unknown pass."""


@dataclass
class TrialSlot:
    """Where one trial lives in the merged graph."""

    trial: Trial
    output: int  # index into the merged output tuple
    inputs: list[str]  # merged input names it reads, in its own input order
    state: dict[str, StateRef]  # its state_dict key -> place in the merged module


@dataclass(frozen=True)
class TrialTensor:
    """One trainable tensor of a trial in the merged module: ``param``, or rows ``rows`` of it."""

    key: str  # the trial's own state_dict key
    param: nn.Parameter
    rows: tuple[int, int] | None = None

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        """The trial's part of ``tensor`` (``param`` itself, its gradient or optimizer state)."""
        return tensor if self.rows is None else tensor[self.rows[0]:self.rows[1]]


@dataclass
class Plan:
    graph: Graph
    slots: list[TrialSlot]
    passes: tuple[str, ...]
    shared: list[SharedNode] = field(default_factory=list)
    batched: list[BatchedGroup] = field(default_factory=list)
    flops_alone: int = 0  # one sample through every trial, each trained alone
    flops_merged: int = 0  # one sample through the merged graph
    eval_layers: tuple[str, ...] = ()  # merged layers that run in eval mode while the rest trains
    trust: tuple[str, ...] = ()  # packages it may build from beyond what its trials' graphs trust

    def __repr__(self) -> str:
        return (f"<Plan: {len(self.slots)} trials, passes {', '.join(self.passes) or 'none'}, "
                f"{len(self.graph.nodes)} nodes, {len(self.shared)} shared, {len(self.batched)} batched>")

    @property
    def trials(self) -> list[Trial]:
        return [s.trial for s in self.slots]

    @property
    def inputs(self) -> list[str]:
        """The merged graph's inputs, in its forward's order."""
        return [n.target for n in self.graph.inputs]

    def trial_state(self, module: nn.Module, index: int) -> dict[str, torch.Tensor]:
        """Trial ``index``'s own state_dict (loads strictly into its standalone module)."""
        return extract_trial_state(module, self.slots[index].state)

    def load_trial_state(self, module: nn.Module, index: int, state: dict[str, torch.Tensor]) -> None:
        load_trial_state(module, self.slots[index].state, state)

    def initialise(self, module: nn.Module) -> None:
        """Give every trial its starting weights (``initial_state`` or its seed)."""
        for index, slot in enumerate(self.slots):
            self.load_trial_state(module, index, initial_state(slot.trial, self.trust))

    def train_mode(self, module: nn.Module) -> nn.Module:
        """``module.train()``, with the trials' eval-mode layers (``Trial.frozen_mode``) in eval."""
        module.train()
        for qualname in self.eval_layers:
            module.get_submodule(qualname).eval()
        return module

    def trial_parameters(self, module: nn.Module, index: int) -> list[TrialTensor]:
        """The tensors that train for trial ``index`` (frozen ones excluded), in its state_dict
        order: a whole parameter of ``module``, or the trial's rows of a stacked one."""
        slot = self.slots[index]
        named = dict(module.named_parameters())
        return [TrialTensor(key, named[ref.key], ref.rows) for key, ref in slot.state.items()
                if key not in slot.trial.frozen and ref.key in named]

    def __str__(self) -> str:
        lines = [f"plan: {_count(len(self.slots), 'trial')}, passes {', '.join(self.passes) or 'none'}; "
                 f"merged graph {len(self.graph.nodes)} nodes"]
        lines.append(f"  inputs: {len(self.graph.inputs)} for {len(self.slots)} trials"
                     + (" (batches read once per distinct data spec)" if "dedup" in self.passes else ""))
        if self.flops_alone:
            saved = 1 - self.flops_merged / self.flops_alone
            lines.append(f"  estimated work per sample: {self.flops_alone / 1e6:.2f} MFLOP alone, "
                         f"{self.flops_merged / 1e6:.2f} MFLOP merged ({saved:.0%} saved by sharing)")
        if self.batched:
            lines.append(f"  batched: {len(self.batched)} fused nodes replace {sum(b.width for b in self.batched)}")
        if self.eval_layers:
            lines.append(f"  in eval mode while training: {_count(len(self.eval_layers), 'layer')}")
        return "\n".join(lines + describe(self))

    def trial_views(self) -> list[TrialView]:
        """Per trial: its nodes (by its own module paths) that run alone, shared, or batched."""
        return trial_views(self)

def plan(trials: list[Trial], passes: tuple[str, ...] | list[str] = PASSES, fuse: FuseDecision | None = None,
         trust: tuple[str, ...] | list[str] = ()) -> Plan:
    """Merge ``trials`` into one graph with the given passes (any subset of ``PASSES``).

    ``fuse(group) -> bool`` decides whether fusing a group of same-shaped convolutions pays
    (grouped convolutions are slow on some CPUs); without it every group that can fuse does.
    The trainer passes a decision that times the kernels (``retiarii_ir.runtime.training.fusing_pays``);
    the planner itself never runs or times anything. ``trust`` names the packages whose layers
    the merged graph may build, beyond those each trial's graph trusts already (its traced
    model's own)."""
    passes = tuple(passes)
    unknown = set(passes) - set(PASSES)
    if unknown:
        raise PlanError(f"unknown passes {sorted(unknown)}; choose from {PASSES}")
    if not trials:
        raise PlanError("plan needs at least one trial")
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise PlanError(f"trial names must be unique, got {names}")
    if isinstance(trust, str):
        raise PlanError("trust is a list of package names, not one string")
    trust = tuple(trust)
    graph, inputs_of, state_maps = merge_trials(trials, dedup_inputs="dedup" in passes, trust=trust)
    graph.trust = tuple(dict.fromkeys([*(p for t in trials for p in t.graph.trust), *trust]))
    layers_of = [eval_layers(t, trust) for t in trials]
    layers = frozenset(f"t{k}.{q}" for k, own in enumerate(layers_of) for q in own)
    flops_alone = sum(node_flops(t.graph, n) for t in trials for n in t.graph.nodes)
    shared: list[SharedNode] = []
    if "cse" in passes:
        frozen_values = _frozen_merged_values(trials, state_maps, layers_of, trust)
        shared = eliminate_common_subgraphs(graph, state_maps, frozen_values, layers)
    flops_merged = sum(node_flops(graph, n) for n in graph.nodes)  # batching saves launches, not FLOPs
    batched: list[BatchedGroup] = []
    if "batch" in passes:
        trial_of = _trial_of(graph, trials)
        trainable = _trainable_modules(graph, trials, state_maps) - layers  # a layer's mode is its own
        batch_of = {k: t.data.batch_size for k, t in enumerate(trials)}
        optimizer_of = {k: t.train.optimizer for k, t in enumerate(trials)}
        graph, batched = batch_operators(graph, trial_of, trainable, state_maps, batch_of, fuse, optimizer_of)
    slots = [TrialSlot(t, k, inputs_of[k]["names"], state_maps[k]) for k, t in enumerate(trials)]
    in_eval = tuple(sorted({n.target for n in graph.nodes if n.op == "call_module" and n.target in layers}))
    return Plan(graph, slots, passes, shared, batched, flops_alone, flops_merged, in_eval, trust)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _frozen_merged_values(trials: list[Trial], state_maps: list[dict[str, StateRef]],
                          layers_of: list[frozenset[str]], trust: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The merged keys whose values never change in training, with their starting values."""
    values: dict[str, torch.Tensor] = {}
    for trial, refs, layers in zip(trials, state_maps, layers_of):
        keys = fixed_keys(trial, layers, trust)
        if not keys:
            continue
        state = initial_state(trial, trust)
        for key in keys:
            if key in refs:
                values[refs[key].key] = state[key]
    return values


def _trial_of(graph: Graph, trials: list[Trial]) -> dict[str, int]:
    index = {t.name: k for k, t in enumerate(trials)}
    owner = {}
    for node in graph.nodes:
        origin = {t for t, _ in node.origin}
        if len(origin) == 1:
            owner[node.name] = index[next(iter(origin))]
    return owner


def _trainable_modules(graph: Graph, trials: list[Trial], state_maps: list[dict[str, StateRef]]) -> set[str]:
    """Modules every one of whose state entries trains (a layer with its own weights)."""
    frozen = {refs[k].key for t, refs in zip(trials, state_maps) for k in t.frozen if k in refs}
    index = KeyIndex({ref.key for refs in state_maps for ref in refs.values()})
    trainable = set()
    for qualname in graph.modules:
        own = index.under(qualname)
        if own and not any(k in frozen for k in own):
            trainable.add(qualname)
    return trainable
