"""Which of a trial's layers run in eval mode while it trains.

A user fine-tuning a head keeps the frozen backbone in ``eval()``: its batch norms use their
running statistics and leave them alone, its dropout is off. A trial says so with
``frozen_mode="eval"`` (every module whose parameters are all frozen) or names the modules
(``eval_modules=("backbone",)``). Only leaf layers (the graph's module calls) behave by
mode, so the answer is the set of leaf layers under those modules.
"""

from __future__ import annotations

from retiarii_ir import Graph, build_module

from .trial import Trial, TrialSpecError


def eval_layers(trial: Trial, trust: tuple[str, ...] = ()) -> frozenset[str]:
    """The trial's leaf layers (module paths of its graph) that run in eval mode."""
    roots = eval_roots(trial, trust)
    if not roots:
        return frozenset()
    return frozenset(q for q in trial.graph.modules if any(_under(q, root) for root in roots))


def eval_roots(trial: Trial, trust: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The outermost modules that run in eval mode ("" is the whole model)."""
    paths = set(trial.graph.module_types) | set(trial.graph.modules)
    unknown = [p for p in trial.eval_modules if p not in paths]
    if unknown:
        raise TrialSpecError(f"trial {trial.name!r}: eval_modules {unknown} are not modules of its model "
                             f"(it has {sorted(p for p in paths if p)[:8]})")
    roots = set(trial.eval_modules)
    if trial.frozen_mode == "eval":
        roots |= _all_frozen_modules(trial.graph, frozenset(trial.frozen), paths, trust)
    return tuple(sorted(r for r in roots if not any(_under(r, other) and r != other for other in roots)))


def _all_frozen_modules(graph: Graph, frozen: frozenset[str], paths: set[str], trust: tuple[str, ...]) -> set[str]:
    parameters = _parameter_keys(graph, trust)
    found = set()
    for path in paths:
        own = [key for key in parameters if _under(key, path)]
        if own and all(key in frozen for key in own):
            found.add(path)
    return found


def _parameter_keys(graph: Graph, trust: tuple[str, ...]) -> list[str]:
    """Found on the meta device: nothing is allocated."""
    return [name for name, _ in build_module(graph, trust, device="meta").named_parameters()]


def _under(key: str, path: str) -> bool:
    return path == "" or key == path or key.startswith(path + ".")


def fixed_keys(trial: Trial, layers: frozenset[str], trust: tuple[str, ...] = ()) -> set[str]:
    """State keys whose values never change while the trial trains: its frozen ones, and the
    buffers of its eval-mode ``layers`` (``eval_layers(trial)``: running statistics are used,
    not updated)."""
    if not layers:
        return set(trial.frozen)
    module = build_module(trial.graph, trust, device="meta")
    parameters = {name for name, _ in module.named_parameters()}
    buffers = [key for key in module.state_dict() if key not in parameters]
    return set(trial.frozen) | {key for key in buffers if any(_under(key, layer) for layer in layers)}
