"""A Graph as a picture: modules as nested clusters, each link labelled by its value's type,
modules past a depth folded into one box each (so a 1,000-node graph stays readable), and,
for model spaces, choice sites drawn as frames holding their candidates.

The caller may colour nodes by role (``roles``): the picture knows colours and legend words,
not what a role means, so a merged plan's roles are computed where plans are known."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from retiarii_ir.graph import Graph
from retiarii_ir.node import TRAINING_FLAG, Node

from .picture_model import CHOICE, COLLAPSED, INPUT, PLAIN, VALUE, Box, Cluster, Picture, PictureError, Role, fit

MAX_BOXES = 160  # past this many boxes, modules fold until the picture has at most this many
CLUSTER_FILLS = ("#f4f6f8", "#e9eef3", "#dfe6ee", "#d5dee8")


@dataclass
class Option:
    """One candidate of a choice site: its title, its graph (None: nothing to draw but the
    title) and the choice sites inside it, by module path in that graph."""

    title: str
    graph: Graph | None = None
    sites: dict[str, "Site"] = field(default_factory=dict)


@dataclass
class Site:
    """A choice made at one module of a graph. With options, the module is drawn as a frame
    holding one frame per candidate; without, as a box with ``notes`` (the candidate values)."""

    kind: str
    label: str
    options: list[Option] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chained: bool = False  # the options run one after another (a Repeat's blocks)
    skippable: bool = False  # the input may also go straight through (a Repeat of depth 0)


def module_of(node: Node) -> str:
    """The module whose frame holds ``node``: a leaf call sits in its parent module."""
    if node.op == "call_module":
        return node.target.rpartition(".")[0]
    return node.scope


def _parts(path: str) -> list[str]:
    return path.split(".") if path else []


def choose_depth(graph: Graph, max_boxes: int = MAX_BOXES) -> int | None:
    """The deepest module level at which the graph draws in at most ``max_boxes`` boxes
    (None: no folding needed)."""
    static = static_nodes(graph)
    paths = [_parts(module_of(n)) for n in graph.nodes if not _hidden(n) and n.name not in static]
    deepest = max((len(p) for p in paths), default=0)
    if len(paths) <= max_boxes:
        return None
    for depth in range(deepest - 1, -1, -1):
        if len({tuple(p[:depth + 1]) if len(p) > depth else i for i, p in enumerate(paths)}) <= max_boxes:
            return depth
    return 0


def _hidden(node: Node) -> bool:
    """The train/eval flag feeds dropout and batch norm everywhere: drawing it only adds noise."""
    return node.op == "get_attr" and node.target == TRAINING_FLAG


def static_nodes(graph: Graph) -> dict[str, str]:
    """Nodes that depend on no input (parameters, constants, and what is computed from them
    alone), by name, with a short word for each. They are not drawn: the node that reads
    them says so in a line, so weights do not crowd the data flow."""
    static: dict[str, str] = {}
    for node in graph.nodes:
        if node.op in ("get_attr", "constant"):
            static[node.name] = node.target.rpartition(".")[2] if node.op == "get_attr" else "constant"
        elif node.op not in ("input", "output") and node.inputs and all(s.name in static for s in node.inputs):
            static[node.name] = " ".join(dict.fromkeys(static[s.name] for s in node.inputs))
    return static


class _Builder:
    def __init__(self, picture: Picture, depth: int | None, roles: Mapping[str, Role],
                 unframed: frozenset[str] = frozenset(), names: Mapping[str, str] | None = None) -> None:
        self.picture = picture
        self.names = dict(names or {})
        self.unframed = unframed
        self.depth = depth
        self.roles = roles
        self.folded: dict[str, int] = {}
        self.linked: set[tuple[str, str]] = set()

    def graph(self, graph: Graph, prefix: str, root: str | None, sites: Mapping[str, Site],
              sources: list[list[str]] | None = None, folding: bool = True) -> list[str]:
        """Draw ``graph`` inside cluster ``root``; ids start with ``prefix``. ``sources`` feed its
        inputs (boxes outside it); returns the boxes its output comes from."""
        value: dict[str, list[str]] = {}
        inputs = iter(sources) if sources is not None else None
        outputs: list[str] = []
        static = static_nodes(graph)
        for node in graph.nodes:
            if _hidden(node) or node.name in static:
                continue
            if node.op == "input" and inputs is not None:
                value[node.name] = next(inputs, [])
                continue
            if node.op == "output" and sources is not None:
                outputs = [b for s in node.inputs for b in value.get(s.name, [])]
                continue
            site = sites.get(node.target) if node.op == "call_module" else None
            if site is not None and site.options:
                value[node.name] = self._site(graph, node, site, prefix, root, value)
                continue
            box = self._box(graph, node, prefix, root, site, folding)
            reads = [static[s.name] for s in node.inputs if s.name in static and not _hidden(s)]
            if reads and not box.startswith(f"{prefix}fold:"):
                self.picture.boxes[box].lines.append(fit("with " + ", ".join(dict.fromkeys(reads))))
            value[node.name] = [box]
            self._links(node, box, value)
        return outputs

    def _links(self, node: Node, box: str, value: dict[str, list[str]]) -> None:
        role = self.picture.boxes[box].role
        for source in node.inputs:
            for source_box in value.get(source.name, []):
                if (source_box, box) not in self.linked:
                    self.linked.add((source_box, box))
                    colour = role.link_colour or self.picture.boxes[source_box].role.link_colour or "#666666"
                    self.picture.link(source_box, box, str(source.type), colour)

    def _cluster(self, graph: Graph, path: str, prefix: str, root: str | None) -> str | None:
        """The frame of module ``path`` (and of its parents), made on first use."""
        if not path:
            return root
        if not prefix and path in self.unframed:
            return self._cluster(graph, path.rpartition(".")[0], prefix, root)
        cluster_id = f"{prefix}m:{path}"
        if cluster_id not in self.picture.clusters:
            parent = self._cluster(graph, path.rpartition(".")[0], prefix, root)
            depth = len(_parts(path)) - 1
            kind = graph.module_types.get(path)
            self.picture.add_cluster(Cluster(cluster_id, f"{path} · {kind}" if kind else path, parent,
                                             fill=CLUSTER_FILLS[min(depth, len(CLUSTER_FILLS) - 1)]))
        return cluster_id

    def _box(self, graph: Graph, node: Node, prefix: str, root: str | None, site: Site | None, folding: bool) -> str:
        role = self.roles.get(node.name) if not prefix else None
        path = module_of(node)
        parts = _parts(path)
        if folding and self.depth is not None and len(parts) > self.depth and (role is None or not role.apart):
            return self._fold(graph, node, ".".join(parts[:self.depth + 1]), prefix, root, role)
        cluster = root if role is not None and role.apart else self._cluster(graph, path, prefix, root)
        if role is None:
            role = INPUT if node.op in ("input", "output") else VALUE if site is not None and site.kind == "ValueChoice" \
                else CHOICE if site is not None else PLAIN
        self.picture.use_role(role)
        lines = describe(graph, node)
        if not prefix and node.name in self.names:
            lines[0] = fit(self.names[node.name])
        elif role.apart and node.op == "call_module":  # outside its module's frame: say where it is from
            lines[0] = node.target
        if site is not None and site.kind == "ValueChoice":
            lines = [" · ".join(lines), *site.notes]
        elif site is not None:
            lines = [lines[0], f"{site.kind} '{site.label}'", *site.notes]
        box = self.picture.add_box(Box(prefix + node.name, lines, cluster, role))
        return box.id

    def _fold(self, graph: Graph, node: Node, path: str, prefix: str, root: str | None, role: Role | None) -> str:
        box_id = f"{prefix}fold:{path}"
        count = self.folded.get(box_id, 0) + 1
        self.folded[box_id] = count
        kind = graph.module_types.get(path, "module")
        lines = [path.rpartition(".")[2], f"{kind} · {count} op{'s' if count > 1 else ''}"]
        box = self.picture.boxes.get(box_id)
        if box is None:
            box = self.picture.add_box(Box(box_id, lines, self._cluster(graph, path.rpartition(".")[0], prefix, root),
                                           role or COLLAPSED))
            self.picture.use_role(box.role)
        else:
            box.lines = lines
            if box.role is not role and box.role is not COLLAPSED:  # roles differ inside: plain folded box
                box.role = COLLAPSED
                self.picture.use_role(COLLAPSED)
        return box_id

    def _site(self, graph: Graph, node: Node, site: Site, prefix: str, root: str | None,
              value: dict[str, list[str]]) -> list[str]:
        """A frame for the choice, one frame per candidate inside it, each holding its graph."""
        site_id = f"{prefix}site:{node.target}"
        parent = self._cluster(graph, module_of(node), prefix, root)
        self.picture.add_cluster(Cluster(site_id, f"{node.target} · {site.kind} '{site.label}'", parent, "choice",
                                         CHOICE.fill, CHOICE.stroke))
        self.picture.use_role(CHOICE)
        feeds = [value.get(s.name, []) for s in node.inputs]
        outputs: list[str] = [b for feed in feeds for b in feed] if site.skippable else []
        for index, option in enumerate(site.options):
            option_id = f"{site_id}/{index}"
            self.picture.add_cluster(Cluster(option_id, option.title, site_id, "candidate", "#ffffff", CHOICE.stroke))
            if option.graph is None:
                box = self.picture.add_box(Box(f"{option_id}/box", [option.title], option_id, PLAIN)).id
                for feed in feeds:
                    for source in feed:
                        self.picture.link(source, box)
                ends = [box]
            else:
                ends = self.graph(option.graph, f"{option_id}/", option_id, option.sites, feeds, folding=False)
            if site.chained:
                feeds = [ends]
            outputs += ends
        return outputs


def describe(graph: Graph, node: Node) -> list[str]:
    """A node's lines: what it is, then the layer's class or the function called."""
    if node.op == "input":
        return [f"input {node.target}"]
    if node.op == "output":
        return ["output"]
    if node.op == "call_module":
        spec = graph.modules.get(node.target)
        return [node.target.rpartition(".")[2], spec.class_name if spec else graph.module_types.get(node.target, "")]
    if node.op == "call_function":
        return [node.target.rpartition(".")[2]]
    if node.op == "call_method":
        return [f".{node.target}()"]
    if node.op == "get_attr":
        return [node.target.rpartition(".")[2], "parameter"]
    return [node.name, "constant"]


def graph_picture(graph: Graph, *, depth: int | None = None, roles: Mapping[str, Role] | None = None,
                  sites: Mapping[str, Site] | None = None, title: str | None = None,
                  max_boxes: int = MAX_BOXES, unframed: frozenset[str] = frozenset(),
                  names: Mapping[str, str] | None = None) -> Picture:
    """The picture of ``graph``. ``depth``: module levels drawn as frames (deeper modules fold
    into one box each); by default the deepest level that keeps at most ``max_boxes`` boxes.
    ``unframed``: modules whose own frame is left out (their children keep theirs). ``names``:
    a first line for some nodes (a merged node named by the trials' own module paths)."""
    if not isinstance(graph, Graph):
        raise PictureError(f"a picture is drawn from a Graph, got {type(graph).__name__}")
    if depth is not None and (type(depth) is not int or depth < 0):
        raise PictureError(f"depth must be a whole number >= 0, got {depth!r}")
    folded_at = depth if depth is not None else choose_depth(graph, max_boxes)
    picture = Picture(title or f"{graph.name}: {len(graph.nodes)} nodes")
    builder = _Builder(picture, folded_at, dict(roles or {}), frozenset(unframed), names)
    builder.graph(graph, "", None, dict(sites or {}))
    if builder.folded:
        inside = sum(builder.folded.values())
        picture.notes.append(f"modules below depth {folded_at} folded: {inside} operations in {len(builder.folded)} "
                             f"boxes (depth={folded_at + 1} unfolds one more level)")
    return picture
