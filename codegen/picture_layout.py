"""A layered layout for pictures, in pure Python, so drawing needs no system package.

Each cluster is laid out on its own, inside out: its boxes and child clusters (each one block)
go in execution order, each just below everything that feeds it (longest path, in pixels) and
under the mean of what feeds it (barycentre), slid right past what already stands there: chains
stay straight and branches sit side by side. A link that would cross boxes is routed round them on the right."""

from __future__ import annotations

from dataclasses import dataclass, field

from .picture_model import Box, Cluster, Link, Picture, Role

FONT = 11.0  # px, monospace: a character is CHAR wide, so text sizes are known without a font library
CHAR = 0.62 * FONT
LINE = 14.0
PAD = 6.0
GAP_X = 18.0
GAP_Y = 30.0  # below a box: room for the type label of the links leaving it
CLUSTER_PAD = 10.0
TITLE = 16.0
MARGIN = 16.0
LABEL_ROOM = 4 + 13 * 0.6 * 9  # a type label right of a link: 13 characters at 9 px


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h


@dataclass
class Route:
    """A link's path as SVG-like commands: ("M", p), ("C", c1, c2, p), ("L", p)."""

    link: Link
    commands: list[tuple]
    label_at: tuple[float, float]


@dataclass
class Scene:
    """A picture laid out: every rectangle and path in pixels, origin at the top left."""

    picture: Picture
    width: float
    height: float
    boxes: list[tuple[Box, Rect]] = field(default_factory=list)
    clusters: list[tuple[Cluster, Rect, int]] = field(default_factory=list)  # outer frames first
    routes: list[Route] = field(default_factory=list)
    header: list[tuple[str, float, float, str]] = field(default_factory=list)  # text, x, y, style
    legend: list[tuple[Role, Rect]] = field(default_factory=list)


def text_width(text: str, size: float = FONT) -> float:
    return len(text) * CHAR * size / FONT


def box_size(box: Box) -> tuple[float, float]:
    return max(text_width(line) for line in box.lines or [" "]) + 2 * PAD, LINE * max(len(box.lines), 1) + 2 * PAD


class _Layout:
    def __init__(self, picture: Picture) -> None:
        self.picture = picture
        self.children: dict[str | None, list[tuple[str, str]]] = {}
        for cluster in picture.clusters.values():
            self.children.setdefault(cluster.parent, []).append(("cluster", cluster.id))
        for box in picture.boxes.values():
            self.children.setdefault(box.cluster, []).append(("box", box.id))
        self.chains = {box.id: self._chain(box.cluster) for box in picture.boxes.values()}
        self.order: dict[tuple[str, str], float] = {}
        for box in picture.boxes.values():
            self.order[("box", box.id)] = box.order
            for cluster_id in self.chains[box.id][1:]:
                key = ("cluster", cluster_id)
                self.order[key] = min(self.order.get(key, box.order), box.order)
        self.item_links: dict[str | None, list[tuple[tuple, tuple]]] = {}
        for link in picture.links:
            self._attach(link)
        self.size: dict[tuple[str, str], tuple[float, float]] = {}
        self.offsets: dict[str | None, dict[tuple[str, str], tuple[float, float]]] = {}

    def _chain(self, cluster_id: str | None) -> list[str | None]:
        chain: list[str | None] = []
        while cluster_id is not None:
            chain.append(cluster_id)
            cluster_id = self.picture.clusters[cluster_id].parent
        return [None, *reversed(chain)]

    def _attach(self, link: Link) -> None:
        """Give the link to the innermost cluster holding both ends, as a link between two of its items."""
        a, b = self.chains[link.source], self.chains[link.target]
        depth = 0
        while depth + 1 < min(len(a), len(b)) and a[depth + 1] == b[depth + 1]:
            depth += 1
        self.item_links.setdefault(a[depth], []).append((self._item(link.source, a, depth),
                                                         self._item(link.target, b, depth)))

    @staticmethod
    def _item(box_id: str, chain: list, depth: int) -> tuple[str, str]:
        return ("box", box_id) if depth + 1 == len(chain) else ("cluster", chain[depth + 1])

    def arrange(self, container: str | None) -> tuple[float, float]:
        """Lay out one cluster's items (its children first); returns its inner size."""
        items = sorted(self.children.get(container, []), key=lambda i: self.order.get(i, float("inf")))
        for kind, name in items:
            if kind == "box":
                self.size[(kind, name)] = box_size(self.picture.boxes[name])
            else:
                w, h = self.arrange(name)
                title = text_width(self.picture.clusters[name].title) + 2 * CLUSTER_PAD
                self.size[(kind, name)] = (max(w + 2 * CLUSTER_PAD, title), h + 2 * CLUSTER_PAD + TITLE)
        preds: dict[tuple, list[tuple]] = {item: [] for item in items}
        for source, target in self.item_links.get(container, []):
            if source != target and self.order.get(source, 0) <= self.order.get(target, 0):
                preds[target].append(source)
        offsets: dict[tuple, tuple[float, float]] = {}
        for item in items:  # in execution order, so every forward predecessor is placed already
            w, h = self.size[item]
            placed = [p for p in preds[item] if p in offsets]
            top = max((offsets[p][1] + self.size[p][1] + GAP_Y for p in placed), default=0.0)
            x = sum(offsets[p][0] + self.size[p][0] / 2 for p in placed) / len(placed) - w / 2 if placed else 0.0
            beside = sorted((offsets[o][0], offsets[o][0] + self.size[o][0]) for o in offsets
                            if offsets[o][1] < top + h + GAP_Y / 2 and offsets[o][1] + self.size[o][1] + GAP_Y / 2 > top)
            for left, right in beside:  # slide right past what already stands at this height
                if left < x + w + GAP_X and right + GAP_X > x:
                    x = right + GAP_X
            offsets[item] = (x, top)
        width = height = 0.0
        if offsets:
            left = min(x for x, _ in offsets.values())
            offsets = {item: (x - left, y) for item, (x, y) in offsets.items()}
            width = max(offsets[i][0] + self.size[i][0] for i in offsets)
            height = max(offsets[i][1] + self.size[i][1] for i in offsets)
        self.offsets[container] = offsets
        return width, height

    def place(self, container: str | None, x0: float, y0: float, depth: int, scene: Scene) -> None:
        for item, (dx, dy) in sorted(self.offsets[container].items(), key=lambda kv: self.order.get(kv[0], 0)):
            kind, name = item
            w, h = self.size[item]
            rect = Rect(x0 + dx, y0 + dy, w, h)
            if kind == "box":
                scene.boxes.append((self.picture.boxes[name], rect))
            else:
                scene.clusters.append((self.picture.clusters[name], rect, depth))
                self.place(name, rect.x + CLUSTER_PAD, rect.y + CLUSTER_PAD + TITLE, depth + 1, scene)


def _route(link: Link, source: Rect, target: Rect, boxes: list[Rect]) -> Route:
    """Down from the source's bottom to the target's top; round the right of boxes in the way."""
    sx, sy, ex, ey = source.cx, source.bottom, target.cx, target.y
    if ey <= sy:  # a link back up (a value used again above): out of the right sides
        sx, sy, ex, ey = source.right, source.y + source.h / 2, target.right, target.y + target.h / 2
        side = max(source.right, target.right) + 24
        return Route(link, [("M", (sx, sy)), ("C", (side, sy), (side, ey), (ex, ey))], (side - 6, (sy + ey) / 2))
    low, high = min(sx, ex) - 2, max(sx, ex) + 2
    blocking = [r for r in boxes if r is not source and r is not target and r.y < ey - 1 and r.bottom > sy + 1
                and r.x < high and r.right > low]
    if not blocking:
        d = max((ey - sy) / 2, 8.0)
        return Route(link, [("M", (sx, sy)), ("C", (sx, sy + d), (ex, ey - d), (ex, ey))], (sx + 4, sy + 11))
    side = max(max(r.right, r.cx + LABEL_ROOM) for r in blocking) + 8  # clear of the type labels too
    for _ in range(8):  # move further out while the side lane itself crosses a box
        crossed = [r for r in boxes if r is not source and r is not target and r.y < ey - 1 and r.bottom > sy + 1
                   and r.x < side < r.right]
        if not crossed:
            break
        side = max(r.right for r in crossed) + 10
    turn = min(14.0, (ey - sy) / 4)
    commands = [("M", (sx, sy)), ("C", (sx, sy + turn), (side, sy + turn), (side, sy + 2 * turn)),
                ("L", (side, ey - 2 * turn)), ("C", (side, ey - turn), (ex, ey - turn), (ex, ey))]
    return Route(link, commands, (sx + 4, sy + 11))


def layout(picture: Picture) -> Scene:
    """Positions for every box, frame, link, the title, notes and the legend."""
    engine = _Layout(picture)
    width, height = engine.arrange(None)
    header = [(picture.title, MARGIN, MARGIN + 12, "title")]
    y = MARGIN + 12
    for note in picture.notes:
        y += LINE
        header.append((note, MARGIN, y, "note"))
    legend = []
    for role in picture.legend:
        y += LINE + 4
        legend.append((role, Rect(MARGIN, y - 10, 22, 12)))
    top = y + 18
    header_width = max([text_width(t, 13 if s == "title" else FONT) for t, _, _, s in header]
                       + [40 + text_width(r.legend) for r in picture.legend], default=0)
    scene = Scene(picture, max(width, header_width) + 2 * MARGIN + 40, top + height + MARGIN)
    scene.header, scene.legend = header, legend
    engine.place(None, MARGIN, top, 0, scene)
    rects = {box.id: rect for box, rect in scene.boxes}
    all_rects = list(rects.values())
    labelled: set[tuple[str, str]] = set()
    for link in picture.links:
        route = _route(link, rects[link.source], rects[link.target], all_rects)
        if (link.source, link.label) in labelled:  # one value read twice: its type is said once
            route.link = Link(link.source, link.target, "", link.colour)
        labelled.add((link.source, link.label))
        scene.routes.append(route)
        xs = [p[0] for command in route.commands for p in command[1:]]
        scene.width = max(scene.width, max(xs) + text_width(link.label, 9) + MARGIN)
    return scene
