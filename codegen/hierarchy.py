"""The module tree of a graph, so state_dict keys stay the original ones, and paths into it.

Leaf modules become constructor calls; containers whose children are ``0..n-1`` become
``torch.nn.Sequential``/``ModuleList``; other containers become a generated class (written
by ``classes``) that holds its children, parameters and buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from retiarii_ir.graph import AttributeSpec, Graph
from retiarii_ir.module_spec import ModuleSpec
from retiarii_ir.types import dtype_from_name

from .errors import CodegenError
from .literals import tensor_literal, torch_enum
from .names import NameTable, check_name, check_path, is_identifier


@dataclass
class TreeNode:
    """One module of the original hierarchy (the root has qualname '')."""

    qualname: str
    spec: ModuleSpec | None = None
    attributes: dict[str, AttributeSpec] = field(default_factory=dict)
    children: dict[str, TreeNode] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # segment -> qualname it shares

    def child(self, segment: str) -> TreeNode:
        if segment not in self.children:
            self.children[segment] = TreeNode(f"{self.qualname}.{segment}" if self.qualname else segment)
        return self.children[segment]


@dataclass(frozen=True)
class Member:
    """One line of a holder's ``__init__``: a submodule, parameter, buffer or embedded constant."""

    kind: str  # "module" | "parameter" | "buffer" | "constant" | "share_module" | "share_parameter" | "share_buffer"
    name: str
    plain: bool  # may be written as ``self.name = ...``
    value: str = ""  # module constructor, tensor expression, or the shared object's path
    owner: str = "self"  # where a shared object is registered
    shape: str = ""
    dtype: str = ""
    requires_grad: bool = True
    persistent: bool = True


def build_tree(graph: Graph) -> TreeNode:
    """Leaf modules and direct parameters/buffers of ``graph`` arranged as the original hierarchy."""
    root = TreeNode("")
    for qualname, spec in graph.modules.items():
        node = root
        for segment in check_path(qualname, "module"):
            node = node.child(segment)
        if node.children or node.attributes:
            raise CodegenError(f"module {qualname!r} is a leaf but also holds other modules or tensors")
        node.spec = spec
    for qualname, attr in graph.attributes.items():
        *owner, name = check_path(qualname, "parameter/buffer")
        node = root
        for segment in owner:
            node = node.child(segment)
        if node.spec is not None:
            raise CodegenError(f"{attr.kind} {qualname!r} belongs to leaf module {node.qualname!r}, "
                               f"which builds its own tensors")
        node.attributes[name] = attr
    for alias, original in graph.aliases.items():
        *owner, name = check_path(alias, "alias")
        check_path(original, "aliased path")
        node = root
        for segment in owner:
            node = node.child(segment)
        node.aliases[name] = original
    _order(root, {q: i for i, q in enumerate(graph.module_types)})
    for node in walk(root):
        names = [*node.children, *node.attributes, *node.aliases]
        clash = {n for n in names if names.count(n) > 1}
        if clash or node.spec is not None and node.children:
            raise CodegenError(f"module {node.qualname or '<root>'!r} has a name used twice: {sorted(clash)}")
    return root


def _order(node: TreeNode, rank: dict[str, int]) -> None:
    """Children in the order of the original ``named_modules()`` (then first appearance)."""
    items = sorted(enumerate(node.children.items()),
                   key=lambda item: (rank.get(item[1][1].qualname, len(rank)), item[0]))
    node.children = dict(kv for _, kv in items)
    for child in node.children.values():
        _order(child, rank)


def walk(node: TreeNode):
    yield node
    for child in node.children.values():
        yield from walk(child)


def form_of(node: TreeNode) -> str:
    """How a container is written: 'sequence', 'dict' or 'class'."""
    names = [*node.children, *node.aliases]
    if node.qualname and not node.attributes and names and all(n.isdigit() for n in names):
        contiguous = not node.aliases and names == [str(i) for i in range(len(names))]
        return "sequence" if contiguous else "dict"
    return "class"


class Hierarchy:
    """The module tree of a graph: how each container is written, and how code inside any
    container reaches a module or tensor below it."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.tree = build_tree(graph)
        self.forms: dict[str, str] = {n.qualname: form_of(n) for n in walk(self.tree)}
        self.nodes: dict[str, TreeNode] = {n.qualname: n for n in walk(self.tree)}
        self.shared = [m for m in (self._share(node, name, original) for node in walk(self.tree)
                                   for name, original in node.aliases.items()) if m is not None]

    def is_sequential(self, qualname: str) -> bool:
        """A ``torch.nn.Sequential`` (rather than a ``ModuleList``) in the generated code."""
        return self.forms[qualname] == "sequence" and self.graph.module_types.get(qualname) == "Sequential"

    def holds(self, scope: str, qualname: str) -> bool:
        """Whether ``qualname`` lies below container ``scope`` without passing a shared name."""
        if not scope:
            return True
        if not qualname.startswith(scope + "."):
            return False
        node = self.nodes[scope]
        for segment in qualname[len(scope) + 1:].split("."):
            if segment in node.aliases:
                return False
            if segment not in node.children:
                return True  # a tensor or a leaf's own tensor: the path ends here
            node = node.children[segment]
        return True

    # ------------------------------------------------------------------ sharing
    def _share(self, owner: TreeNode, name: str, original: str) -> Member | None:
        """The line that makes ``owner.name`` the very object at ``original`` (tied weights)."""
        kind = self._kind(original)
        if kind is None:  # a module without any state: nothing to tie
            return None
        owner_path = self.path(owner.qualname) if owner.qualname else "self"
        plain = _plain(name) and self.forms[owner.qualname] == "class"
        return Member(f"share_{kind}", name, plain, self.path(original), owner_path)

    def _kind(self, qualname: str) -> str | None:
        """'module', 'parameter' or 'buffer' for a path in the tree; None for a stateless module."""
        node = self.tree
        parts = check_path(qualname, "aliased path")
        for i, segment in enumerate(parts):
            last = i == len(parts) - 1
            if segment in node.children:
                node = node.children[segment]
            elif last and segment in node.attributes:
                return node.attributes[segment].kind
            elif last and node.spec is not None:
                return _leaf_tensor_kind(node, segment)
            else:
                return None
        return "module"

    # ------------------------------------------------------------------ forward
    def path(self, qualname: str, scope: str = "") -> str:
        """The expression reaching module/parameter ``qualname`` from ``self``, where ``self``
        is container ``scope`` (the root by default)."""
        return self._resolve(qualname, scope)[0]

    def owner_prefix(self, qualname: str, scope: str = "") -> tuple[str, str, str] | None:
        """(owner qualname, its expression, the rest) for the module that holds ``qualname``.

        ``forward`` binds the owner to a local (``layer_0 = self.encoder.layer[0]``) when a
        line would otherwise be too long to read.
        """
        expression, boundaries = self._resolve(qualname, scope)
        for prefix, prefix_expression in reversed(boundaries):
            if expression.startswith(prefix_expression) and expression != prefix_expression:
                return prefix, prefix_expression, expression[len(prefix_expression):]
        return None

    def _resolve(self, qualname: str, scope: str = "") -> tuple[str, list[tuple[str, str]]]:
        expression, node = "self", self.tree
        boundaries: list[tuple[str, str]] = []
        parts = check_path(qualname, "module or tensor")
        if scope:
            if not self.holds(scope, qualname):
                raise CodegenError(f"{qualname!r} is not held by {scope!r}")
            node, parts = self.nodes[scope], parts[len(scope.split(".")):]
        for i, segment in enumerate(parts):
            if segment in node.aliases:
                return self._resolve(".".join([node.aliases[segment], *parts[i + 1:]]))
            form = self.forms.get(node.qualname, "class")
            if form == "sequence":
                expression += f"[{int(segment)}]"
            elif form == "dict":
                expression += f"[{segment!r}]"
            elif _plain(segment):
                expression += f".{segment}"
            else:
                expression = f"getattr({expression}, {segment!r})"
            if i < len(parts) - 1:
                boundaries.append((".".join([*([scope] if scope else []), *parts[:i + 1]]), expression))
            if segment in node.children:
                node = node.children[segment]
            elif not (i == len(parts) - 1 and (segment in node.attributes or node.spec is not None)):
                raise CodegenError(f"{qualname!r} names neither a module nor a parameter/buffer of the graph")
        return expression, boundaries


TORCH_CONTAINERS = {"Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"}


def _plain(name: str) -> bool:
    return is_identifier(name)


def tensor_member(name: str, attr: AttributeSpec, qualname: str) -> Member:
    if not isinstance(attr, AttributeSpec):
        raise CodegenError(f"{qualname!r} is described by a {type(attr).__name__}, not an AttributeSpec")
    if attr.kind not in ("parameter", "buffer"):
        raise CodegenError(f"{qualname!r} has unknown kind {attr.kind!r}")
    try:
        dtype = dtype_from_name(str(attr.dtype))
    except ValueError:
        raise CodegenError(f"{qualname!r} has unknown dtype {attr.dtype!r}") from None
    if not all(type(d) is int and d >= 0 for d in attr.shape):
        raise CodegenError(f"{qualname!r} has a bad shape {attr.shape!r}")
    shape = ", ".join(str(d) for d in attr.shape) if attr.shape else "()"
    dtype_text = "" if str(attr.dtype) == "float32" else torch_enum(dtype)
    value = ""
    if getattr(attr, "value", None) is not None:  # non-persistent buffers carry their value
        if not isinstance(attr.value, torch.Tensor):
            raise CodegenError(f"value of {qualname!r} is a {type(attr.value).__name__}, not a tensor")
        value = tensor_literal(attr.value, f"value of {qualname!r}")
        if tuple(attr.value.shape) != tuple(attr.shape) or attr.value.dtype != dtype:
            raise CodegenError(f"{qualname!r}: value does not match shape {attr.shape} and dtype {attr.dtype}")
    return Member(attr.kind, name, _plain(name), value=value, shape=shape, dtype=dtype_text,
                  requires_grad=bool(attr.requires_grad), persistent=bool(attr.persistent))


def _leaf_tensor_kind(node: TreeNode, name: str) -> str | None:
    """Whether tensor ``name`` of a leaf module is a parameter or a buffer (built on 'meta')."""
    try:
        with torch.device("meta"):
            module = node.spec.build()
    except Exception as e:  # noqa: BLE001 - any failure is the spec's fault
        raise CodegenError(f"module {node.qualname!r} ({node.spec.type}) cannot be built: {e}") from None
    if name in module._parameters:
        return "parameter"
    if name in module._buffers:
        return "buffer"
    raise CodegenError(f"module {node.qualname!r} ({node.spec.type}) has no parameter or buffer {name!r}")


def constant_members(graph: Graph, taken: set[str]) -> tuple[list[Member], dict[str, str]]:
    """Tensor constants as non-persistent root buffers (so ``.to(device)`` moves them)."""
    table = NameTable(taken)
    members, names = [], {}
    for key, tensor in graph.constants.items():
        if not isinstance(tensor, torch.Tensor):
            raise CodegenError(f"constant {key!r} is a {type(tensor).__name__}, not a tensor")
        name = table.claim(check_name(key, "constant name"), "constant name", avoid_builtins=False)
        names[key] = name
        members.append(Member("constant", name, _plain(name), tensor_literal(tensor, f"constant {key!r}")))
    return members, names
