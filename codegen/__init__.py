"""IR → code: standalone PyTorch source through Jinja templates, and ONNX through torch's exporter.

    source = codegen.to_source(graph)              # one file's text: imports only torch
    codegen.write_module(graph, "model.py")        # the same text, on disk
    Model = codegen.load(graph)                    # the generated class, compiled in memory
    Model().load_state_dict(original.state_dict(), strict=True)
    codegen.to_onnx(graph, "model.onnx", example_inputs, state_dict=..., check_outputs=True)

    codegen.draw(codegen.graph_picture(graph), "model.svg")   # a picture: modules as frames (or .png)

The same graph always gives byte-identical source. Every name and constant is validated
or re-spelled from its type, so a graph from untrusted JSON cannot inject code.
"""

from .errors import CodegenError
from .onnx_export import compare_onnx, run_onnx, to_onnx
from .pictures import (CHOICE, FORMATS, MAX_BOXES, MISSING_MATPLOTLIB, Option, Picture, PictureError, Role, Site, draw,
                       graph_picture, layout, matplotlib_installed, to_svg)
from .source import load, to_source, write_module

__all__ = ["CHOICE", "CodegenError", "FORMATS", "MAX_BOXES", "MISSING_MATPLOTLIB", "Option", "Picture", "PictureError",
           "Role", "Site", "compare_onnx", "draw", "graph_picture", "layout", "load", "matplotlib_installed", "run_onnx",
           "to_onnx", "to_source", "to_svg", "write_module"]
