"""Which paths the weights train on (fair or uniform, or the policy's), and the batch norms of
a path run outside a weight step: its own batch statistics (ENAS's reward, ProxylessNAS's
architecture step, measured path losses)."""

from __future__ import annotations

import collections
import random

import pytest
import torch
from torch.nn import functional as F

from retiarii_ir.strategies.oneshot import ENAS, SPOS, OneShotError, ProxylessNAS, Supernet
from retiarii_ir.strategies.oneshot.batchnorm import batch_statistics, norms_of
from retiarii_ir.strategies.oneshot.mixed import Gate
from retiarii_ir.strategies.oneshot.sampling import fair_paths, sampled_paths

from test_oneshot import ViewThenOpSpace, _space

OPS = ["conv", "maxpool", "avgpool", "identity"]


def four_ops():
    """A view choice, then four candidates (one with weights), then a BatchNorm shared by all."""
    return _space(ViewThenOpSpace, ops=OPS)


# ---------------------------------------------------------------------- fair paths
@pytest.mark.parametrize("seed", range(5))
def test_fair_paths_hold_each_candidate_of_the_largest_label_once_and_the_others_evenly(seed):
    space, _ = four_ops()
    paths = fair_paths(space, random.Random(seed))
    assert len(paths) == 4
    assert sorted(p["op"] for p in paths) == sorted(OPS)
    assert collections.Counter(p["view"] for p in paths) == {0: 2, 1: 2}


@pytest.mark.parametrize("seed", range(5))
def test_fair_paths_are_valid_samples_and_deal_a_smaller_label_as_evenly_as_they_can(seed):
    space, _ = _space()  # width 2, op 2 (kernel 2 nested under conv), skip 2, depth 3 candidates
    paths = fair_paths(space, random.Random(seed))
    assert len(paths) == 3 and all(space.validate(p) == p for p in paths)
    assert sorted(p["depth"] for p in paths) == [0, 1, 2]
    for label in ("width", "op", "skip"):
        assert sorted(collections.Counter(p[label] for p in paths).values()) == [1, 2]
    assert all(("kernel" in p) == (p["op"] == "conv") for p in paths)


def _candidate_runs(search) -> collections.Counter:
    """Counts forward calls of each op candidate of the search's supernet."""
    runs = collections.Counter()
    for name in OPS:
        search.supernet.net.op.candidate(name).register_forward_hook(lambda *_, name=name: runs.update([name]))
    return runs


def _batches(digits, n: int, size: int = 32) -> list:
    return [(digits[0][i * size:(i + 1) * size], digits[1][i * size:(i + 1) * size]) for i in range(n)]


def test_fair_sampling_trains_every_candidate_on_every_weight_step_and_uniform_one(digits):
    space, model = four_ops()
    fair = SPOS(space, model, batch_size=32, seed=0)
    runs, conv = _candidate_runs(fair), fair.supernet.net.op.candidate("conv").weight
    for x, y in _batches(digits, 5):
        before = conv.detach().clone()
        fair.paths_step(sampled_paths(space, fair.rng, fair.path_sampling), x, y)
        assert not torch.equal(before, conv)  # the convolution learns on every step
    assert runs == {name: 5 for name in OPS}
    uniform = SPOS(space, model, batch_size=32, seed=0, path_sampling="uniform")
    runs = _candidate_runs(uniform)
    uniform._train_epoch(0, _batches(digits, 5), [])
    assert sum(runs.values()) == 5 and max(runs.values()) < 5


def test_a_fair_step_sums_the_gradients_of_its_paths(digits):
    """One step on fair paths equals one SGD step on the sum of each path's own gradient."""
    space, model = four_ops()
    search = SPOS(space, model, batch_size=32, seed=0, momentum=0.0, weight_decay=0.0, grad_clip=1e9)
    x, y = _batches(digits, 1)[0]
    paths = fair_paths(space, random.Random(0))
    params = search.supernet.weight_parameters()
    expected = [torch.zeros_like(p) for p in params]
    for path in paths:
        search.supernet.train()
        with search.supernet.sampled(path):
            grads = torch.autograd.grad(F.cross_entropy(search.supernet(x), y), params, allow_unused=True)
        expected = [e if g is None else e + g for e, g in zip(expected, grads)]
    before = [p.detach().clone() for p in params]
    search.paths_step(paths, x, y)
    for p, b, g in zip(params, before, expected):
        torch.testing.assert_close(p.detach(), b - search.lr * g)


@pytest.mark.parametrize("cls, arch_step, result", [(ENAS, "_controller_step", 0.0),
                                                     (ProxylessNAS, "_arch_step", (0.0, 0.0))])
def test_enas_and_proxyless_train_fair_paths_unless_told_to_train_their_policy(cls, arch_step, result, digits):
    space, model = four_ops()
    for on_policy, paths_per_step in ((False, 4), (True, 1)):
        search = cls(space, model, batch_size=32, seed=0, train_on_policy=on_policy)
        steps, paths_step = [], search.paths_step
        search.paths_step = lambda paths, x, y: steps.append(paths) or paths_step(paths, x, y)
        setattr(search, arch_step, lambda *a: result)
        search._train_epoch(0, _batches(digits, 3), _batches(digits, 3))
        assert [len(p) for p in steps] == [paths_per_step] * 3
        if not on_policy:
            assert all(sorted(p["op"] for p in paths) == sorted(OPS) for paths in steps)


def test_path_sampling_takes_only_its_named_ways():
    space, model = four_ops()
    with pytest.raises(OneShotError, match="path_sampling is one of"):
        SPOS(space, model, path_sampling="sometimes")


# ---------------------------------------------------------------------- batch statistics of a path
def _scramble_statistics(supernet) -> None:
    for m in norms_of(supernet):
        m.running_mean.uniform_(5, 10), m.running_var.uniform_(20, 30)


@pytest.mark.parametrize("space_of, sample", [(four_ops, {"view": 1, "op": "conv"}),
                                              (four_ops, {"view": 0, "op": "avgpool"}),
                                              (_space, {"width": 4, "op": "conv", "kernel": 3, "skip": 1,
                                                        "depth": 1})])
def test_batch_statistics_normalise_a_path_as_it_alone_would_in_training_and_keep_the_running_ones(
        space_of, sample, digits):
    space, model = space_of()
    supernet = Supernet(space, model)
    _scramble_statistics(supernet)
    running = [(m.running_mean.clone(), m.running_var.clone()) for m in norms_of(supernet)]
    x = digits[0][:64]
    subnet = supernet.subnet(sample).train()  # batch statistics of this architecture alone
    with torch.no_grad():
        expected = subnet(x)
        with batch_statistics(supernet), supernet.sampled(sample):
            got = supernet(x)
        with supernet.sampled(sample):
            supernet.eval()
            on_running = supernet(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(on_running, expected, atol=1e-2)
    for m, (mean, var) in zip(norms_of(supernet), running):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)


def test_enas_rewards_a_path_by_its_accuracy_on_its_own_batch_statistics(digits):
    space, model = four_ops()
    x, y = digits[0][:128], digits[1][:128]
    search = ENAS(space, model, batch_size=32, seed=0)
    _scramble_statistics(search.supernet)
    for sample in ({"view": 0, "op": "conv"}, {"view": 1, "op": "identity"}):
        with torch.no_grad():
            alone = (search.supernet.subnet(sample).train()(x).argmax(1) == y).float().mean().item()
        assert search._reward(sample, x, y) == pytest.approx(alone)
    with pytest.raises(OneShotError, match="reward_batchnorm"):
        ENAS(space, model, reward_batchnorm="batch")


def test_proxyless_path_losses_are_the_losses_of_the_paths_they_stand_for(digits):
    space, model = four_ops()
    search = ProxylessNAS(space, model, batch_size=32, seed=0)
    x, y = digits[0][:64], digits[1][:64]
    gates = {"view": Gate(torch.tensor([1.0, 0.0]), [0, 1]),
             "op": Gate(torch.tensor([1.0, 0.0, 0.0, 0.0]), [0, 2])}  # active: view 0 and conv; others: 1, avgpool

    def loss_alone(sample):
        with torch.no_grad():
            return F.cross_entropy(search.supernet.subnet(sample).train()(x), y).item()

    base, losses = search._path_losses(gates, x, y)
    view, op = losses
    assert base.item() == pytest.approx(loss_alone({"view": 0, "op": "conv"}), rel=1e-5)
    assert view.tolist() == pytest.approx([base.item(), loss_alone({"view": 1, "op": "conv"})], rel=1e-5)
    assert op.tolist() == pytest.approx([base.item(), 0.0, loss_alone({"view": 0, "op": "avgpool"}), 0.0], rel=1e-5)
    with pytest.raises(OneShotError, match="arch_gradient"):
        ProxylessNAS(space, model, arch_gradient="both")
