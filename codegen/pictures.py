"""Pictures of graphs: ``draw(picture, "model.svg")`` writes SVG (needs nothing) or PNG
(needs matplotlib), chosen by the file's suffix.

    picture = graph_picture(graph)                  # modules as frames, links typed
    draw(picture, "model.svg"); draw(picture, "model.png")
"""

from __future__ import annotations

import os
from pathlib import Path

from .picture_graph import MAX_BOXES, Option, Site, choose_depth, graph_picture
from .picture_layout import Scene, layout
from .picture_model import CHOICE, COLLAPSED, INPUT, PLAIN, VALUE, Picture, PictureError, Role
from .picture_render import MISSING_MATPLOTLIB, matplotlib_installed, to_svg, write_png

FORMATS = (".svg", ".png")


def draw(picture: Picture, path: str | os.PathLike) -> Path:
    """Lay out ``picture`` and write it to ``path`` (.svg or .png); returns the path."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        raise PictureError(f"cannot draw {target.name}: a picture is written as {' or '.join(FORMATS)}")
    scene = layout(picture)
    try:
        if suffix == ".svg":
            target.write_text(to_svg(scene), encoding="utf-8")
        else:
            write_png(scene, target)
    except OSError as e:
        raise PictureError(f"cannot write {target}: {e.strerror}") from None
    return target


__all__ = ["CHOICE", "COLLAPSED", "FORMATS", "INPUT", "MAX_BOXES", "MISSING_MATPLOTLIB", "Option", "PLAIN", "Picture",
           "PictureError", "Role", "Scene", "Site", "VALUE", "choose_depth", "draw", "graph_picture", "layout",
           "matplotlib_installed", "to_svg"]
