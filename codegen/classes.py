"""The generated classes: one per distinct user class, each with its own ``forward``.

Instances of one user class whose members and forward agree up to constructor constants
share one class, and the constants where they differ become its parameters
(``BasicBlock(in_channels, out_channels, stride, downsample)``). A child that some instances
lack becomes a parameter that may be None, when the others call it on one value and pass its
result on. Classes are decided from the innermost out, so a parent sees its children's calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retiarii_ir.node import Node

from .bodies import Item, Layout
from .constructors import constructor_arguments
from .expr import Call, Const, Expr, Items, Param, render, substitute, unify
from .forward import Forward, member_of, single_call, write_forward
from .hierarchy import TORCH_CONTAINERS, Hierarchy, Member, TreeNode, tensor_member, walk
from .imports import Imports
from .names import NameTable, identifier_from, is_identifier


@dataclass
class ClassDef:
    """A generated ``torch.nn.Module`` subclass: its parameters, members and forward."""

    name: str
    parameters: list[str]
    members: list[Member]
    forward: Forward | None
    doc: str


@dataclass
class Instance:
    """One container of the original model that a generated class stands for."""

    node: TreeNode
    base: str
    modules: dict[str, Expr]
    tensors: list[Member]
    items: list[Item] | None
    inputs: list[Node] = field(default_factory=list)
    outputs: list[Node] = field(default_factory=list)


@dataclass
class Group:
    """Instances written as one class; ``dropped`` lists the children each one lacks."""

    template: Instance
    instances: list[Instance]
    dropped: list[frozenset[str]]
    name: str = ""

    @property
    def optional(self) -> frozenset[str]:
        return frozenset().union(*self.dropped)


class ClassWriter:
    """Builds every generated class of a graph, and the expression that constructs any module."""

    def __init__(self, hierarchy: Hierarchy, layout: Layout, class_names: NameTable, imports: Imports) -> None:
        self.hierarchy = hierarchy
        self.layout = layout
        self.class_names = class_names
        self.imports = imports
        self.classes: list[ClassDef] = []
        self.forward_imports: set[str] = set()
        self._calls: dict[str, Call] = {}  # container qualname -> its class's constructor call
        self._texts: dict[tuple[str, frozenset[str]], str] = {}
        containers = [n for n in walk(hierarchy.tree) if n.qualname and n.spec is None
                      and hierarchy.forms[n.qualname] == "class"]
        heights = {n.qualname: self._height(n) for n in containers}
        for height in sorted(set(heights.values())):
            self._write_level([n for n in containers if heights[n.qualname] == height])

    def members(self, node: TreeNode) -> list[Member]:
        """The ``__init__`` lines of a container (the root's, for the root class)."""
        members = [Member("module", name, is_identifier(name), render(self.expression(child)))
                   for name, child in node.children.items()]
        return members + [tensor_member(name, attr, f"{node.qualname}.{name}".lstrip("."))
                          for name, attr in node.attributes.items()]

    def expression(self, node: TreeNode) -> Expr:
        """The constructor expression of a module of the tree."""
        if node.spec is not None:
            callee, arguments, defaults = constructor_arguments(node.spec, f"module {node.qualname!r}")
            return Call(callee, tuple((k, name, Const(text, name)) for k, name, text in arguments),
                        tuple(sorted(defaults.items())))
        form = self.hierarchy.forms[node.qualname]
        parts = tuple(self.expression(child) for child in node.children.values())
        if form == "sequence" and (self.hierarchy.is_sequential(node.qualname) or node.qualname in self.layout.called):
            return Call("torch.nn.Sequential", tuple((None, "module", p) for p in parts))
        if form == "sequence":
            return Call("torch.nn.ModuleList", ((None, "modules", Items((None,) * len(parts), parts)),))
        if form == "dict":
            if not parts:
                return Call("torch.nn.ModuleDict", ())
            keys = tuple(repr(name) for name in node.children)
            return Call("torch.nn.ModuleDict", ((None, "modules", Items(keys, parts, is_dict=True)),))
        return self._calls[node.qualname]

    # ------------------------------------------------------------------ levels
    def _height(self, node: TreeNode) -> int:
        below = [self._height(c) + 1 for c in walk(node) if c is not node and c.spec is None
                 and self.hierarchy.forms[c.qualname] == "class"]
        return max(below, default=0)

    def _write_level(self, containers: list[TreeNode]) -> None:
        groups: list[Group] = []
        for instance in sorted((self._instance(n) for n in containers), key=lambda i: -len(i.modules)):
            for group in groups:
                dropped = self._fits(group, instance)
                if dropped is not None:
                    group.instances.append(instance)
                    group.dropped.append(dropped)
                    break
            else:
                groups.append(Group(instance, [instance], [frozenset()]))
        order = {n.qualname: i for i, n in enumerate(containers)}
        for group in sorted(groups, key=lambda g: min(order[i.node.qualname] for i in g.instances)):
            self._write_group(group)

    def _instance(self, node: TreeNode) -> Instance:
        origin = self.hierarchy.graph.module_types.get(node.qualname, "")
        base = origin if is_identifier(origin) else "Block"
        if origin in TORCH_CONTAINERS:  # a class of ours must not look like torch's own
            segment = next((p for p in reversed(node.qualname.split(".")) if not p.isdigit()), "block")
            base = "".join(w[:1].upper() + w[1:] for w in identifier_from(segment).split("_") if w) or "Block"
            base = base if not base[0].isdigit() else f"Block{base}"
        modules = {name: self.expression(child) for name, child in node.children.items()}
        tensors = [tensor_member(name, attr, f"{node.qualname}.{name}") for name, attr in node.attributes.items()]
        instance = Instance(node, base, modules, tensors, None)
        if node.qualname in self.layout.called:
            region = self.layout.region(node.qualname)
            instance.items = self.layout.items(node.qualname, region.nodes)
            instance.inputs, instance.outputs = list(region.inputs), list(region.outputs)
        return instance

    # ------------------------------------------------------------------ sharing a class
    def _fits(self, group: Group, instance: Instance) -> frozenset[str] | None:
        """The children ``instance`` lacks if it can be written as ``group``'s class, else None."""
        template = group.template
        if instance.base != template.base or instance.tensors != template.tensors \
                or (instance.items is None) != (template.items is None):
            return None
        names = [n for n in template.modules if n in instance.modules]
        if names != list(instance.modules):
            return None
        dropped = frozenset(template.modules) - frozenset(instance.modules)
        if template.items is not None and any(not self._optional(template, d) for d in dropped):
            return None
        members = [*group.instances, instance]
        for name in names:
            if unify([m.modules[name] for m in members if name in m.modules], []) is None:
                return None
        if template.items is not None and self._text(template, dropped) != self._text(instance, frozenset()):
            return None
        return dropped

    def _optional(self, instance: Instance, name: str) -> bool:
        uses = [item for item in instance.items if member_of(item, instance.node.qualname) == name]
        return not uses or len(uses) == 1 and single_call(uses[0]) is not None

    def _text(self, instance: Instance, dropped: frozenset[str]) -> str:
        key = (instance.node.qualname, dropped)
        if key not in self._texts:
            self._texts[key] = self._forward(instance, NameTable(self.imports.names), dropped=dropped).text
        return self._texts[key]

    def _forward(self, instance: Instance, names: NameTable, optional: frozenset[str] = frozenset(),
                 dropped: frozenset[str] = frozenset()) -> Forward:
        inputs = [(node, names.claim("x", "input name")) for node in instance.inputs]
        outputs = instance.outputs
        return write_forward(instance.items, instance.node.qualname, self.hierarchy, inputs,
                             lambda ref: ", ".join(ref(n) for n in outputs) or "None", outputs, names,
                             self.imports, optional=optional, dropped=dropped)

    # ------------------------------------------------------------------ writing
    def _write_group(self, group: Group) -> None:
        template, instances = group.template, group.instances
        group.name = self.class_names.claim(template.base, "class name")
        slots: list[tuple[tuple[str, ...], str]] = []
        parameters = NameTable()
        names_of_vectors: dict[tuple[str, ...], str] = {}
        members: list[Member] = []
        arguments: list[tuple[str, list[str]]] = []  # parameter name, value per instance

        def name_for(vector: tuple[str, ...], hint: str) -> str:
            if vector not in names_of_vectors:
                names_of_vectors[vector] = parameters.claim(identifier_from(hint), "parameter name")
                arguments.append((names_of_vectors[vector], list(vector)))
            return names_of_vectors[vector]

        for name in template.modules:
            if name in group.optional:
                values = tuple(render(i.modules[name]) if name in i.modules else "None" for i in instances)
                value = Param(name_for(values, name))
            else:
                start = len(slots)
                unified = unify([i.modules[name] for i in instances], slots)
                value = substitute(unified, {k: name_for(*slots[k]) for k in range(start, len(slots))})
            members.append(Member("module", name, is_identifier(name), render(value)))
        members += template.tensors
        forward = None
        if template.items is not None:
            forward = self._forward(template, NameTable(self.imports.names), optional=group.optional)
            self.forward_imports |= forward.imports
        origin = self.hierarchy.graph.module_types.get(template.node.qualname, "")
        doc = (f"The {origin} of the original model." if is_identifier(origin) else "A submodule of the original model.")
        if origin in TORCH_CONTAINERS:
            doc = f"A torch.nn.{origin} of the original model, as a class of its own."
        if forward is None:
            doc = f"Holds the layers of {origin if is_identifier(origin) else 'a submodule'}; its parent calls them."
        self.classes.append(ClassDef(group.name, [n for n, _ in arguments], members, forward, doc))
        for index, instance in enumerate(instances):
            self._calls[instance.node.qualname] = Call(
                group.name, tuple((None, n, Const(values[index], n)) for n, values in arguments))
