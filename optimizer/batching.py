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

A fused layer's K weights live in one stacked parameter, as the kernel reads them; trial
k's rows of it are exactly trial k's own tensor (its state map records the row range), so
nothing is joined or split at each step and one optimizer update serves all K. Running
statistics of a fused batch norm live in one buffer the same way. Where a layer's weights
are also used elsewhere (a module called twice, a weight read directly) or its trials train
with different kinds of optimizer, each trial keeps its own tensor and the fused layer
concatenates them when it runs.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from retiarii_ir import AttributeSpec, Graph, TensorType
from retiarii_ir.node import TRAINING_FLAG, Node, map_args
from retiarii_ir.types import ValueType

from .matching import CHANNEL, LEADING, FuseDecision, Group, find_anchor_groups, grow_lane_groups, schedule
from .state import KeyIndex, StateRef


@dataclass
class BatchedGroup:
    """What the plan's report says about one fused node."""

    kind: str
    width: int
    members: list[str]
    fused: str


# ---------------------------------------------------------------------- emission
class _Emitter:
    """Writes the batched graph: single nodes copied, groups as fused nodes, trial slices of a
    fused value cut out only where a single node needs them."""

    def __init__(self, graph: Graph, state_maps: list[dict[str, StateRef]], built: dict,
                 optimizer_of: dict[int, str] | None = None) -> None:
        self.old = graph
        self.new = Graph(graph.name)
        self.new.modules = dict(graph.modules)
        self.new.attributes = dict(graph.attributes)
        self.new.aliases = dict(graph.aliases)
        self.new.constants = dict(graph.constants)
        self.new.module_types = dict(graph.module_types)
        self.new.meta = dict(graph.meta)
        self.new.trust = graph.trust
        self.state_maps = state_maps
        self.built = built
        self.env: dict[str, Node] = {}
        self.slot: dict[str, tuple[Group, int]] = {}
        self.fused: dict[int, Node] = {}
        self.pieces: dict[tuple, Node] = {}
        self.report: list[BatchedGroup] = []
        self._training: Node | None = None
        self.optimizer_of = optimizer_of or {}
        self.calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
        self.read_directly = {n.target.rpartition(".")[0] for n in graph.nodes if n.op == "get_attr"}
        self.read_directly |= {name.rpartition(".")[0] for pair in graph.aliases.items() for name in pair}  # tied
        self._owner: dict[str, tuple[int, str]] | None = None

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
        new = self.new.add_node(node.op, node.target, map_args(node.args, self.value), map_args(node.kwargs, self.value),
                                name=self.new.unique_name(node.name),  # a fused node may have taken the name
                                type=node.type, scope=node.scope)
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

    def _weights(self, group: Group, name: str, how: str = "torch.cat") -> Node:
        """The members' parameter ``name`` as one tensor for the kernel: rows of one stacked
        parameter (``torch.cat`` layout), or viewed as (K, ...) (``torch.stack`` layout)."""
        if not self._stackable(group):
            return self._joined_weights(group, name, how)
        first = self.built[group.members[0].target]
        tensor = getattr(first, name)
        rows = tensor.shape[0]
        fused_key = f"fused.{group.members[0].name}.{name}"
        self.new.attributes[fused_key] = AttributeSpec(
            "parameter", (rows * group.width, *tensor.shape[1:]), str(tensor.dtype).removeprefix("torch."), True)
        for index, member in enumerate(group.members):
            self._move(f"{member.target}.{name}", StateRef(fused_key, (index * rows, (index + 1) * rows)))
            self.new.modules.pop(member.target, None)
        read = self._param(fused_key)
        if how == "torch.stack":
            return self._call("view", (read, group.width, *tensor.shape), {}, f"{fused_key.replace('.', '_')}_per_trial",
                              op="call_method")
        return read

    def _stackable(self, group: Group) -> bool:
        """One stacked tensor may hold the members' weights only if nothing else reads them (no
        direct read, no tie to another layer's weight) and one kind of optimizer updates every row."""
        return (len({self.optimizer_of.get(k) for k in group.trials}) == 1
                and all(self.calls[m.target] == 1 and m.target not in self.read_directly for m in group.members))

    def _move(self, merged_key: str, ref: StateRef) -> None:
        """Point the trial entry that lived at ``merged_key`` to ``ref``."""
        if self._owner is None:
            self._owner = {r.key: (k, key) for k, refs in enumerate(self.state_maps) for key, r in refs.items()
                           if r.rows is None}
        k, key = self._owner.pop(merged_key)
        self.state_maps[k][key] = ref

    def _joined_weights(self, group: Group, name: str, how: str) -> Node:
        """Each member's own parameter ``name``, joined for one kernel (each stays a leaf)."""
        reads = []
        for member in group.members:
            qualname = f"{member.target}.{name}"
            tied_to = self.new.aliases.get(qualname)
            if tied_to is None:
                self._as_attribute(member.target, name)
            reads.append(self._param(tied_to or qualname))  # a tied weight reads the one tensor it shares
        return self._call(how, (reads,), {"dim": 0}, f"{group.members[0].name}_{name}s")

    def _as_attribute(self, module: str, name: str) -> None:
        """A fused layer's parameters become plain graph parameters under the same keys."""
        tensor = getattr(self.built[module], name)
        self.new.attributes[f"{module}.{name}"] = AttributeSpec(
            "parameter", tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."), True)
        self.new.modules.pop(module, None)

    def _emit_conv2d(self, group: Group) -> Node:
        m = self.built[group.members[0].target]
        x = self.stacked([n.args[0] for n in group.members], group)
        weight = self._weights(group, "weight")
        bias = self._weights(group, "bias") if m.bias is not None else None
        return self._call("torch.conv2d", (x, weight, bias, m.stride, m.padding, m.dilation, m.groups * group.width),
                          {}, f"{group.members[0].name}_x{group.width}")

    def _emit_linear(self, group: Group) -> Node:
        m = self.built[group.members[0].target]
        x = self.stacked([n.args[0] for n in group.members], group)
        weight = self._weights(group, "weight", "torch.stack")
        rank = group.members[0].args[0].type.rank
        name = f"{group.members[0].name}_x{group.width}"
        if rank == 2:
            transposed = self._call("transpose", (weight, 1, 2), {}, "weight_t", op="call_method")
            if m.bias is None:
                return self._call("torch.bmm", (x, transposed), {}, name)
            bias = self._weights(group, "bias", "torch.stack")
            rows = self._call("unsqueeze", (bias, 1), {}, "bias_rows", op="call_method")
            return self._call("torch.baddbmm", (rows, x, transposed), {}, name)
        transposed = self._call("transpose", (weight, 1, 2), {}, "weight_t", op="call_method")
        per_step = self._call("unsqueeze", (transposed, 1), {}, "weight_t", op="call_method")
        product = self._call("torch.matmul", (x, per_step), {}, name if m.bias is None else f"{name}_nobias")
        if m.bias is None:
            return product
        bias = self._weights(group, "bias", "torch.stack")
        shaped = self._call("view", (bias, group.width, 1, 1, m.out_features), {}, "bias_rows", op="call_method")
        return self._call("operator.add", (product, shaped), {}, name)

    def _emit_batchnorm2d(self, group: Group) -> Node:
        m = self.built[group.members[0].target]
        x = self.stacked([n.args[0] for n in group.members], group)
        weight, bias = self._weights(group, "weight"), self._weights(group, "bias")
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
        weight = self._call("view", (self._weights(group, "weight", "torch.stack"), *shape), {}, "scale", op="call_method")
        bias = self._call("view", (self._weights(group, "bias", "torch.stack"), *shape), {}, "shift", op="call_method")
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
                    batch_of: dict[int, int] | None = None, fuse: FuseDecision | None = None,
                    optimizer_of: dict[int, str] | None = None) -> tuple[Graph, list[BatchedGroup]]:
    """The graph with matched layers of different trials fused; ``state_maps`` updated.
    ``fuse`` decides for each convolution group whether fusing pays (``batch_of``: trial ->
    batch size); ``optimizer_of`` (trial -> optimizer kind) keeps trials of different kinds
    out of one stacked tensor."""
    built: dict = {}
    anchors = find_anchor_groups(graph, trial_of, trainable, built, batch_of, fuse)
    if not anchors:
        return graph, []
    groups = anchors + grow_lane_groups(graph, anchors)
    emitter = _Emitter(graph, state_maps, built, optimizer_of)
    for unit in schedule(graph, groups):
        if isinstance(unit, Group):
            emitter.emit(unit)
        else:
            emitter.copy(unit)
    new = emitter.new
    called = {n.target for n in new.nodes if n.op == "call_module"}
    index = KeyIndex({ref.key for refs in state_maps for ref in refs.values()})
    for qualname in list(new.modules):  # stateless layers whose calls were fused into another's
        if qualname not in called and not index.under(qualname):
            del new.modules[qualname]
    new.infer_types(trust=graph.trust, keep_known=True)  # what the emitter typed stays; the rest is worked out
    return new, emitter.report
