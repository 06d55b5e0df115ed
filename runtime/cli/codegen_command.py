"""``retiarii codegen``: a model factory or a graph JSON file → model.py (and optionally ONNX)."""

from __future__ import annotations

from pathlib import Path

import torch

from retiarii_ir.codegen import to_onnx, write_module
from retiarii_ir.errors import IRError, first_line
from retiarii_ir.graph import Graph
from retiarii_ir.types import TensorType, dtype_from_name


def example_inputs(graph: Graph, batch_size: int = 2) -> tuple:
    """Inputs matching the graph's recorded input types (random floats, zero integers)."""
    values = []
    for node in graph.inputs:
        if node.args:  # has a default: left to it
            break
        if not isinstance(node.type, TensorType):
            raise IRError(f"input {node.target!r} has type {node.type}; pass a model spec with --input-shape instead")
        shape, dtype = node.type.concrete_shape(batch_size), dtype_from_name(node.type.dtype)
        values.append(torch.randn(shape, dtype=dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype))
    return tuple(values)


def _load(source: str, input_shapes: list[tuple[int, ...]], load_model) -> tuple[Graph, dict | None, tuple | None]:
    """(graph, original state_dict or None, example inputs or None) for a factory or a JSON file."""
    import retiarii_ir as ir

    if source.endswith(".json") or Path(source).is_file():
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as e:
            raise IRError(f"cannot read {source}: {e.strerror}") from None
        return ir.Graph.from_json(text), None, None
    if not input_shapes:
        raise IRError("a model factory needs --input-shape (once per input), e.g. --input-shape 2,3,32,32")
    model = load_model(source).eval()
    inputs = tuple(torch.randn(shape) for shape in input_shapes)
    return ir.trace(model, inputs), model.state_dict(), inputs


def run(source: str, out: str, onnx: str | None, input_shapes: list[tuple[int, ...]],
        weights: str | None, class_name: str | None, load_model, dynamic_batch: bool = False,
        check_onnx: bool = False) -> int:
    """Write the module source (and ONNX); a failure is one project error (one line, exit code 2)."""
    try:
        graph, state_dict, inputs = _load(source, input_shapes, load_model)
        if weights:
            state_dict = torch.load(weights, map_location="cpu", weights_only=True)
        path = write_module(graph, out, class_name)
        print(f"wrote {graph.name} ({len(graph)} nodes) to {path}")
        if onnx:
            onnx_path = to_onnx(graph, onnx, inputs if inputs is not None else example_inputs(graph),
                                state_dict=state_dict, dynamic_batch=dynamic_batch, check_outputs=check_onnx)
            print(f"wrote ONNX to {onnx_path}" + ("" if state_dict is not None else " (fresh weights: pass --weights)"))
    except OSError as e:
        raise IRError(f"cannot write {e.filename or out}: {e.strerror or first_line(e)}") from None
    except RuntimeError as e:  # torch refused the weights or the export
        raise IRError(first_line(e)) from None
    return 0
