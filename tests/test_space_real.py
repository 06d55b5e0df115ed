"""The three real spaces: random samples frozen from the IR equal their fixed_arch modules."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import assert_same_graph
from tests.spaces import SPACES, frozen_and_fixed, trace_case

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=sorted(SPACES))
def traced(request):
    case = SPACES[request.param]
    return case, trace_case(case)


def test_random_samples_match_fixed_arch(traced):
    case, space = traced
    x = case.example_input()
    base_before = space.base.copy()
    for seed in range(4):
        sample = json.loads(json.dumps(space.random_sample(seed)))  # samples are plain JSON
        graph_module, fixed = frozen_and_fixed(space, case, sample)
        with torch.no_grad():
            torch.testing.assert_close(graph_module(x), fixed(x), rtol=1e-5, atol=1e-5)
    assert_same_graph(space.base, base_before)


def test_sizes_and_choice_kinds(traced):
    case, space = traced
    kinds = {c.kind for c in space.search_space}
    if case.name == "nasbench201":
        assert space.size == 5 ** 6 and kinds == {"layer"}  # both cells share one genotype
        assert space.choices()["cell/edge_3_0"] == ["none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3"]
    elif case.name == "darts":
        assert kinds == {"layer", "input"}
        assert space.search_space.choices["reduce/op_1_0_2"].parent == ("reduce/input_1_0", 2)
        per_node = [(2 + i) * 5 for i in range(3)]
        assert space.size == (per_node[0] * per_node[1] * per_node[2]) ** 4  # 2 cell kinds x 2 ops per node
    else:
        assert kinds == {"value", "depth", "layer"}
        assert space.choices()["stage1/depth"] == [0, 1, 2]
        assert space.choices()["stage0/block1/kernel"] == [3, 5, 7]


def test_same_sample_gives_identical_graphs(traced):
    _, space = traced
    sample = space.random_sample(11)
    assert_same_graph(space.freeze(sample), space.freeze(dict(sample)))


def test_mobilenet_depth_zero_and_max():
    case = SPACES["mobilenetv3"]
    space = trace_case(case)
    x = case.example_input()
    for depth in (0, 2):
        sample = space.default_sample()
        sample.update({"stage0/depth": depth, "stage1/depth": depth, "stage1/width": 24})
        choices = space.search_space
        sample = {label: sample.get(label, choices.choices[label].values[0])
                  for label in choices.labels() if choices.is_active(label, sample)}  # blocks' own choices
        graph = space.freeze(sample)
        blocks = {n.target.split(".")[3] for n in graph.nodes
                  if n.op == "call_module" and n.target.startswith("stages.1.1.")}
        assert blocks == {str(i) for i in range(depth)}
        assert str(graph.output.type) == "f32[B,10]"
        graph_module, fixed = frozen_and_fixed(space, case, sample)
        with torch.no_grad():
            torch.testing.assert_close(graph_module(x), fixed(x), rtol=1e-5, atol=1e-5)
