"""IR → code: standalone PyTorch source through Jinja templates, and ONNX through torch's exporter.

``to_source(graph)`` gives a file's text, ``write_module`` writes it, ``load`` returns the
generated class, ``to_onnx`` exports and checks an ONNX model.
"""

from .errors import CodegenError
from .source import load, to_source, write_module

__all__ = ["CodegenError", "compare_onnx", "load", "to_onnx", "to_source", "write_module"]


def __getattr__(name: str):
    if name in ("to_onnx", "compare_onnx"):
        from . import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module 'codegen' has no attribute {name!r}")
