"""retiarii_ir: a typed graph IR for PyTorch models and model spaces."""

from .analysis import node_hashes, structural_hash, to_networkx
from .errors import (GraphValidationError, IRError, SchemaError, TraceError, TypeMismatchError,
                     UnsafeTargetError, ValueChoiceMisuseError)
from .graph import AttributeSpec, Graph
from .interpreter import Interpreter, IRModule, NodeExecutionError, build_module, run_graph
from .module_spec import FunctionRef, ModuleSpec, spec_of
from .node import OP_KINDS, Node
from .search_space import AnyOf, Choice, InvalidSampleError, Sample, SearchSpace
from .serialize import SCHEMA_VERSION, graph_from_json, graph_to_json
from .shape_inference import infer_types
from .tracer import trace
from .types import BATCH, DictType, ScalarType, TensorType, TupleType

__all__ = [
    "AnyOf", "AttributeSpec", "BATCH", "DictType", "Choice", "InvalidSampleError", "Sample", "SearchSpace", "FunctionRef", "Graph", "GraphValidationError", "IRError", "IRModule",
    "Interpreter", "ModuleSpec", "Node", "NodeExecutionError", "OP_KINDS", "SCHEMA_VERSION",
    "ScalarType", "SchemaError", "TensorType", "TraceError", "TupleType", "TypeMismatchError",
    "UnsafeTargetError", "ValueChoiceMisuseError", "build_module", "graph_from_json", "graph_to_json", "infer_types",
    "node_hashes", "run_graph", "spec_of", "structural_hash", "to_networkx", "trace",
]

# Model spaces and mutators.
from . import nn
from .fixed import fixed_arch
from .mutator import Mutator, ShapeMismatchError
from .space import ModelSpace, trace_space

__all__ += ["ModelSpace", "Mutator", "ShapeMismatchError", "fixed_arch", "nn", "trace_space"]
