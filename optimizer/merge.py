"""Put K trial graphs side by side in one graph; with input dedup, trials that read the same
batches share one input node, so whatever they compute from it alike can be shared next.

Every copied node keeps where it came from (``node.origin``: trial and node name); modules,
parameters, buffers and constants of trial k live under the prefix ``t{k}``, so each
trial's state_dict keys map to merged keys by that prefix alone.
"""

from __future__ import annotations

import copy

import torch

from retiarii_ir import Graph, TupleType, build_module
from retiarii_ir.errors import IRError
from retiarii_ir.node import TRAINING_FLAG, Node, map_args

from .state import StateRef
from .trial import Trial, TrialSpecError


class MergeError(IRError):
    """Trials that cannot be put into one graph (no input, several data inputs...)."""


def trial_state_keys(graph: Graph, trust: tuple[str, ...] = ()) -> list[str]:
    """The state_dict keys of a graph's module, found on the meta device (nothing allocated)."""
    return list(build_module(graph, trust, device="meta").state_dict().keys())


def merge_trials(trials: list[Trial], dedup_inputs: bool = True,
                 trust: tuple[str, ...] = ()) -> tuple[Graph, list[dict], list[dict[str, StateRef]]]:
    """The merged graph, for each trial the names of the merged inputs it reads, and for each
    trial where its state_dict entries live in the merged module (``trust``: packages whose
    layers may be built, beyond those each graph trusts)."""
    if not trials:
        raise MergeError("nothing to merge: no trials")
    merged = Graph("Merged")
    shared_inputs: dict[tuple, Node] = {}
    outputs: list[Node | object] = []
    inputs_of: list[dict] = []
    state_maps: list[dict[str, StateRef]] = []
    for k, trial in enumerate(trials):
        prefix = f"t{k}"
        mapping: dict[str, Node] = {}
        inputs = [n for n in trial.graph.nodes if n.op == "input"]
        if not inputs:
            raise MergeError(f"trial {trial.name!r}: its graph has no input")
        names = []
        for index, node in enumerate(inputs):
            key = (trial.data, index, str(node.type))  # the forward argument's name does not matter
            if dedup_inputs and key in shared_inputs:
                mapping[node.name] = shared_inputs[key]
            else:
                base = node.target if dedup_inputs and not shared_inputs else f"{prefix}_{node.target}"
                new = merged.add_node("input", merged.unique_name(base), node.args, node.kwargs,
                                      name=merged.unique_name(base), type=node.type)
                new.meta["origin"] = [(trial.name, node.name)]
                mapping[node.name] = shared_inputs.setdefault(key, new) if dedup_inputs else new
            names.append(mapping[node.name].name)
        inputs_of.append({"names": names})
        _copy_body(trial, prefix, merged, mapping)
        outputs.append(map_args(trial.graph.output.args[0], lambda n: mapping[n.name]))
        _copy_state(trial.graph, prefix, merged)
        keys = trial_state_keys(trial.graph, trust)
        _check_frozen_keys(trial, keys)
        state_maps.append({key: StateRef(f"{prefix}.{key}") for key in keys})
    merged.add_node("output", "output", (tuple(outputs),), name="output",
                    type=TupleType(tuple(t.graph.output.type for t in trials)))
    _order_inputs_first(merged)
    return merged, inputs_of, state_maps


def _check_frozen_keys(trial: Trial, keys: list[str]) -> None:
    """A frozen name that is no state_dict key of the model would freeze nothing, silently."""
    known = set(keys)
    unknown = [k for k in trial.frozen if k not in known]
    if unknown:
        inside = [k for k in keys if any(k.startswith(u + ".") for u in unknown)]
        hint = f"; a module's keys are its tensors' ({', '.join(inside[:4])}...)" if inside else ""
        raise TrialSpecError(f"trial {trial.name!r}: frozen names {unknown[:5]} are not state_dict keys of its model"
                             f"{hint}")


def _copy_body(trial: Trial, prefix: str, merged: Graph, mapping: dict[str, Node]) -> None:
    for node in trial.graph.nodes:
        if node.op in ("input", "output"):
            continue
        target = node.target
        if node.op == "call_module" or node.op == "get_attr" and target != TRAINING_FLAG:
            target = f"{prefix}.{target}"
        elif node.op == "constant":
            target = f"{prefix}_{target}"
        new = merged.add_node(
            node.op, target, map_args(node.args, lambda n: mapping[n.name]),
            map_args(node.kwargs, lambda n: mapping[n.name]), name=merged.unique_name(f"{prefix}_{node.name}"),
            type=node.type, scope=f"{prefix}.{node.scope}" if node.scope else prefix)
        new.meta["origin"] = [(trial.name, node.name)]
        mapping[node.name] = new


def _copy_state(graph: Graph, prefix: str, merged: Graph) -> None:
    for qualname, spec in graph.modules.items():
        merged.modules[f"{prefix}.{qualname}"] = copy.deepcopy(spec)
    for qualname, attr in graph.attributes.items():
        merged.attributes[f"{prefix}.{qualname}"] = copy.deepcopy(attr)
    for alias, original in graph.aliases.items():
        merged.aliases[f"{prefix}.{alias}"] = f"{prefix}.{original}"
    for key, tensor in graph.constants.items():
        merged.constants[f"{prefix}_{key}"] = tensor.clone()
    for qualname, name in graph.module_types.items():
        merged.module_types[f"{prefix}.{qualname}" if qualname else prefix] = name


def _order_inputs_first(graph: Graph) -> None:
    """Inputs lead the node list, in the order they were made (the merged forward's signature)."""
    inputs = [n for n in graph.nodes if n.op == "input"]
    rest = [n for n in graph.nodes if n.op != "input"]
    graph.reorder(inputs + rest)


def initial_state(trial: Trial, trust: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The weights a trial starts from (``trial.starts_from``): its ``initial_state``, the traced
    model's own weights, or fresh ones from its seed."""
    torch.manual_seed(trial.train.seed)
    state = build_module(trial.graph, trust).state_dict()
    given = trial.initial_state if trial.initial_state is not None else trial.graph.weights
    if given is not None:
        missing = set(state) - set(given)
        if missing:
            raise MergeError(f"trial {trial.name!r}: initial_state lacks {sorted(missing)[:5]}")
        wrong = [k for k in state if not isinstance(given[k], torch.Tensor) or given[k].shape != state[k].shape]
        if wrong:
            raise MergeError(f"trial {trial.name!r}: initial_state has tensors of other shapes than its "
                             f"model's for {wrong[:5]}")
        state = {k: given[k].detach().clone() for k in state}
    return state
