"""One-shot search: the supernet runs each sample exactly as the frozen graph does (weights
sliced from the largest), and DARTS, ENAS, SPOS and ProxylessNAS each search a tiny space
end to end, reproducibly, exporting samples that freeze and generate code."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

from retiarii_ir import codegen
import retiarii_ir
from retiarii_ir import nn
from retiarii_ir.space import Mutator
from retiarii_ir.space.hub import DartsSpace, MobileNetV3Space
from retiarii_ir.strategies.oneshot import (
    DARTS,
    ENAS,
    SPOS,
    LatencyTable,
    OneShotError,
    ProxylessNAS,
    Supernet,
    UnsupportedSpaceError,
)


@nn.model_wrapper
class TinySpace(nn.Module):
    """A shared width label, a LayerChoice with a kernel choice nested in one candidate, an
    InputChoice, a Repeat that may be empty."""

    def __init__(self, n_chosen: int | None = 1, reduction: str = "sum") -> None:
        super().__init__()
        width = nn.ValueChoice([4, 8], label="width")
        kernel = nn.ValueChoice([1, 3], label="kernel")
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.op = nn.LayerChoice({"conv": nn.Sequential(nn.Conv2d(width, width, kernel, padding=kernel // 2),
                                                        nn.BatchNorm2d(width)),
                                  "pool": nn.MaxPool2d(3, 1, 1)}, label="op")
        self.skip = nn.InputChoice(2, n_chosen, reduction, label="skip")
        self.blocks = nn.Repeat(lambda i: nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU()), depth=(0, 2),
                                label="depth")
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(self.skip([x, self.op(x)]))
        return self.head(x.mean((2, 3)))


_CANDIDATES = {"conv": lambda: nn.Conv2d(4, 4, 3, padding=1), "maxpool": lambda: nn.MaxPool2d(3, 1, 1),
               "avgpool": lambda: nn.AvgPool2d(3, 1, 1), "pool": lambda: nn.AvgPool2d(3, 1, 1),
               "identity": nn.Identity}


@nn.model_wrapper
class ViewThenOpSpace(nn.Module):
    """A view choice (the image or its negative, through one stem), then a LayerChoice of ``ops``
    (from ``_CANDIDATES``), then a BatchNorm shared by every candidate: the shape that hides the
    active gate from ProxylessNAS."""

    def __init__(self, ops: tuple[str, ...] = ("conv", "pool")) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.view = nn.InputChoice(2, 1, label="view")
        self.op = nn.LayerChoice({name: _CANDIDATES[name]() for name in ops}, label="op")
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        views = [torch.relu(self.stem(x)), torch.relu(self.stem(-x))]
        return self.head(torch.relu(self.norm(self.op(self.view(views)))).mean((2, 3)))


def _space(cls=TinySpace, size: int = 8, channels: int = 1, **kwargs):
    torch.manual_seed(0)
    model = cls(**kwargs)
    return retiarii_ir.trace_space(model, torch.randn(2, channels, size, size)), model


def _scramble(module: torch.nn.Module) -> None:
    """Random weights and batch-norm statistics, so that a wrong slice cannot go unnoticed."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=generator) + 0.5 if "running_var" in name
                        else torch.randn(t.shape, generator=generator))


# ---------------------------------------------------------------------- weight slicing
CASES = {
    "tiny": lambda: _space(),
    "tiny_any_inputs": lambda: _space(n_chosen=None, reduction="mean"),
    "mobilenetv3": lambda: _space(MobileNetV3Space, 16, 3),
    "darts": lambda: _space(lambda: DartsSpace(c=2, num_nodes=2), 8, 3),
}
_BUILT: dict = {}


def _case(name: str):
    if name not in _BUILT:
        space, model = CASES[name]()
        supernet = Supernet(space, model)
        _scramble(supernet)
        _BUILT[name] = space, supernet, model
    return _BUILT[name]


@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_supernet_forward_of_a_sample_equals_the_frozen_model_with_inherited_weights(name, seed):
    space, supernet, _ = _case(name)
    sample = space.random_sample(seed)
    channels = 1 if name.startswith("tiny") else 3
    x = torch.randn(3, channels, 16 if name == "mobilenetv3" else 8, 16 if name == "mobilenetv3" else 8,
                    generator=torch.Generator().manual_seed(seed))
    frozen = retiarii_ir.build_module(space.freeze(sample))
    frozen.load_state_dict(supernet.subnet_state_dict(sample), strict=True)  # every key, every shape
    supernet.eval(), frozen.eval()
    with torch.no_grad(), supernet.sampled(sample):
        torch.testing.assert_close(supernet(x), frozen(x), rtol=1e-5, atol=1e-5)


def test_sliced_weights_are_the_leading_channels_and_the_centre_of_the_kernel():
    space, model = _space()
    supernet = Supernet(space, model)
    conv = supernet.net.op.conv[0]
    state = supernet.subnet_state_dict({"width": 4, "op": "conv", "kernel": 1, "skip": 0, "depth": 0})
    assert tuple(conv.weight.shape) == (8, 8, 3, 3)  # the largest form holds the weights
    assert torch.equal(state["op.0.weight"], conv.weight[:4, :4, 1:2, 1:2])
    assert torch.equal(state["stem.1.running_var"], supernet.net.stem[1].running_var[:4])
    assert set(state) == set(retiarii_ir.build_module(space.freeze(
        {"width": 4, "op": "conv", "kernel": 1, "skip": 0, "depth": 0})).state_dict())


def test_shared_label_slices_every_layer_that_uses_it_and_the_fixed_arch_model_loads_the_weights():
    space, model = _space()
    supernet = Supernet(space, model)
    sample = {"width": 4, "op": "pool", "skip": 1, "depth": 2}
    with space.fixed_arch(sample):
        fixed = TinySpace()
    fixed.load_state_dict(supernet.subnet_state_dict(sample), strict=True)
    assert fixed.head.in_features == 4 and fixed.blocks[1][0].out_channels == 4


def test_one_hot_gates_run_the_same_network_as_the_sample():
    """Gated mode (largest shapes, masked weights) with all weight on one path is that path."""
    from retiarii_ir.strategies.oneshot.mixed import Gate

    space, supernet, _ = _case("mobilenetv3")
    sample = space.random_sample(3)
    gates = {}
    for label, values in space.choices().items():
        index = values.index(sample[label]) if label in sample else 0
        gates[label] = Gate(torch.nn.functional.one_hot(torch.tensor(index), len(values)).float(), [index])
    x = torch.randn(2, 3, 16, 16)
    supernet.eval()
    with torch.no_grad():
        with supernet.gated(gates):
            gated = supernet(x)
        with supernet.sampled(sample):
            exact = supernet(x)
    torch.testing.assert_close(gated, exact, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- algorithms end to end
ALGORITHMS = {
    "darts": lambda space, model: DARTS(space, model, epochs=2, batch_size=32, arch_lr=0.05, seed=0),
    "darts_unrolled": lambda space, model: DARTS(space, model, epochs=1, batch_size=32, unrolled=True, seed=0),
    "enas": lambda space, model: ENAS(space, model, epochs=2, batch_size=32, derive_samples=4, seed=0),
    "spos": lambda space, model: SPOS(space, model, epochs=2, batch_size=32, population=4, generations=2,
                                      parents=2, seed=0),
    "proxyless": lambda space, model: ProxylessNAS(space, model, epochs=2, batch_size=32, seed=0),
}


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_each_algorithm_searches_end_to_end_and_exports_a_sample_that_freezes(name, digits, tmp_path):
    space, model = _space()
    reports = []
    search = ALGORITHMS[name](space, model)
    search.progress = reports.append
    search.fit(*digits)
    sample = search.export()
    assert isinstance(sample["skip"], list), sample  # NNI's format: an InputChoice's value is a list
    assert space.validate(sample) == {**sample, "skip": sample["skip"][0]}
    assert json.loads(json.dumps(sample)) == sample
    module = codegen.load(space.freeze(sample))()  # the standalone class, with the weights it inherits
    module.load_state_dict(search.supernet.subnet_state_dict(sample), strict=True)
    module.eval(), search.supernet.eval()
    with torch.no_grad(), search.supernet.sampled(sample):
        torch.testing.assert_close(module(digits[0][:8]), search.supernet(digits[0][:8]))
    assert [r["epoch"] for r in reports if "phase" not in r] == list(range(1, search.epochs + 1))
    assert all(r["loss"] == r["loss"] for r in reports if "loss" in r)  # no NaN
    path = str(tmp_path / "supernet.pt")
    search.save(path)
    saved = torch.load(path, weights_only=False)
    assert saved["sample"] == sample and saved["alphas"] == search.alphas()
    again = ALGORITHMS[name](*_space()).load(path)
    assert again.alphas() == search.alphas()
    assert again.export() == sample


def test_darts_architecture_weights_move_away_from_uniform(digits):
    space, model = _space()
    search = DARTS(space, model, epochs=3, batch_size=32, arch_lr=0.05, seed=0, collapse_guard=False).fit(*digits)
    alphas = search.alphas()
    assert set(alphas) == set(space.choices())
    spread = max(max(p.values()) - 1 / len(p) for p in alphas.values())
    assert spread > 0.05, alphas
    epochs = [r for r in search.history if "phase" not in r]
    assert epochs[-1]["max_prob"] > epochs[0]["max_prob"]


@pytest.mark.parametrize("name", ["darts", "enas", "spos", "proxyless"])
def test_the_same_seed_gives_the_same_search(name, digits):
    runs = [ALGORITHMS[name](*_space()).fit(*digits) for _ in range(2)]
    assert runs[0].export() == runs[1].export()
    assert runs[0].alphas() == runs[1].alphas()
    assert [r["loss"] for r in runs[0].history] == [r["loss"] for r in runs[1].history]


# ---------------------------------------------------------------------- latency
def test_latency_table_of_a_sample_is_its_expected_latency_at_certainty():
    space, model = _space()
    supernet = Supernet(space, model)
    table = LatencyTable.measure(supernet, torch.randn(1, 1, 8, 8), repeats=3, calibrate=2)
    assert {e.path for e in table.entries} >= {"op.conv.0", "op.pool", "blocks.1.0", "head"}
    for seed in range(4):
        sample = space.random_sample(seed)
        probs = {label: torch.tensor([1.0 if v == sample.get(label) else 0.0 for v in values])
                 for label, values in space.choices().items()}
        kept = [e for e in table.entries if all(label in sample and space.choices()[label].index(sample[label])
                                                in allowed for label, allowed in e.conditions)]
        assert {e.path for e in kept} >= {"stem.0", "head"}
        assert ("op.pool" in {e.path for e in kept}) == (sample["op"] == "pool")
        assert table.expected(probs).item() == pytest.approx(table.of_sample(sample))
        assert table.expected_summed(probs).item() == pytest.approx(table.summed(sample))


def test_proxyless_latency_target_pushes_towards_cheaper_ops(digits):
    space, model = _space()
    search = ProxylessNAS(space, model, epochs=2, batch_size=32, seed=0, latency_target_ms=1e-6, latency_weight=5.0,
                          arch_lr=0.1, example_input=torch.randn(1, 1, 8, 8), warmup_epochs=0).fit(*digits)
    assert search.history[-1]["expected_ms"] < search.history[0]["expected_ms"]


# ---------------------------------------------------------------------- errors
class InsertActivation(Mutator):
    def mutate(self, graph):
        self.choice(["relu", "none"], "activation")


def test_a_custom_mutator_is_refused_naming_its_label():
    torch.manual_seed(0)
    model = TinySpace()
    space = retiarii_ir.trace_space(model, torch.randn(2, 1, 8, 8), mutators=[InsertActivation()])
    with pytest.raises(UnsupportedSpaceError, match=r"DARTS cannot relax label\(s\) \['activation'\] of custom "
                                                    r"mutator InsertActivation"):
        DARTS(space, model)


@nn.model_wrapper
class StrideSpace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, nn.ValueChoice([1, 2], label="stride"), 1)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def test_a_choice_masking_cannot_mix_is_refused_by_darts_naming_the_label_but_spos_searches_it(digits):
    space, model = _space(StrideSpace)
    search = DARTS(space, model, epochs=1, batch_size=32)
    with pytest.raises(UnsupportedSpaceError, match=r"DARTS cannot relax this space: labels \['stride'\] choose "
                                                    r"argument 'stride' of layer 'conv'"):
        search.fit(*digits)
    spos = SPOS(space, model, epochs=1, batch_size=32, population=2, generations=1, parents=1).fit(*digits)
    assert spos.export()["stride"] in (1, 2)


def test_a_module_that_does_not_match_the_space_is_refused():
    space, _ = _space()
    with pytest.raises(UnsupportedSpaceError, match="does not match the space"):
        Supernet(space, StrideSpace())


def test_bad_options_and_export_before_fit_are_project_errors(digits):
    space, model = _space()
    with pytest.raises(OneShotError, match="epochs >= 1"):
        DARTS(space, model, epochs=0)
    with pytest.raises(OneShotError, match="needs fit"):
        SPOS(space, model).export()
    with pytest.raises(OneShotError, match="needs example_input"):
        ProxylessNAS(space, model, latency_target_ms=1.0)
