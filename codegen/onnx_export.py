"""Graph → ONNX through the generated module and torch's exporter, checked with onnx.checker."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from retiarii_ir.errors import first_line
from retiarii_ir.graph import Graph

from .errors import CodegenError
from .source import load


def _as_tuple(example_inputs: Any) -> tuple:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def build(graph: Graph, state_dict: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The generated module in eval mode, with ``state_dict`` loaded strictly when given."""
    module = load(graph)()
    if state_dict is not None:
        module.load_state_dict(state_dict, strict=True)
    return module.eval()


_PROTOBUF_LIMIT = 1_800_000_000  # bytes; larger weights go to a side file next to the model


def _state_bytes(module: torch.nn.Module) -> int:
    """Size of the weights: one self-contained .onnx file unless protobuf cannot hold them."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _batch_dims(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Dimension 0 of every tensor input left to the exporter to keep symbolic."""
    names = list(inspect.signature(module.forward).parameters)
    dynamic: dict[str, Any] = {}
    for name, value in [*zip(names, args), *kwargs.items()]:
        dynamic[name] = {0: torch.export.Dim.AUTO} if isinstance(value, torch.Tensor) else None
    return dynamic


@contextlib.contextmanager
def _quiet_logger(name: str):
    """torch's ONNX exporter logs a warning for every optional library it does not find
    (torchvision); the export's own errors still surface."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def to_onnx(graph: Graph, path: str | os.PathLike, example_inputs: Any, *,
            example_kwargs: dict | None = None, state_dict: dict[str, torch.Tensor] | None = None,
            dynamic_batch: bool = False, check_outputs: bool = False, atol: float = 1e-4,
            opset_version: int | None = None) -> Path:
    """Export the generated module of ``graph`` to ``path`` and check the file with onnx.checker.

    ``dynamic_batch`` keeps dimension 0 of the inputs symbolic; ``check_outputs`` also runs the
    file in onnxruntime and raises unless its outputs are within ``atol`` of the module's.
    """
    import onnx

    module = build(graph, state_dict)
    args, kwargs = _as_tuple(example_inputs), dict(example_kwargs or {})
    dynamic = _batch_dims(module, args, kwargs) if dynamic_batch else None
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    noise = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(noise), _quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(target), kwargs=kwargs or None, dynamic_shapes=dynamic,
                              dynamo=True, opset_version=opset_version, verbose=False,
                              external_data=_state_bytes(module) > _PROTOBUF_LIMIT)
    except Exception as e:
        raise CodegenError(f"ONNX export of graph {graph.name!r} failed: {first_line(e)}") from e
    try:
        onnx.checker.check_model(onnx.load(str(target)), full_check=True)
    except onnx.checker.ValidationError as e:
        raise CodegenError(f"ONNX model of graph {graph.name!r} does not pass onnx.checker: {e}") from None
    if check_outputs:
        difference = compare_onnx(target, module, args, kwargs)
        if not difference <= atol:
            raise CodegenError(f"onnxruntime's outputs for graph {graph.name!r} differ from torch's by "
                               f"{difference:.3g} (more than {atol:g})")
    return target


def run_onnx(path: str | os.PathLike, example_inputs: Any, example_kwargs: dict | None = None) -> list:
    """Outputs of onnxruntime (CPU) for the given inputs, as torch tensors in output order."""
    try:
        import onnxruntime
    except ImportError:
        raise CodegenError("onnxruntime is not installed: pip install onnxruntime") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tensors = [t for t in [*_as_tuple(example_inputs), *(example_kwargs or {}).values()]
               if isinstance(t, torch.Tensor)]
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(tensors):
        raise CodegenError(f"{path} takes {len(names)} inputs ({', '.join(names)}), got {len(tensors)} tensors")
    feeds = {name: t.detach().cpu().numpy() for name, t in zip(names, tensors)}
    return [torch.from_numpy(out) for out in session.run(None, feeds)]


def compare_onnx(path: str | os.PathLike, module: torch.nn.Module, example_inputs: Any,
                 example_kwargs: dict | None = None) -> float:
    """Largest absolute difference between onnxruntime's outputs and ``module``'s."""
    with torch.no_grad():
        expected = [t for t in tree_leaves(module(*_as_tuple(example_inputs), **(example_kwargs or {})))
                    if isinstance(t, torch.Tensor)]
    actual = run_onnx(path, example_inputs, example_kwargs)
    if len(actual) != len(expected):
        raise CodegenError(f"{path} gives {len(actual)} outputs, the module {len(expected)}")
    return max((a.double() - e.double()).abs().max().item() if e.numel() else 0.0
               for a, e in zip(actual, expected))
