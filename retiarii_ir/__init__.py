"""retiarii_ir: a typed graph IR for PyTorch models and model spaces.

The IR core is imported here. The model-space API lives in ``retiarii_ir.space`` and is loaded
on first use of one of its names (``retiarii_ir.nn``, ``trace_space``, ``Mutator``...), so the
core never imports it.
"""

from importlib import import_module
from typing import Any

from .analysis import node_hashes, structural_hash, to_networkx
from .errors import (GraphValidationError, InvalidSampleError, IRError, NodeExecutionError, SchemaError, TraceError,
                     TypeMismatchError, UnsafeTargetError, ValueChoiceMisuseError)
from .graph import AttributeSpec, Graph
from .interpreter import Interpreter, IRModule, build_module, check_buildable, run_graph
from .module_spec import FunctionRef, ModuleSpec, spec_of
from .node import OP_KINDS, Node
from .serialize import SCHEMA_VERSION, graph_from_json, graph_to_json
from .shape_inference import infer_types
from .tracer import trace
from .types import BATCH, DictType, ScalarType, TensorType, TupleType

_SPACE_NAMES = frozenset({"AnyOf", "Choice", "ModelSpace", "Mutator", "Sample", "SearchSpace", "ShapeMismatchError",
                          "fixed_arch", "nn", "trace_space"})

__all__ = [
    "AttributeSpec", "BATCH", "DictType", "FunctionRef", "Graph", "GraphValidationError", "IRError", "IRModule",
    "Interpreter", "InvalidSampleError", "ModuleSpec", "Node", "NodeExecutionError", "OP_KINDS", "SCHEMA_VERSION",
    "ScalarType", "SchemaError", "TensorType", "TraceError", "TupleType", "TypeMismatchError", "UnsafeTargetError",
    "ValueChoiceMisuseError", "build_module", "check_buildable", "graph_from_json", "graph_to_json", "infer_types", "node_hashes",
    "run_graph", "spec_of", "structural_hash", "to_networkx", "trace", *sorted(_SPACE_NAMES),
]


def __getattr__(name: str) -> Any:
    """Model-space names, loaded from ``retiarii_ir.space`` when first asked for."""
    if name in _SPACE_NAMES:
        value = getattr(import_module(".space", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'retiarii_ir' has no attribute {name!r}")
