"""What a picture holds before it is laid out: boxes (operations), clusters (modules, choice
sites, candidates), links (values, labelled by their type) and a legend. Builders fill it from
a graph; the layout and the renderers read only this, so they never see the IR."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import CodegenError

MAX_LINE = 44  # characters of one text line in a box; longer ones end in an ellipsis
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def fit(text: str, width: int = MAX_LINE) -> str:
    """One printable line of at most ``width`` characters (control characters shown as '?')."""
    clean = "".join(c if c.isprintable() else "?" for c in str(text))
    return clean if len(clean) <= width else clean[:width - 1] + "…"


class PictureError(CodegenError):
    """A picture cannot be drawn or written: bad options, a missing renderer, an unwritable file."""


@dataclass(frozen=True)
class Role:
    """How a node is drawn: fill and stroke colours, the legend's words. ``apart`` draws it
    outside every module cluster (a node computed once for several models belongs to none)."""

    key: str
    fill: str
    stroke: str
    legend: str
    apart: bool = False
    link_colour: str | None = None  # links into nodes of this role take this colour (a trial's path)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY.fullmatch(self.key):
            raise PictureError(f"a role key is 1-64 letters, digits, '-' or '_', got {self.key!r}")
        for colour in (self.fill, self.stroke, self.link_colour or "#000000"):
            if not isinstance(colour, str) or not _COLOUR.fullmatch(colour):
                raise PictureError(f"role {self.key!r}: a colour is written #rrggbb, got {colour!r}")
        object.__setattr__(self, "legend", fit(self.legend, 2 * MAX_LINE))


PLAIN = Role("op", "#ffffff", "#555555", "operation")
INPUT = Role("input", "#e8f1fb", "#2b6cb0", "input or output")
COLLAPSED = Role("collapsed", "#eeeeee", "#777777", "module drawn folded (its operations inside)")
CHOICE = Role("choice", "#fff4d6", "#b7791f", "choice site")
VALUE = Role("value", "#fdebd3", "#c05621", "layer with value choices")


@dataclass
class Box:
    """One drawn node: a few lines of text in a rounded box."""

    id: str
    lines: list[str]
    cluster: str | None
    role: Role = PLAIN
    order: int = 0  # position in the graph's execution order: ties in the layout follow it


@dataclass
class Cluster:
    """A frame around boxes and smaller frames: a module, a choice site or one candidate."""

    id: str
    title: str
    parent: str | None
    kind: str = "module"  # module | choice | candidate
    fill: str = "#f7f7f7"
    stroke: str = "#aaaaaa"


@dataclass
class Link:
    """A value going from one box to another, labelled by its type."""

    source: str
    target: str
    label: str = ""
    colour: str = "#666666"


@dataclass
class Picture:
    """Everything to draw, in drawing terms only."""

    title: str
    boxes: dict[str, Box] = field(default_factory=dict)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    legend: list[Role] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_box(self, box: Box) -> Box:
        box.lines = [fit(line) for line in box.lines if line]
        box.order = len(self.boxes)
        self.boxes[box.id] = box
        return box

    def add_cluster(self, cluster: Cluster) -> Cluster:
        if cluster.parent is not None and cluster.parent not in self.clusters:
            raise PictureError(f"cluster {cluster.id!r} names an unknown parent {cluster.parent!r}")
        cluster.title = fit(cluster.title, 2 * MAX_LINE)
        self.clusters.setdefault(cluster.id, cluster)
        return self.clusters[cluster.id]

    def link(self, source: str, target: str, label: str = "", colour: str = "#666666") -> None:
        if source != target and source in self.boxes and target in self.boxes:
            self.links.append(Link(source, target, fit(label, MAX_LINE), colour))

    def use_role(self, role: Role) -> None:
        """List ``role`` in the legend (once)."""
        if all(r.key != role.key for r in self.legend):
            self.legend.append(role)
