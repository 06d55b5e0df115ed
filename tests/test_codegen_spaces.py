"""Frozen samples of every test model space become standalone modules equal to fixed_arch."""

import json

import pytest
import torch

import codegen
from tests.helpers import max_abs_diff

spaces = pytest.importorskip("tests.spaces")


@pytest.fixture(scope="module", params=sorted(spaces.SPACES))
def traced(request):
    case = spaces.SPACES[request.param]
    return case, spaces.trace_case(case)


def test_frozen_samples_generate_code_equal_to_fixed_arch(traced):
    case, space = traced
    x = case.example_input()
    for seed in range(2):
        sample = json.loads(json.dumps(space.random_sample(seed)))
        graph = space.freeze(sample)
        with space.fixed_arch(sample):
            fixed = case.build().eval()
        generated = codegen.load(graph)().eval()
        generated.load_state_dict(fixed.state_dict(), strict=True)
        with torch.no_grad():
            assert max_abs_diff(generated(x), fixed(x)) <= 1e-5, (case.name, sample)


def test_same_sample_gives_byte_identical_code(traced):
    _, space = traced
    sample = space.random_sample(7)
    source = codegen.to_source(space.freeze(sample))
    assert codegen.to_source(space.freeze(json.loads(json.dumps(sample)))) == source
    assert "LayerChoice" not in source and "retiarii" not in source.split('"""', 2)[2]
