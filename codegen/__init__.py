"""IR → code: standalone PyTorch source through Jinja templates, and ONNX through torch's exporter.

``to_source(graph)`` gives a file's text, ``write_module`` writes it, ``load`` returns the
generated class, ``to_onnx`` exports and checks an ONNX model.
"""

from .errors import CodegenError
from .onnx_export import compare_onnx, run_onnx, to_onnx
from .source import load, to_source, write_module

__all__ = ["CodegenError", "compare_onnx", "load", "run_onnx", "to_onnx", "to_source", "write_module"]
