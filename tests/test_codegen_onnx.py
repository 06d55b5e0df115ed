"""ONNX export of generated modules: onnx.checker passes and onnxruntime agrees with torch."""

import pytest
import torch

import codegen
import retiarii_ir as ir
from tests.corpus import CORPUS

pytest.importorskip("onnxscript")


@pytest.mark.parametrize("name", ["resnet_basic", "transformer_encoder"])
def test_onnx_export_is_checked_and_matches_onnxruntime(name, tmp_path):
    case = CORPUS[name]
    model = case.build().eval()
    args, kwargs = case.example_args(), case.example_kwargs()
    graph = ir.trace(model, args, kwargs)
    path = codegen.to_onnx(graph, tmp_path / f"{name}.onnx", args, example_kwargs=kwargs,
                           state_dict=model.state_dict())
    assert path.stat().st_size > 0
    pytest.importorskip("onnxruntime")
    assert codegen.compare_onnx(path, model, args, kwargs) <= 1e-4


def test_export_failure_is_a_clear_error(tmp_path):
    graph = ir.trace(torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.randn(2, 4), name="Tiny")
    with pytest.raises(codegen.CodegenError, match="ONNX export of graph 'Tiny' failed"):
        codegen.to_onnx(graph, tmp_path / "tiny.onnx", (torch.randn(2, 5),))
