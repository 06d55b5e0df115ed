"""Frozen samples of every test model space become standalone modules equal to fixed_arch."""

import json

import pytest
import torch

from retiarii_ir import codegen
from tests import spaces
from tests.helpers import max_abs_diff
from tests.test_codegen_corpus import run_in_torch_only_interpreter


_TRACED: dict = {}


def _traced(name):
    if name not in _TRACED:
        _TRACED[name] = spaces.trace_case(spaces.SPACES[name])
    return _TRACED[name]


@pytest.fixture(scope="module", params=sorted(spaces.SPACES))
def traced(request):
    return spaces.SPACES[request.param], _traced(request.param)


def test_frozen_samples_generate_code_equal_to_fixed_arch(traced):
    case, space = traced
    x = case.example_input()
    for seed in (0, 5):
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


def test_frozen_samples_run_in_a_torch_only_interpreter(tmp_path):
    """One random sample of every space, written to disk and run where only torch exists."""
    cases, expected = {}, {}
    for name, case in sorted(spaces.SPACES.items()):
        space = _traced(name)
        sample = space.random_sample(3)
        with space.fixed_arch(sample):
            fixed = case.build().eval()
        x = case.example_input()
        cases[name] = (codegen.to_source(space.freeze(sample)), fixed.state_dict(), (x,), {})
        with torch.no_grad():
            expected[name] = fixed(x)
    outputs = run_in_torch_only_interpreter(tmp_path, cases)
    for name in cases:
        assert max_abs_diff(outputs[name], expected[name]) <= 1e-5, name
