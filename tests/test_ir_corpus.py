"""Every corpus architecture traces, validates, round-trips through JSON and runs back
out of the IR with the original weights, giving the original outputs."""

import pytest
import torch

import retiarii_ir as ir
from retiarii_ir.types import TensorType, TupleType
from tests.corpus import CORPUS
from tests.helpers import assert_same_graph, max_abs_diff


def test_corpus_covers_the_families_people_use():
    tags = {t for case in CORPUS.values() for t in case.tags}
    assert len(CORPUS) >= 15
    assert {"cnn", "transformer", "rnn"} <= tags


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_trace_validate_roundtrip_and_run(name, traced):
    model, args, kwargs, graph = traced(name)
    graph.validate()
    assert graph.meta["traced_with"] == "torch.fx", "corpus models are written to trace symbolically"

    again = ir.Graph.from_json(graph.to_json())
    assert_same_graph(again, graph)

    with torch.no_grad():
        expected = model(*args, **kwargs)
        assert max_abs_diff(ir.run_graph(graph, model, *args, **kwargs), expected) <= 1e-5

        rebuilt = ir.build_module(again).eval()
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        assert max_abs_diff(rebuilt(*args, **kwargs), expected) <= 1e-5


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_tensor_value_is_typed_with_a_symbolic_batch(name, traced):
    model, args, kwargs, graph = traced(name)
    for node in graph.inputs:
        if isinstance(node.type, TensorType):
            assert node.type.shape[0] == ir.BATCH, f"{name}: input {node.name} is {node.type}"
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr", "constant") and node.target != "training":
            assert isinstance(node.type, (TensorType, TupleType)), f"{name}: {node.name} untyped ({node.type})"
    assert ir.BATCH in str(graph.output.type)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_rebuilt_module_at_another_batch_size(name, traced):
    """Symbolic batch types are not just labels: the IR runs at a batch size never traced."""
    model, args, kwargs, graph = traced(name)
    grow = lambda v: torch.cat([v] * 3) if isinstance(v, torch.Tensor) else v  # noqa: E731
    args6, kwargs6 = tuple(grow(a) for a in args), {k: grow(v) for k, v in kwargs.items()}
    with torch.no_grad():
        assert max_abs_diff(ir.run_graph(graph, model, *args6, **kwargs6), model(*args6, **kwargs6)) <= 1e-5


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_traced_in_eval_then_trained_behaves_like_the_original_in_train_mode(name, traced):
    """Batch statistics, dropout (also ``F.dropout(training=self.training)``): same numbers."""
    model, args, kwargs, graph = traced(name)
    original = CORPUS[name].build()
    original.load_state_dict(model.state_dict())
    rebuilt = ir.build_module(graph)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    outputs = []
    for module in (original.train(), rebuilt.train()):
        torch.manual_seed(5)
        outputs.append(module(*args, **kwargs))
    assert max_abs_diff(outputs[0], outputs[1]) <= 1e-5
