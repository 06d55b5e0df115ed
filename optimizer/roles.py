"""What each node of a merged plan is to the trials: one trial's own, shared (computed once for
several trials: common-subgraph elimination or a deduplicated input), batched (one fused kernel
for several trials' layers), or the plan's own glue (slices of a fused value, the joint output).
Read from the nodes' origins and the plan's batched groups, so it holds for any plan."""

from __future__ import annotations

from dataclasses import dataclass

OWN, SHARED, BATCHED, GLUE = "own", "shared", "batched", "glue"


@dataclass(frozen=True)
class NodeRole:
    kind: str  # own | shared | batched | glue
    trials: tuple[str, ...]  # the trials the node serves, in plan order


def node_roles(plan) -> dict[str, NodeRole]:
    """node name -> its role, for every node of ``plan.graph``."""
    order = [slot.trial.name for slot in plan.slots]
    fused = {group.fused for group in plan.batched}
    readers: dict[str, list[str]] = {}
    for slot in plan.slots:  # a deduplicated input keeps the first trial's origin: its readers tell
        for name in slot.inputs:
            readers.setdefault(name, []).append(slot.trial.name)
    roles = {}
    for node in plan.graph.nodes:
        served = {trial for trial, _ in node.origin} | set(readers.get(node.name, ()))
        trials = tuple(t for t in order if t in served)
        if node.name in fused:
            kind = BATCHED
        elif len(trials) > 1:
            kind = SHARED
        elif trials:
            kind = OWN
        else:
            kind = GLUE
        roles[node.name] = NodeRole(kind, trials)
    return roles
