"""Sanity checks for the reference model corpus in ``tests/corpus``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

try:
    from tests.corpus import BATCH, CORPUS, Case, resnet50
except ImportError:  # tests/ itself is on sys.path
    from corpus import BATCH, CORPUS, Case, resnet50


def test_corpus_size_and_tags() -> None:
    assert len(CORPUS) >= 15
    tags = {tag for case in CORPUS.values() for tag in case.tags}
    assert {"cnn", "transformer", "rnn"} <= tags


def test_case_names_match_keys() -> None:
    for name, case in CORPUS.items():
        assert isinstance(case, Case)
        assert case.name == name


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_case_builds_and_runs(name: str) -> None:
    case = CORPUS[name]
    torch.manual_seed(0)
    model = case.build()
    assert isinstance(model, nn.Module)
    model.eval()

    args = case.example_args()
    kwargs = case.example_kwargs()
    assert isinstance(args, tuple) and isinstance(kwargs, dict)
    for value in tree_leaves((args, kwargs)):
        if isinstance(value, torch.Tensor):
            assert value.shape[0] == BATCH

    with torch.no_grad():
        out = model(*args, **kwargs)

    leaves = [leaf for leaf in tree_leaves(out) if isinstance(leaf, torch.Tensor)]
    assert leaves, "forward returned no tensors"
    for leaf in leaves:
        assert leaf.shape[0] == BATCH
        assert torch.isfinite(leaf).all()

    # fresh inputs are equal, so eval-mode forward is repeatable
    with torch.no_grad():
        again = model(*case.example_args(), **case.example_kwargs())
    for a, b in zip(
        leaves, [t for t in tree_leaves(again) if isinstance(t, torch.Tensor)]
    ):
        torch.testing.assert_close(a, b)


def test_embedding_inputs_are_long() -> None:
    for case in CORPUS.values():
        model = case.build()
        if not any(isinstance(m, nn.Embedding) for m in model.modules()):
            continue
        first = case.example_args()[0]
        assert first.dtype == torch.long, case.name


def test_resnet50_is_full_size() -> None:
    model = resnet50()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 25_557_032
    assert model.fc.out_features == 1000
    assert [
        len(layer) for layer in (model.layer1, model.layer2, model.layer3, model.layer4)
    ] == [3, 4, 6, 3]
