"""Which nodes of different trials run as one fused node: layers matched by module path and
what they are, regions grown through ops every trial applies alike, and an order to emit
groups and single nodes in (a group waiting on itself through another is split again)."""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from retiarii_ir import Graph, TensorType
from retiarii_ir.node import Node, map_args

CHANNEL, LEADING = "channel", "leading"
_ANCHOR_LAYOUT = {"Conv2d": CHANNEL, "BatchNorm2d": CHANNEL, "BatchNorm1d": CHANNEL,
                  "Linear": LEADING, "LayerNorm": LEADING}
_ELEMENTWISE_MODULES = {"ReLU", "ReLU6", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh", "GELU", "SiLU",
                        "LeakyReLU", "ELU", "Mish", "Softplus", "Identity"}
_CHANNELWISE_MODULES = {"MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"}
_ELEMENTWISE_FUNCTIONS = {
    "torch.relu", "torch.sigmoid", "torch.tanh", "torch.nn.functional.relu", "torch.nn.functional.relu6",
    "torch.nn.functional.gelu", "torch.nn.functional.silu", "torch.nn.functional.hardswish",
    "torch.nn.functional.hardsigmoid", "torch.nn.functional.leaky_relu", "torch.nn.functional.elu",
    "torch.nn.functional.sigmoid", "torch.nn.functional.tanh", "torch.nn.functional.mish",
}
_CHANNELWISE_FUNCTIONS = {"torch.nn.functional.max_pool2d", "torch.nn.functional.avg_pool2d",
                          "torch.nn.functional.adaptive_avg_pool2d", "torch.nn.functional.adaptive_max_pool2d",
                          "torch.max_pool2d", "torch.avg_pool2d", "torch._C._nn.avg_pool2d"}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh"}
_BINARY = {"operator.add", "operator.sub", "operator.mul", "torch.add", "torch.sub", "torch.mul"}


@dataclass(eq=False)
class Group:
    """Nodes of different trials (one each, in trial order) that run as one fused node."""

    members: list[Node]
    kind: str  # a layer class name, or "lane" for an op applied to each trial's slice alike
    layout: str
    trials: tuple[int, ...]
    lane_args: tuple[int, ...] = (0,)  # which arguments are the trials' slices
    id: int = field(default_factory=itertools.count().__next__)

    @property
    def width(self) -> int:
        return len(self.members)


# ---------------------------------------------------------------------- matching
def _spec_key(graph: Graph, node: Node) -> str | None:
    spec = graph.modules.get(node.target)
    if spec is None or spec.kwargs is None:
        return None
    from retiarii_ir.serialize import encode_value

    return spec.class_name + json.dumps(encode_value(spec), sort_keys=True)


def _anchor_kind(graph: Graph, node: Node, trainable: set[str], built: dict) -> str | None:
    """The layer class when ``node`` is a layer call that batching can fuse, else None."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], Node):
        return None
    spec = graph.modules.get(node.target)
    if spec is None or spec.kwargs is None or spec.class_name not in _ANCHOR_LAYOUT or node.target not in trainable:
        return None
    module = built.setdefault(node.target, _meta_module(spec))
    in_type, out_type = node.args[0].type, node.type
    if not (isinstance(in_type, TensorType) and isinstance(out_type, TensorType)):
        return None
    name = spec.class_name
    if name == "Conv2d" and (module.padding_mode != "zeros" or in_type.rank != 4):
        return None
    if name.startswith("BatchNorm") and not (module.affine and module.track_running_stats
                                             and module.momentum is not None and in_type.rank in (2, 3, 4)):
        return None
    if name == "LayerNorm" and not (module.elementwise_affine and module.bias is not None
                                    and len(module.normalized_shape) == 1):
        return None
    if name == "Linear" and in_type.rank not in (2, 3):
        return None
    return name


def _meta_module(spec) -> torch.nn.Module:
    with torch.device("meta"):
        return spec.build()


def _strip(path: str, prefix: str) -> str:
    return path[len(prefix) + 1:] if path.startswith(prefix + ".") else path


@dataclass(frozen=True)
class ConvFusion:
    """A group of same-shaped convolutions of ``width`` trials that could run as one grouped
    kernel: what a caller's ``fuse`` decision sees (the shapes a timing needs)."""

    width: int
    batch: int
    in_channels: int
    out_channels: int
    size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int


FuseDecision = Callable[[ConvFusion], bool]


def find_anchor_groups(graph: Graph, trial_of: dict[str, int], trainable: set[str], built: dict,
                       batch_of: dict[int, int] | None = None, fuse: FuseDecision | None = None) -> list[Group]:
    """Layers of different trials at the same module path with the same class, arguments and
    types. A module called more than once in one trial is left alone. With ``fuse`` (and
    ``batch_of``, trial -> batch size), a convolution group is kept only where ``fuse`` says
    fusing it pays; the planner itself never times anything."""
    by_key: dict[tuple, dict[int, list[Node]]] = {}
    for node in graph.nodes:
        k = trial_of.get(node.name)
        kind = _anchor_kind(graph, node, trainable, built) if k is not None else None
        if kind is None:
            continue
        key = (_strip(node.target, f"t{k}"), _spec_key(graph, node), str(node.args[0].type), str(node.type))
        by_key.setdefault(key, {}).setdefault(k, []).append(node)
    groups = []
    for per_trial in by_key.values():
        if len(per_trial) < 2 or any(len(nodes) != 1 for nodes in per_trial.values()):
            continue
        trials = tuple(sorted(per_trial))
        members = [per_trial[k][0] for k in trials]
        kind = graph.modules[members[0].target].class_name
        if kind == "Conv2d" and fuse is not None and batch_of is not None:
            candidate = _conv_fusion(members, built, batch_of[trials[0]])
            if candidate is not None and not fuse(candidate):
                continue
        groups.append(Group(members, kind, _ANCHOR_LAYOUT[kind], trials))
    return groups


def _conv_fusion(members: list[Node], built: dict, batch: int) -> ConvFusion | None:
    """The shapes of a convolution group; None where its input size is not known (it fuses)."""
    m = built[members[0].target]
    shape = members[0].args[0].type.shape
    if not all(isinstance(d, int) for d in shape[1:]):
        return None
    return ConvFusion(len(members), batch, m.in_channels, m.out_channels, tuple(shape[2:]), tuple(m.kernel_size),
                      tuple(m.stride), m.padding if isinstance(m.padding, str) else tuple(m.padding),
                      tuple(m.dilation), m.groups)


def _lane_descriptor(graph: Graph, node: Node) -> tuple[str, bool] | None:
    """(what the op is, whether it needs the channel layout) for ops batching can apply to the
    stacked tensor directly; None for any other op."""
    if node.op == "call_module":
        spec = graph.modules.get(node.target)
        if spec is None or spec.kwargs is None or not node.args:
            return None
        if spec.class_name in _ELEMENTWISE_MODULES:
            return _spec_key(graph, node), False
        if spec.class_name in _CHANNELWISE_MODULES:
            return _spec_key(graph, node), True
        return None
    if node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS | _CHANNELWISE_FUNCTIONS | _BINARY:
        return node.target, node.target in _CHANNELWISE_FUNCTIONS
    if node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
        return "method " + node.target, False
    return None


def _shape_of_call(node: Node, lanes: dict[int, tuple[Group, int]]) -> str:
    """The call with its lane arguments blanked out, so equal strings mean the same op."""
    from retiarii_ir.serialize import encode_value

    args = [None if i in lanes else a for i, a in enumerate(node.args)]
    # Other node arguments count by identity: every trial must read the very same value.
    return json.dumps([encode_value(map_args(args, lambda n: f"node:{n.name}")),
                       encode_value(map_args(node.kwargs, lambda n: f"node:{n.name}"))], sort_keys=True, default=str)


def grow_lane_groups(graph: Graph, groups: list[Group]) -> list[Group]:
    """Ops that every trial of a group applies alike to its own slice join the fused region."""
    slot: dict[str, tuple[Group, int]] = {}
    for group in groups:
        for index, member in enumerate(group.members):
            slot[member.name] = (group, index)
    grown: list[Group] = []
    worklist = list(groups)
    while worklist:
        group = worklist.pop()
        for user in group.members[0].users:
            if user.name in slot:
                continue
            candidate = _match_users(graph, user, group, slot)
            if candidate is None:
                continue
            for index, member in enumerate(candidate.members):
                slot[member.name] = (candidate, index)
            grown.append(candidate)
            worklist.append(candidate)
    return grown


def _match_users(graph: Graph, first: Node, group: Group, slot: dict[str, tuple[Group, int]]) -> Group | None:
    descriptor = _lane_descriptor(graph, first)
    if descriptor is None:
        return None
    what, needs_channels = descriptor
    if needs_channels and group.layout != CHANNEL:
        return None
    lanes = {i: slot[a.name] for i, a in enumerate(first.args) if isinstance(a, Node) and a.name in slot}
    if 0 not in lanes or any(index != 0 or g.trials != group.trials or g.layout != group.layout
                             for g, index in lanes.values()):
        return None
    if first.op == "call_function" and first.target in _BINARY and (len(first.args) != 2 or first.kwargs):
        return None
    shared_tensors = [a for i, a in enumerate(first.args) if i not in lanes and isinstance(a, Node)
                      and isinstance(a.type, TensorType) and a.type.rank > 0]
    if shared_tensors and group.layout == CHANNEL:  # [B, C] would not broadcast against [B, K*C]
        return None
    shape = _shape_of_call(first, lanes)
    members = [first]
    for lane in range(1, group.width):
        match = next((u for u in group.members[lane].users if u.name not in slot and u not in members
                      and _lane_descriptor(graph, u) == descriptor and all(
                          isinstance(u.args[i], Node) and slot.get(u.args[i].name) == (g, lane)
                          for i, (g, _) in lanes.items() if i < len(u.args))
                      and len(u.args) == len(first.args)
                      and _shape_of_call(u, lanes) == shape), None)
        if match is None:
            return None
        members.append(match)
    return Group(members, "lane", group.layout, group.trials, tuple(sorted(lanes)))


# ---------------------------------------------------------------------- scheduling
def schedule(graph: Graph, groups: list[Group]) -> list[Group | Node]:
    """Groups and single nodes in an order where everything a unit reads comes first. When
    groups wait on each other in a cycle, the earliest one is split back into single nodes."""
    position = {n.name: i for i, n in enumerate(graph.nodes)}
    unit_of: dict[str, Group | Node] = {n.name: n for n in graph.nodes}
    for group in groups:
        for member in group.members:
            unit_of[member.name] = group
    order: list[Group | Node] = []
    done: set[int] = set()
    while True:
        units = {id(u): u for u in unit_of.values() if id(u) not in done}
        if not units:
            return order
        progress = _topological(units, unit_of, position, done, order)
        if not progress:  # a cycle among the remaining groups: split the earliest one
            group = min((u for u in units.values() if isinstance(u, Group) and id(u) not in done),
                        key=lambda g: min(position[m.name] for m in g.members))
            for member in group.members:
                unit_of[member.name] = member


def _members(unit: Group | Node) -> list[Node]:
    return unit.members if isinstance(unit, Group) else [unit]


def _topological(units: dict, unit_of: dict, position: dict, done: set[int], order: list) -> bool:
    """Kahn's algorithm over the units not yet placed; False if it placed all it could and
    some remain (they wait on each other)."""
    waiting = {uid: {id(unit_of[i.name]) for m in _members(u) for i in m.inputs} - {uid} - done
               for uid, u in units.items()}
    dependents: dict[int, list[int]] = {}
    for uid, preds in waiting.items():
        for p in preds:
            dependents.setdefault(p, []).append(uid)
    key = lambda uid: min(position[m.name] for m in _members(units[uid]))  # noqa: E731
    ready = [(key(uid), uid) for uid, preds in waiting.items() if not preds]
    heapq.heapify(ready)
    placed = 0
    while ready:
        _, uid = heapq.heappop(ready)
        done.add(uid)
        order.append(units[uid])
        placed += 1
        for dependent in dependents.get(uid, ()):
            waiting[dependent].discard(uid)
            if not waiting[dependent]:
                heapq.heappush(ready, (key(dependent), dependent))
    return placed == len(units)
