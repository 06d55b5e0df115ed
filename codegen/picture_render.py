"""A laid-out picture as SVG (a Jinja template, every text escaped) or PNG (matplotlib, which
the demo and test extras install). Both draw the same scene, so they show the same thing."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import jinja2

from .picture_layout import FONT, LINE, PAD, Scene
from .picture_model import PictureError

TEMPLATES = Path(__file__).parent / "templates"
MAX_PNG_PIXELS = 30_000  # per side: Agg's limit is 2**16; past this a picture is unreadable anyway
MISSING_MATPLOTLIB = "PNG pictures need matplotlib: pip install matplotlib (or the extra: pip install -e '.[plot]'); SVG needs nothing"


def _number(value):
    """Coordinates with one decimal: byte-stable output and small files."""
    return f"{value:.1f}" if isinstance(value, float) else value


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             finalize=_number)
    return env.get_template("picture.svg.j2")


def path_data(commands: list[tuple]) -> str:
    parts = []
    for name, *points in commands:
        parts.append(name + " " + " ".join(f"{x:.1f},{y:.1f}" for x, y in points))
    return " ".join(parts)


def to_svg(scene: Scene) -> str:
    """The scene as one SVG document (text, not paths, so it stays searchable)."""
    colours = sorted({route.link.colour for route in scene.routes})
    marker = {colour: i for i, colour in enumerate(colours)}
    routes = [{"link": r.link, "d": path_data(r.commands), "label_at": r.label_at, "marker": marker[r.link.colour]}
              for r in scene.routes]
    return _template().render(width=scene.width, height=scene.height, font=FONT, pad=PAD, line_height=LINE,
                              title=scene.picture.title, header=scene.header, legend=scene.legend,
                              clusters=scene.clusters, boxes=scene.boxes, routes=routes, colours=colours)


def matplotlib_installed() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_png(scene: Scene, path: str | os.PathLike, dpi: int = 100) -> None:
    """Draw the scene with matplotlib's Agg (no display, no system package) at one pixel per unit."""
    if not matplotlib_installed():
        raise PictureError(MISSING_MATPLOTLIB)
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, PathPatch, Polygon, Rectangle
    from matplotlib.path import Path as MplPath

    scale = min(1.0, MAX_PNG_PIXELS / max(scene.width, scene.height))
    fig = Figure(figsize=(scene.width * scale / dpi, scene.height * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, scene.width)
    ax.set_ylim(scene.height, 0)
    ax.axis("off")
    points = 72 / dpi * scale  # font sizes are in points; the scene is in pixels

    def text(x, y, s, size=FONT, **kw):
        ax.text(x, y, s, fontsize=size * points, family="DejaVu Sans Mono", parse_math=False, va="baseline", **kw)

    for s, x, y, style in scene.header:
        text(x, y, s, 13 if style == "title" else FONT, weight="bold" if style == "title" else "normal",
             color="#000000" if style == "title" else "#444444")
    for role, r in scene.legend:
        ax.add_patch(Rectangle((r.x, r.y), r.w, r.h, facecolor=role.fill, edgecolor=role.stroke, linewidth=1.5 * points))
        text(r.right + 8, r.bottom - 1, role.legend)
    for cluster, r, _ in scene.clusters:
        ax.add_patch(FancyBboxPatch((r.x, r.y), r.w, r.h, boxstyle="round,pad=0,rounding_size=6",
                                    facecolor=cluster.fill, edgecolor=cluster.stroke, linewidth=points,
                                    linestyle="--" if cluster.kind == "candidate" else "-"))
        text(r.x + 8, r.y + 15, cluster.title, weight="bold", color="#333333")
    for route in scene.routes:
        vertices, codes = [], []
        for name, *pts in route.commands:
            vertices += pts
            codes += {"M": [MplPath.MOVETO], "L": [MplPath.LINETO], "C": [MplPath.CURVE4] * 3}[name]
        ax.add_patch(PathPatch(MplPath(vertices, codes), facecolor="none", edgecolor=route.link.colour,
                               linewidth=1.2 * points))
        ax.add_patch(Polygon(_arrow_head(vertices[-2], vertices[-1]), closed=True, facecolor=route.link.colour,
                             edgecolor="none"))
        if route.link.label:
            text(*route.label_at, route.link.label, size=9, color="#555555")
    for box, r in scene.boxes:
        ax.add_patch(FancyBboxPatch((r.x, r.y), r.w, r.h, boxstyle="round,pad=0,rounding_size=4",
                                    facecolor=box.role.fill, edgecolor=box.role.stroke, linewidth=1.3 * points))
        for i, line in enumerate(box.lines, start=1):
            text(r.x + PAD, r.y + PAD + LINE * i - 3, line, weight="bold" if i == 1 else "normal")
    try:
        fig.savefig(os.fspath(path), dpi=dpi, facecolor="white")
    except OSError as e:
        raise PictureError(f"cannot write {path}: {e.strerror}") from None


def _arrow_head(before: tuple[float, float], tip: tuple[float, float], size: float = 7.0) -> list:
    dx, dy = tip[0] - before[0], tip[1] - before[1]
    length = (dx * dx + dy * dy) ** 0.5 or 1.0
    ux, uy = dx / length, dy / length
    back = (tip[0] - ux * size, tip[1] - uy * size)
    return [tip, (back[0] - uy * size * 0.45, back[1] + ux * size * 0.45), (back[0] + uy * size * 0.45, back[1] - ux * size * 0.45)]


