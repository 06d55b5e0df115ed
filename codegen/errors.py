"""The one error codegen raises: a graph that cannot become safe, standalone source."""

from __future__ import annotations

from retiarii_ir.errors import IRError


class CodegenError(IRError):
    """The graph holds something plain PyTorch source cannot express (or must not)."""
