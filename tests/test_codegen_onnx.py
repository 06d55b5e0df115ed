"""ONNX export of generated modules: onnx.checker passes and onnxruntime agrees with torch."""

import onnxruntime  # noqa: F401 - installed by the test extra: a broken install must fail, not skip
import onnxscript  # noqa: F401
import pytest
import torch

from retiarii_ir import codegen
import retiarii_ir as ir
from tests.corpus import CORPUS


@pytest.mark.parametrize("name", ["resnet_basic", "transformer_encoder"])
def test_onnx_export_is_checked_and_matches_onnxruntime(name, tmp_path):
    case = CORPUS[name]
    model = case.build().eval()
    args, kwargs = case.example_args(), case.example_kwargs()
    graph = ir.trace(model, args, kwargs)
    path = codegen.to_onnx(graph, tmp_path / f"{name}.onnx", args, example_kwargs=kwargs,
                           state_dict=model.state_dict(), dynamic_batch=name == "resnet_basic")
    assert path.stat().st_size > 0
    assert codegen.compare_onnx(path, model, args, kwargs) <= 1e-4
    if name == "resnet_basic":  # a batch size the export never saw
        larger = tuple(torch.cat([a, a[:1]]) for a in args)
        assert codegen.compare_onnx(path, model, larger) <= 1e-4


def test_check_outputs_runs_onnxruntime(tmp_path):
    graph = ir.trace(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU()), torch.randn(2, 4))
    path = codegen.to_onnx(graph, tmp_path / "tiny.onnx", torch.randn(2, 4), check_outputs=True)
    assert len(codegen.run_onnx(path, torch.randn(2, 4))) == 1


def test_export_failure_is_a_clear_error(tmp_path):
    graph = ir.trace(torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.randn(2, 4), name="Tiny")
    with pytest.raises(codegen.CodegenError, match="ONNX export of graph 'Tiny' failed"):
        codegen.to_onnx(graph, tmp_path / "tiny.onnx", (torch.randn(2, 5),))
