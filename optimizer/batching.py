"""Operator batching (horizontal fusion): same-shaped layers of different trials, each with
its own weights, run as one kernel.

Layers are matched by where they sit in the model (module path) and what they are (class,
constructor arguments, input and output types), so two samples of a space that differ in
one choice still match everywhere else. A matched group of K convolutions becomes one
grouped convolution over the trials' inputs stacked along channels; K linear layers one
batched matrix product; K batch norms one batch norm over stacked channels; K layer norms
one layer norm with per-trial scale and shift. From there, fused regions grow through
activations, pooling and residual additions that every trial of the group applies alike,
so consecutive layers pass the stacked tensor along without splitting it.

Each trial keeps its own parameter tensors: a fused layer concatenates them when it runs,
so gradients, optimizer state and initial values stay exactly per trial. Running
statistics of a fused batch norm live in one buffer; the trial's rows of it are recorded
in its state map.
"""

from __future__ import annotations

import heapq
import itertools
import json
from dataclasses import dataclass, field

import torch

from retiarii_ir import AttributeSpec, Graph, TensorType
from retiarii_ir.node import TRAINING_FLAG, Node, map_args
from retiarii_ir.types import ValueType

from .state import StateRef

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


@dataclass
class BatchedGroup:
    """What the plan's report says about one fused node."""

    kind: str
    width: int
    members: list[str]
    fused: str


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


def find_anchor_groups(graph: Graph, trial_of: dict[str, int], trainable: set[str], built: dict,
                       batch_of: dict[int, int] | None = None, device: str = "cpu") -> list[Group]:
    """Layers of different trials at the same module path with the same class, arguments and
    types. A module called more than once in one trial is left alone. With ``batch_of``
    (trial -> batch size), a convolution group is kept only where timing shows that the
    fused kernel is faster."""
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
        if kind == "Conv2d" and batch_of is not None and not _fusing_pays(members, built, batch_of[trials[0]], device):
            continue
        groups.append(Group(members, kind, _ANCHOR_LAYOUT[kind], trials))
    return groups


def _fusing_pays(members: list[Node], built: dict, batch: int, device: str) -> bool:
    from .autotune import grouped_conv_wins

    m = built[members[0].target]
    shape = members[0].args[0].type.shape
    if not all(isinstance(d, int) for d in shape[1:]):
        return True
    return grouped_conv_wins(len(members), batch, m.in_channels, m.out_channels, tuple(shape[2:]),
                             tuple(m.kernel_size), tuple(m.stride), m.padding if isinstance(m.padding, str)
                             else tuple(m.padding), tuple(m.dilation), m.groups, device, torch.get_num_threads())


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
def _schedule(graph: Graph, groups: list[Group]) -> list[Group | Node]:
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


# ---------------------------------------------------------------------- emission
class _Emitter:
    """Writes the batched graph: single nodes copied, groups as fused nodes, trial slices of a
    fused value cut out only where a single node needs them."""

    def __init__(self, graph: Graph, state_maps: list[dict[str, StateRef]], built: dict) -> None:
        self.old = graph
        self.new = Graph(graph.name)
        self.new.modules = dict(graph.modules)
        self.new.attributes = dict(graph.attributes)
        self.new.aliases = dict(graph.aliases)
        self.new.constants = dict(graph.constants)
        self.new.module_types = dict(graph.module_types)
        self.new.meta = dict(graph.meta)
        self.state_maps = state_maps
        self.built = built
        self.env: dict[str, Node] = {}
        self.slot: dict[str, tuple[Group, int]] = {}
        self.fused: dict[int, Node] = {}
        self.pieces: dict[tuple, Node] = {}
        self.report: list[BatchedGroup] = []
        self._training: Node | None = None

    # values --------------------------------------------------------------
    def value(self, old: Node) -> Node:
        if old.name in self.env:
            return self.env[old.name]
        group, index = self.slot[old.name]
        key = (group.id, index)
        if key not in self.pieces:
            whole = self.fused[group.id]
            split_key = (group.id, "split")
            if split_key not in self.pieces:
                if group.layout == CHANNEL:
                    self.pieces[split_key] = self._call("torch.chunk", (whole, group.width), {"dim": 1},
                                                        f"{whole.name}_per_trial")
                else:
                    self.pieces[split_key] = self._call("torch.unbind", (whole,), {"dim": 0}, f"{whole.name}_per_trial")
            self.pieces[key] = self._call("operator.getitem", (self.pieces[split_key], index), {},
                                          f"{old.name}", old.type)
        return self.pieces[key]

    def stacked(self, sources: list[Node], group: Group) -> Node:
        """The members' inputs as one tensor in ``group``'s layout, reusing a fused value as is."""
        slots = [self.slot.get(s.name) for s in sources]
        first = slots[0]
        if (first is not None and first[0].id in self.fused and first[0].layout == group.layout
                and first[0].trials == group.trials and all(
                    s is not None and s[0] is first[0] and s[1] == i for i, s in enumerate(slots))):
            return self.fused[first[0].id]
        values = [self.value(s) for s in sources]
        if group.layout == CHANNEL:
            return self._call("torch.cat", (values,), {"dim": 1}, "stacked",
                              _widened(sources[0].type, CHANNEL, group.width))
        return self._call("torch.stack", (values,), {"dim": 0}, "stacked", _widened(sources[0].type, LEADING, group.width))

    def _call(self, target: str, args: tuple, kwargs: dict, name: str, type: ValueType | None = None,
              op: str = "call_function") -> Node:
        node = self.new.add_node(op, target, args, kwargs, name=self.new.unique_name(name))
        if type is not None:
            node.type = type
        return node

    def _param(self, qualname: str) -> Node:
        return self._call(qualname, (), {}, qualname.replace(".", "_"), op="get_attr")

    def training(self) -> Node:
        if self._training is None:
            self._training = self.new.add_node("get_attr", TRAINING_FLAG, name=self.new.unique_name("training"))
        return self._training

    # units ---------------------------------------------------------------
    def copy(self, node: Node) -> None:
        if node.op == "get_attr" and node.target == TRAINING_FLAG and self._training is not None:
            self.env[node.name] = self._training
            return
        new = self.new.add_node(node.op, node.target, map_args(node.args, self.value),
                                map_args(node.kwargs, self.value), name=node.name, type=node.type, scope=node.scope)
        new.meta = dict(node.meta)
        if node.op == "get_attr" and node.target == TRAINING_FLAG:
            self._training = new
        self.env[node.name] = new

    def emit(self, group: Group) -> None:
        fused = getattr(self, f"_emit_{group.kind.lower()}")(group)
        fused.type = _widened(group.members[0].type, group.layout, group.width)
        fused.meta["origin"] = [o for m in group.members for o in m.origin]
        self.fused[group.id] = fused
        for index, member in enumerate(group.members):
            self.slot[member.name] = (group, index)
        self.report.append(BatchedGroup(group.kind, group.width, [m.name for m in group.members], fused.name))

    def _weights(self, group: Group, name: str, dim: int, how: str = "torch.cat") -> Node:
        """Each member's own parameter ``name``, joined for one kernel (each stays a leaf)."""
        reads = []
        for member in group.members:
            qualname = f"{member.target}.{name}"
            self._as_attribute(member.target, name)
            reads.append(self._param(qualname))
        return self._call(how, (reads,), {"dim": dim}, f"{group.members[0].name}_{name}s")

    def _as_attribute(self, module: str, name: str) -> None:
        """A fused layer's parameters become plain graph parameters under the same keys."""
        tensor = getattr(self.built[module], name)
        self.new.attributes[f"{module}.{name}"] = AttributeSpec(
            "parameter", tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."), True)
        self.new.modules.pop(module, None)

    def _emit_conv2d(self, group: Group) -> Node:
        m = self.built[group.members[0].target]
        x = self.stacked([n.args[0] for n in group.members], group)
        weight = self._weights(group, "weight", 0)
        bias = self._weights(group, "bias", 0) if m.bias is not None else None
        return self._call("torch.conv2d", (x, weight, bias, m.stride, m.padding, m.dilation, m.groups * group.width),
                          {}, f"{group.members[0].name}_x{group.width}")

    def _emit_linear(self, group: Group) -> Node:
        m = self.built[group.members[0].target]
        x = self.stacked([n.args[0] for n in group.members], group)
        weight = self._weights(group, "weight", 0, "torch.stack")
        rank = group.members[0].args[0].type.rank
        name = f"{group.members[0].name}_x{group.width}"
        if rank == 2:
            transposed = self._call("transpose", (weight, 1, 2), {}, "weight_t", op="call_method")
            if m.bias is None:
                return self._call("torch.bmm", (x, transposed), {}, name)
            bias = self._weights(group, "bias", 0, "torch.stack")
            rows = self._call("unsqueeze", (bias, 1), {}, "bias_rows", op="call_method")
            return self._call("torch.baddbmm", (rows, x, transposed), {}, name)
        transposed = self._call("transpose", (weight, 1, 2), {}, "weight_t", op="call_method")
        per_step = self._call("unsqueeze", (transposed, 1), {}, "weight_t", op="call_method")
        product = self._call("torch.matmul", (x, per_step), {}, name if m.bias is None else f"{name}_nobias")
        if m.bias is None:
            return product
        bias = self._weights(group, "bias", 0, "torch.stack")
        shaped = self._call("view", (bias, group.width, 1, 1, m.out_features), {}, "bias_rows", op="call_method")
        return self._call("operator.add", (product, shaped), {}, name)

    def _emit_batchnorm2d(self, group: Group) -> Node:
        m = self.built[group.members[0].target]
        x = self.stacked([n.args[0] for n in group.members], group)
        weight, bias = self._weights(group, "weight", 0), self._weights(group, "bias", 0)
        prefix = f"fused.{group.members[0].name}"
        channels = m.num_features
        total = channels * group.width
        for buffer, value in (("running_mean", torch.zeros(total)), ("running_var", torch.ones(total)),
                              ("num_batches_tracked", torch.zeros((), dtype=torch.long))):
            self.new.attributes[f"{prefix}.{buffer}"] = AttributeSpec(
                "buffer", tuple(value.shape), str(value.dtype).removeprefix("torch."), False, True, value)
        for index, member in enumerate(group.members):
            refs = self.state_maps[group.trials[index]]
            for key, ref in list(refs.items()):
                for buffer in ("running_mean", "running_var"):
                    if ref.key == f"{member.target}.{buffer}":
                        refs[key] = StateRef(f"{prefix}.{buffer}", (index * channels, (index + 1) * channels))
                if ref.key == f"{member.target}.num_batches_tracked":
                    refs[key] = StateRef(f"{prefix}.num_batches_tracked")
        training = self.training()
        counter = self._param(f"{prefix}.num_batches_tracked")
        self._call("add_", (counter, training), {}, "count_batches", TensorType((), "int64"), op="call_method")
        return self._call("torch.nn.functional.batch_norm",
                          (x, self._param(f"{prefix}.running_mean"), self._param(f"{prefix}.running_var")),
                          {"weight": weight, "bias": bias, "training": training, "momentum": m.momentum, "eps": m.eps},
                          f"{group.members[0].name}_x{group.width}")

    _emit_batchnorm1d = _emit_batchnorm2d

    def _emit_layernorm(self, group: Group) -> Node:
        m = self.built[group.members[0].target]
        x = self.stacked([n.args[0] for n in group.members], group)
        rank = group.members[0].args[0].type.rank
        shape = (group.width,) + (1,) * (rank - 1) + (m.normalized_shape[0],)
        normed = self._call("torch.nn.functional.layer_norm", (x, m.normalized_shape), {"eps": m.eps}, "normed")
        weight = self._call("view", (self._weights(group, "weight", 0, "torch.stack"), *shape), {}, "scale", op="call_method")
        bias = self._call("view", (self._weights(group, "bias", 0, "torch.stack"), *shape), {}, "shift", op="call_method")
        scaled = self._call("operator.mul", (normed, weight), {}, "scaled")
        return self._call("operator.add", (scaled, bias), {}, f"{group.members[0].name}_x{group.width}")

    def _emit_lane(self, group: Group) -> Node:
        first = group.members[0]
        args = [None if i in group.lane_args else map_args(a, self.value) for i, a in enumerate(first.args)]
        for i in group.lane_args:
            args[i] = self.stacked([m.args[i] for m in group.members], group)
        kwargs = map_args(first.kwargs, self.value)
        return self.new.add_node(first.op, first.target, tuple(args), kwargs,
                                 name=self.new.unique_name(f"{first.name}_x{group.width}"), scope=first.scope)


def _widened(t: ValueType, layout: str, width: int) -> ValueType:
    if not isinstance(t, TensorType):
        return t
    if layout == CHANNEL:
        dim = t.shape[1]
        return TensorType((t.shape[0], dim * width if isinstance(dim, int) else dim, *t.shape[2:]), t.dtype)
    return TensorType((width, *t.shape), t.dtype)


def batch_operators(graph: Graph, trial_of: dict[str, int], trainable: set[str],
                    state_maps: list[dict[str, StateRef]],
                    batch_of: dict[int, int] | None = None, device: str = "cpu") -> tuple[Graph, list[BatchedGroup]]:
    """The graph with matched layers of different trials fused; ``state_maps`` updated.
    ``batch_of`` turns on timing of convolution groups (see ``autotune``)."""
    built: dict = {}
    anchors = find_anchor_groups(graph, trial_of, trainable, built, batch_of, device)
    if not anchors:
        return graph, []
    groups = anchors + grow_lane_groups(graph, anchors)
    emitter = _Emitter(graph, state_maps, built)
    for unit in _schedule(graph, groups):
        if isinstance(unit, Group):
            emitter.emit(unit)
        else:
            emitter.copy(unit)
    new = emitter.new
    called = {n.target for n in new.nodes if n.op == "call_module"}
    keys = {ref.key for refs in state_maps for ref in refs.values()}
    for qualname in list(new.modules):  # stateless layers whose calls were fused into another's
        if qualname not in called and not any(k.startswith(qualname + ".") for k in keys):
            del new.modules[qualname]
    new.infer_types()
    return new, emitter.report
