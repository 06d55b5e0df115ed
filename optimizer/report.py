"""What a plan did, in the user's own terms: per trial, which of its nodes run alone, which are
computed once with other trials (CSE) and which run in one kernel with other trials
(batching), named by the trial's own module paths (``layer2.0.conv1``), not merged names."""

from __future__ import annotations

from dataclasses import dataclass, field

from retiarii_ir import Graph
from retiarii_ir.node import TRAINING_FLAG, Node

from .roles import node_roles


@dataclass
class TrialView:
    """One trial's nodes by what merging did to them (each a label from its own model)."""

    name: str
    starts_from: str
    own: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)
    batched: list[str] = field(default_factory=list)
    shared_with: list[str] = field(default_factory=list)  # the other trials it shares nodes with
    batched_with: list[str] = field(default_factory=list)


@dataclass
class MergedNode:
    """A node of the merged graph that stands for trials' nodes: how (own, shared or batched)
    and, for each, ``(trial, label)``."""

    name: str
    how: str
    members: list[tuple[str, str]]
    kind: str = ""  # a batched group's kind and width ("Conv2d x4")


def label(node: Node) -> str:
    """A node as its model's author knows it: the module path of a layer call, the path of a
    weight read, or the function inside the module whose forward calls it."""
    if node.op in ("call_module", "get_attr"):
        return node.target
    short = node.target.rsplit(".", 1)[-1] if isinstance(node.target, str) else str(node.target)
    return f"{node.scope}: {short}" if node.scope else short


def merged_nodes(plan) -> list[MergedNode]:
    """Every merged node that stands for trials' own nodes, in the merged graph's order."""
    graphs: dict[str, Graph] = {slot.trial.name: slot.trial.graph for slot in plan.slots}
    kinds = {b.fused: f"{b.kind} x{b.width}" for b in plan.batched}
    roles = node_roles(plan)
    found = []
    for node in plan.graph.nodes:
        if node.op in ("input", "output") or node.op == "get_attr" and node.target == TRAINING_FLAG:
            continue
        members = [(trial, label(graphs[trial].node(name))) for trial, name in node.origin
                   if trial in graphs and name in graphs[trial]]
        if not members:
            continue  # made by batching to feed or cut a fused kernel: no trial wrote it
        found.append(MergedNode(node.name, roles[node.name].kind, members, kinds.get(node.name, "")))
    return found


def trial_views(plan, merged_list: list[MergedNode] | None = None) -> list[TrialView]:
    """Per trial, in trial order: its nodes by what merging did to them (from ``merged_list``,
    the plan's ``merged_nodes``, when the caller has them already)."""
    views = {s.trial.name: TrialView(s.trial.name, s.trial.starts_from) for s in plan.slots}
    for merged in merged_nodes(plan) if merged_list is None else merged_list:
        trials = sorted({t for t, _ in merged.members}, key=list(views).index)
        for trial, name in merged.members:
            view = views[trial]
            getattr(view, merged.how).append(name)
            if merged.how != "own":
                others = getattr(view, f"{merged.how}_with")
                others.extend(t for t in trials if t != trial and t not in others)
    for view in views.values():
        view.shared_with.sort(key=list(views).index)
        view.batched_with.sort(key=list(views).index)
    return list(views.values())


def _with(names: list[str], everyone: int) -> str:
    if not names:
        return "-"
    if len(names) == everyone - 1 and everyone > 2:
        return "all others"
    return ", ".join(names)


def describe(plan) -> list[str]:
    """The plan's per-trial table, then every node it merged, as lines of text."""
    merged_list = merged_nodes(plan)
    views = trial_views(plan, merged_list)
    rows = [("trial", "starts from", "own", "shared", "batched", "shared with", "batched with")]
    rows += [(v.name, v.starts_from, str(len(v.own)), str(len(v.shared)), str(len(v.batched)),
              _with(v.shared_with, len(views)), _with(v.batched_with, len(views))) for v in views]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(cell.rjust(w) if 2 <= i <= 4 else cell.ljust(w)
                              for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    listed = [m for m in merged_list if m.how != "own"]
    if listed:
        lines.append("  computed once for several trials, or batched into one kernel:")
        for merged in listed:
            what = "shared" if merged.how == "shared" else f"batched ({merged.kind})"
            lines.append(f"    {what}: " + ", ".join(f"{t}: {name}" for t, name in merged.members))
    for view in views:
        if view.own:
            lines.append(f"  {view.name} alone: " + ", ".join(view.own))
    return lines
