"""The batching trainer: every trial of a merged run gets the losses, metrics and weights it gets
trained alone; one trial's failure, early stop or clipping changes nothing for the others."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
import torch.nn.functional as F

from retiarii_ir import codegen
import retiarii_ir as ir
from retiarii_ir.optimizer import DataSpec, TrainConfig, Trial
from retiarii_ir.optimizer.merge import initial_state
from retiarii_ir.runtime.training import data, trainer
from retiarii_ir.space.hub.digits import DigitsSpace
from retiarii_ir.runtime.training.trainer import train_trials

ALL = ("dedup", "cse", "batch")
_SPACE: list = []


def digits_space() -> ir.ModelSpace:
    if not _SPACE:
        torch.manual_seed(0)
        _SPACE.append(ir.trace_space(DigitsSpace(), torch.randn(2, 1, 8, 8)))
    return _SPACE[0]


def trial(name: str, width=16, op="conv3x3", depth=1, data_spec: DataSpec | None = None, **config) -> Trial:
    graph = digits_space().freeze({"width": width, "op": op, "depth": depth})
    return Trial(name, graph, data=data_spec or DataSpec(), train=TrainConfig(**config))


def assert_losses_close(actual: list[float], expected: list[float], rtol: float = 1e-4, what: str = "") -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} losses vs {len(expected)}"
    for step, (a, e) in enumerate(zip(actual, expected)):
        assert math.isclose(a, e, rel_tol=rtol, abs_tol=1e-7), f"{what} step {step}: {a} vs {e}"


def accuracy_of(graph: ir.Graph, state: dict[str, torch.Tensor], dataset: str = "digits") -> float:
    """The validation accuracy of ``state`` in the trial's own generated module, loaded strictly."""
    module = codegen.load(graph, formatted=False)()
    module.load_state_dict(state, strict=True)
    val = data.dataset(dataset)
    with torch.no_grad():
        return (module.eval()(val.val_x).argmax(1) == val.val_y).float().mean().item()


@pytest.fixture
def registered(monkeypatch):
    """Register a data set for one test only."""
    def register(name, loader):
        monkeypatch.setitem(data._LOADERS, name, loader)
        monkeypatch.delitem(data._CACHE, name, raising=False)
        return name
    yield register
    for name in [n for n in data._CACHE if n.startswith("test-")]:
        data._CACHE.pop(name, None)


# ---------------------------------------------------------------------- equivalence, full epochs
# Small CNNs on digits are chaotic: a 1e-7 change of one step's gradients can flip a ReLU and grow to
# 1e-4 within a few steps. These configurations were picked because 1e-7 noise added to every
# gradient of every step moves none of their losses by more than 3e-7 relative over two epochs.
EQUIVALENCE_TRIALS = [
    dict(name="sgd", op="maxpool", depth=1, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, seed=1),
    dict(name="adam", op="conv5x5", depth=1, optimizer="adam", lr=3e-3, seed=1),
    dict(name="adamw", depth=1, optimizer="adamw", lr=3e-3, weight_decay=0.01, seed=0),
    dict(name="adam-other-order", depth=0, optimizer="adam", lr=1e-2, seed=3, data_spec=DataSpec(shuffle_seed=1)),
]


@pytest.fixture(scope="module")
def equivalence_runs():
    trials = [trial(epochs=2, **spec) for spec in EQUIVALENCE_TRIALS]
    runs = {"alone": train_trials(trials, independent=True)}
    for passes in [("dedup",), ("dedup", "cse"), ALL]:  # no timing-based choices: the same kernels everywhere
        runs[passes] = train_trials(trials, passes, autotune=False)
    return trials, runs


@pytest.mark.parametrize("passes", [("dedup",), ("dedup", "cse")])
def test_merged_training_without_batching_gives_identical_losses(equivalence_runs, passes):
    trials, runs = equivalence_runs
    steps = data.steps_per_epoch(DataSpec())
    for merged, alone in zip(runs[passes], runs["alone"]):
        assert merged.status == alone.status == "succeeded", (merged.error, alone.error)
        assert merged.trained_as == f"merged with {len(trials)}" and alone.trained_as == "alone"
        assert len(merged.losses) == 2 * steps and len(merged.metrics) == 2
        assert merged.losses == alone.losses, merged.name
        assert merged.metrics == alone.metrics, merged.name
        for key, value in alone.state.items():
            assert torch.equal(merged.state[key], value), (merged.name, key)


def test_merged_training_with_batching_matches_within_rounding(equivalence_runs):
    trials, runs = equivalence_runs
    for merged, alone in zip(runs[ALL], runs["alone"]):
        assert merged.status == "succeeded", merged.error
        assert_losses_close(merged.losses[:20], alone.losses[:20], what=merged.name)
        assert abs(merged.metric - alone.metric) <= 0.005, (merged.name, merged.metric, alone.metric)
    # the trials really trained, and differently from each other
    metrics = [r.metric for r in runs["alone"]]
    assert max(metrics) > 0.5 and len(set(metrics)) == len(metrics)
    assert all(r.losses[-1] < r.losses[0] for r in runs["alone"])


@pytest.mark.parametrize("run", ["alone", ("dedup",), ALL])
def test_final_state_loads_strictly_and_reproduces_the_metric(equivalence_runs, run):
    trials, runs = equivalence_runs
    for t, result in zip(trials, runs[run]):
        assert set(result.state) == set(initial_state(t))
        accuracy = accuracy_of(t.graph, result.state)
        if run == ALL:  # the merged module evaluated with fused kernels: a near-tie may flip
            assert abs(accuracy - result.metric) <= 1.5 / len(data.dataset("digits").val_y), t.name
        else:
            assert accuracy == result.metric, t.name


def test_training_alone_is_a_plain_pytorch_loop():
    """An independent reference: SGD with momentum, weight decay and clipping, written out by hand."""
    t = trial("ref", depth=0, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, grad_clip=0.5,
              max_steps=6, seed=4)
    result = train_trials([t], independent=True)[0]
    model = codegen.load(t.graph, formatted=False)()
    torch.manual_seed(t.train.seed)
    model.load_state_dict(ir.build_module(t.graph).state_dict(), strict=True)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    losses = []
    model.train()
    for step, (x, y) in zip(range(6), data.batches(t.data, 0)):
        sgd.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.5)
        sgd.step()
        losses.append(loss.item())
    assert_losses_close(result.losses, losses, rtol=1e-6, what="trainer vs plain loop")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(result.state[key], value, rtol=1e-5, atol=1e-6)


def test_cosine_schedule_is_torchs_cosine_annealing_over_every_step():
    """An independent reference: Adam with CosineAnnealingLR stepped per batch over 2 epochs of 5 steps."""
    t = trial("cos", depth=0, optimizer="adam", lr=1e-2, epochs=2, max_steps=5, seed=2, schedule="cosine")
    result = train_trials([t], independent=True)[0]
    model = codegen.load(t.graph, formatted=False)()
    model.load_state_dict(initial_state(t), strict=True)
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=10)
    losses = []
    model.train()
    for epoch in range(2):
        for step, (x, y) in zip(range(5), data.batches(t.data, epoch)):
            adam.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            adam.step()
            schedule.step()
            losses.append(loss.item())
    constant = train_trials([dataclasses.replace(t, train=dataclasses.replace(t.train, schedule="constant"))],
                            independent=True)[0]
    assert_losses_close(result.losses, losses, rtol=1e-5, what="trainer vs plain loop")
    assert result.losses[-1] != constant.losses[-1]  # the schedule changed something


def test_trials_with_different_hyperparameters_batch_and_each_matches_alone():
    """One architecture, K learning rates, momenta and weight decays: fused layers keep the
    trials' weights stacked and one optimizer step takes each trial's own values."""
    trials = [trial(f"lr{k}", optimizer="sgd", lr=lr, momentum=m, weight_decay=wd, max_steps=20, seed=k)
              for k, (lr, m, wd) in enumerate([(0.05, 0.9, 1e-4), (0.02, 0.5, 0.0), (0.1, 0.0, 1e-3)])]
    merged = train_trials(trials, ALL, autotune=False)
    alone = train_trials(trials, independent=True)
    for m, a in zip(merged, alone):
        assert m.status == "succeeded" and m.trained_as == "merged with 3", m.error
        assert_losses_close(m.losses, a.losses, what=m.name)
        assert abs(m.metric - a.metric) <= 0.005, (m.name, m.metric, a.metric)
    assert len({a.losses[-1] for a in alone}) == 3


def test_a_stacked_layer_that_only_some_trials_share_steps_with_their_hyperparameters():
    """Adam at two learning rates on two width-16 trials (their layers stack and step row-wise)
    beside a width-32 trial that owns no rows of those tensors: its values must not enter
    their update (its step count there is 0, and 1 - beta1 ** 0 divides by zero)."""
    trials = [trial("a", op="conv5x5", optimizer="adam", lr=3e-3, max_steps=20, seed=1),
              trial("b", op="conv5x5", optimizer="adam", lr=1e-3, max_steps=20, seed=0),
              trial("c", width=32, optimizer="adam", lr=1e-2, weight_decay=1e-3, max_steps=20, seed=2)]
    merged = train_trials(trials, ALL, autotune=False)
    alone = train_trials(trials, independent=True)
    for got, expected in zip(merged, alone):
        assert got.status == "succeeded" and got.trained_as == "merged with 3", (got.error, got.trained_as)
        assert_losses_close(got.losses, expected.losses, what=got.name)


class ProjectionTiedToLinear(torch.nn.Module):
    """A parameter read directly (``x @ proj``) that is also a linear layer's weight."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 64)
        self.proj = self.fc.weight
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.head(torch.relu(self.fc(x)) + torch.relu(x @ self.proj))


def test_a_weight_tied_to_a_directly_read_parameter_trains_as_one_tensor():
    """Stacking ``fc``'s weight would untie it from ``proj`` (each copy getting part of the
    gradient): the merged run must train them as the one tensor they are, like training alone."""
    torch.manual_seed(0)
    graph = ir.trace(ProjectionTiedToLinear(), (torch.randn(2, 1, 8, 8),))
    assert set(graph.aliases.items()) in ({("fc.weight", "proj")}, {("proj", "fc.weight")})
    trials = [Trial(f"t{k}", graph, train=TrainConfig(lr=0.1, max_steps=6, seed=k)) for k in range(2)]
    merged = train_trials(trials, ALL, autotune=False)
    alone = train_trials(trials, independent=True)
    for got, expected in zip(merged, alone):
        assert got.status == "succeeded" and got.trained_as == "merged with 2", (got.error, got.trained_as)
        assert torch.equal(got.state["fc.weight"], got.state["proj"]), "the tie was broken"
        assert_losses_close(got.losses, expected.losses, what=got.name)


# ---------------------------------------------------------------------- one trial's trouble
def nan_dataset(rows):
    def load():
        digits = data.dataset("digits")
        train_x = digits.train_x.clone()
        train_x[list(rows)] = float("nan")
        return data.Dataset(train_x, digits.train_y, digits.val_x, digits.val_y)
    return load


def first_step_with_nan(spec: DataSpec) -> int:
    return next(step for step, (x, _) in enumerate(data.batches(spec, 0)) if torch.isnan(x).any())


@pytest.mark.parametrize("passes", [("dedup", "cse"), ALL])
def test_a_trial_whose_loss_becomes_nan_fails_and_changes_nothing_for_the_others(registered, passes):
    spec = DataSpec(registered("test-nan-rows", nan_dataset(range(700, 706))))
    bad_step = first_step_with_nan(spec)
    assert 0 < bad_step < 7
    others = [trial("a", optimizer="adam", lr=1e-2, max_steps=8, seed=0),
              trial("b", op="sepconv", optimizer="sgd", lr=0.1, momentum=0.9, max_steps=8, seed=1),
              trial("c", depth=0, optimizer="adamw", lr=1e-2, max_steps=8, seed=2)]
    bad = trial("bad", optimizer="adam", lr=1e-2, max_steps=8, seed=3, data_spec=spec)
    with_bad = train_trials(others[:2] + [bad] + others[2:], passes)
    without = train_trials(others, passes)
    failed = with_bad[2]
    assert failed.status == "failed" and failed.state is None
    assert re.search(rf"\bnan\b.*epoch 0 step {bad_step}\b", failed.error), failed.error
    assert len(failed.losses) == bad_step and all(math.isfinite(v) for v in failed.losses)
    bad_alone = train_trials([bad], independent=True)[0]
    assert bad_alone.status == "failed" and bad_alone.error == failed.error
    assert_losses_close(failed.losses, bad_alone.losses, rtol=0 if "batch" not in passes else 1e-4, what="bad")
    for got, expected in zip(with_bad[:2] + with_bad[3:], without):
        assert got.status == "succeeded", got.error
        assert_losses_close(got.losses, expected.losses, what=got.name)
        assert abs(got.metric - expected.metric) <= 0.005, got.name
        if "batch" not in passes:  # (with batching, rounding differs and Adam's steps amplify it)
            for key, value in expected.state.items():
                assert torch.equal(got.state[key], value), (got.name, key)


def test_should_stop_stops_one_trial_after_an_epoch_and_the_others_go_on():
    trials = [trial("stops", optimizer="adam", lr=1e-2, epochs=3, max_steps=4, seed=0),
              trial("b", op="conv5x5", optimizer="sgd", lr=0.1, momentum=0.9, epochs=3, max_steps=4, seed=1),
              trial("c", depth=0, optimizer="adam", lr=1e-2, epochs=3, max_steps=4, seed=2)]
    calls = []

    def should_stop(name, epoch, metrics):
        calls.append((name, epoch, metrics["metric"]))
        return name == "stops" and epoch == 0

    stopped = train_trials(trials, ("dedup", "cse"), should_stop=should_stop)
    reference = train_trials(trials, ("dedup", "cse"))
    first = stopped[0]
    assert first.status == "stopped" and first.error is None
    assert len(first.losses) == 4 and len(first.metrics) == 1
    assert [(n, e) for n, e, _ in calls if n == "stops"] == [("stops", 0)]
    assert sorted((n, e) for n, e, _ in calls if n != "stops") == [(n, e) for n in "bc" for e in range(3)]
    assert [m for n, _, m in calls if n == "stops"] == [first.metric]
    # the state kept is the one after its first epoch: the same as training it for one epoch alone
    one_epoch = train_trials([dataclasses.replace(trials[0], train=dataclasses.replace(trials[0].train, epochs=1))],
                             independent=True)[0]
    assert first.losses == one_epoch.losses and first.metric == one_epoch.metric
    for key, value in one_epoch.state.items():
        assert torch.equal(first.state[key], value), key
    assert accuracy_of(trials[0].graph, first.state) == first.metric
    for got, expected in zip(stopped[1:], reference[1:]):
        assert got.status == "succeeded" and len(got.metrics) == 3
        assert got.losses == expected.losses and got.metrics == expected.metrics


@pytest.mark.parametrize("how", ["stopped", "nan at the last step of an epoch"])
def test_a_group_whose_trials_all_leave_early_ends_cleanly(registered, how):
    if how == "stopped":
        trials = [trial("a", optimizer="adam", lr=1e-2, epochs=2, max_steps=2, seed=0),
                  trial("b", depth=0, optimizer="adam", lr=1e-2, epochs=2, max_steps=2, seed=1)]
        results = train_trials(trials, ALL, should_stop=lambda name, epoch, metrics: True)
        assert [r.status for r in results] == ["stopped", "stopped"]
        assert all(len(r.metrics) == 1 and r.error is None for r in results)
        assert all(r.trained_as == "merged with 2" for r in results)
    else:
        spec = DataSpec(registered("test-all-nan", nan_dataset(range(len(data.dataset("digits").train_x)))))
        results = train_trials([trial("nan", optimizer="adam", lr=1e-2, epochs=2, max_steps=1, data_spec=spec)])
        assert results[0].status == "failed"
        assert "loss became nan at epoch 0 step 0" in results[0].error, results[0].error


def test_grad_clip_is_applied_per_trial():
    common = dict(optimizer="sgd", lr=0.5, momentum=0.9, max_steps=8, seed=0)
    trials = [trial("free", **common), trial("clipped", grad_clip=1e-3, **common),
              trial("other", op="conv5x5", depth=0, grad_clip=0.1, **dict(common, seed=1))]
    alone = train_trials(trials, independent=True)
    for passes in [("dedup", "cse"), ALL]:
        merged = train_trials(trials, passes)
        free, clipped = merged[0], merged[1]
        assert free.losses[0] == clipped.losses[0]  # same weights, same first batch
        assert all(abs(a - b) > 1e-3 for a, b in zip(free.losses[2:], clipped.losses[2:])), "clipping did nothing"
        for got, expected in zip(merged, alone):
            if "batch" in passes:
                assert_losses_close(got.losses, expected.losses, what=f"{passes} {got.name}")
            else:
                assert got.losses == expected.losses, (passes, got.name)
    # with momentum 0.9 each step moves the weights by at most lr * 10 * clip: 8 steps, at most 0.04
    names = [name for name, _ in codegen.load(trials[0].graph, formatted=False)().named_parameters()]
    start = initial_state(trials[0])
    moved = [torch.cat([(r.state[n] - start[n]).flatten() for n in names]).norm().item() for r in alone[:2]]
    assert moved[1] <= 8 * 0.5 * 10 * 1e-3 < moved[0], moved


# ---------------------------------------------------------------------- group sizes and fallback
def test_a_failing_group_falls_back_to_smaller_groups_and_loses_nothing(monkeypatch):
    trials = [trial(f"t{k}", op=op, optimizer="adam", lr=1e-2, max_steps=5, seed=k)
              for k, op in enumerate(["conv3x3", "conv5x5", "sepconv", "maxpool"])]
    alone = train_trials(trials, independent=True)
    real_step = trainer._GroupRun._step

    def step(self, epoch, step_index, streams):
        if len(self.trials) > 2 and step_index == 2:  # fails after some losses were recorded
            raise RuntimeError("simulated out of memory")
        return real_step(self, epoch, step_index, streams)

    monkeypatch.setattr(trainer._GroupRun, "_step", step)
    results = train_trials(trials, ("dedup",))
    for got, expected in zip(results, alone):
        assert got.status == "succeeded", got.error
        assert got.trained_as == "merged with 2 (group of 4 failed: RuntimeError: simulated out of memory)"
        assert got.losses == expected.losses and got.metrics == expected.metrics
        for key, value in expected.state.items():
            assert torch.equal(got.state[key], value), key


def test_fallback_goes_down_to_single_trials(monkeypatch):
    trials = [trial(f"t{k}", depth=0, optimizer="adam", lr=1e-2, max_steps=2, seed=k) for k in range(3)]
    alone = train_trials(trials, independent=True)

    def run(self):
        if len(self.trials) > 1:
            raise ValueError("no merging today")
        return real_run(self)

    real_run = trainer._GroupRun.run
    monkeypatch.setattr(trainer._GroupRun, "run", run)
    results = train_trials(trials, ALL)
    expected_as = ["alone (group of 3 failed: ValueError: no merging today)",
                   "alone (group of 2 failed: ValueError: no merging today) (group of 3 failed: ValueError: "
                   "no merging today)"]
    assert results[0].trained_as == expected_as[0]
    assert results[1].trained_as == results[2].trained_as == expected_as[1]
    for got, expected in zip(results, alone):
        assert got.status == "succeeded" and got.losses == expected.losses and got.metrics == expected.metrics


@pytest.mark.parametrize("limit, expected", [
    (dict(max_group=2), [2, 2, 2, 2, 1]),
    (dict(max_group=3), [3, 3, 3, 2, 2]),
    (dict(memory_budget="3x"), [3, 3, 3, 2, 2]),
    (dict(memory_budget="2x"), [2, 2, 2, 2, 1]),
    (dict(memory_budget=1), [1, 1, 1, 1, 1]),
    (dict(), [5, 5, 5, 5, 5]),
])
def test_max_group_and_memory_budget_split_groups(limit, expected):
    trials = [trial(f"t{k}", depth=0, optimizer="adam", lr=1e-2, max_steps=1, seed=k) for k in range(5)]
    if isinstance(limit.get("memory_budget"), str):
        per_trial = trainer.estimate_training_bytes(trials[0])
        assert per_trial > 0
        limit = {"memory_budget": int(limit["memory_budget"][0]) * per_trial + per_trial // 2}
    results = train_trials(trials, ("dedup",), **limit)
    assert [r.trained_as for r in results] == [f"merged with {n}" if n > 1 else "alone" for n in expected]
    assert all(r.status == "succeeded" for r in results)


def test_only_trials_that_run_in_lock_step_share_a_group():
    trials = [trial("one-epoch", depth=0, optimizer="adam", lr=1e-2, epochs=1, max_steps=2, seed=0),
              trial("two-epochs", depth=0, optimizer="adam", lr=1e-2, epochs=2, max_steps=2, seed=1),
              trial("one-epoch-too", depth=0, optimizer="adam", lr=1e-2, epochs=1, max_steps=2, seed=2),
              trial("other-batches", depth=0, optimizer="adam", lr=1e-2, epochs=1, seed=3,
                    data_spec=DataSpec(batch_size=256))]
    results = train_trials(trials, ALL)
    assert [r.trained_as for r in results] == ["merged with 2", "alone", "merged with 2", "alone"]
    assert [len(r.losses) for r in results] == [2, 4, 2, data.steps_per_epoch(DataSpec(batch_size=256))]



def test_trials_whose_batches_differ_in_size_train_apart_even_in_lock_step():
    """Equal steps and epochs (max_steps), but batches of 32 and 64: no batch or fused kernel to share."""
    trials = [trial("small", depth=0, epochs=1, max_steps=2, seed=0, data_spec=DataSpec(batch_size=32)),
              trial("large", depth=0, epochs=1, max_steps=2, seed=1, data_spec=DataSpec(batch_size=64)),
              trial("large-too", depth=0, epochs=1, max_steps=2, seed=2, data_spec=DataSpec(batch_size=64))]
    results = train_trials(trials, ALL)
    assert [r.trained_as.split(";")[0] for r in results] == ["alone", "merged with 2", "merged with 2"]


def test_trials_on_data_sets_of_different_sizes_validate_in_one_group(registered):
    def bigger():
        digits = data.dataset("digits")
        return data.Dataset(digits.train_x, digits.train_y, torch.cat([digits.val_x, digits.train_x]),
                            torch.cat([digits.val_y, digits.train_y]))

    spec = DataSpec(registered("test-big-validation", bigger))
    trials = [trial("digits", depth=0, optimizer="adam", lr=1e-2, max_steps=3, seed=0),
              trial("bigger", depth=0, optimizer="adam", lr=1e-2, max_steps=3, seed=1, data_spec=spec)]
    results = train_trials(trials, ("dedup",))
    alone = train_trials(trials, independent=True)
    assert [r.trained_as for r in results] == ["merged with 2", "merged with 2"]
    assert [r.metric for r in results] == [r.metric for r in alone]


# ---------------------------------------------------------------------- frozen, shared backbone
def test_a_frozen_shared_backbone_trains_like_each_trial_alone():
    from tests.test_optimizer_plan import backbone_trials

    trials = [dataclasses.replace(t, train=TrainConfig(optimizer=opt, lr=lr, seed=k, max_steps=6))
              for k, (t, opt, lr) in enumerate(zip(backbone_trials(), ["adam", "sgd", "adamw"], [1e-2, 0.1, 1e-2]))]
    alone = train_trials(trials, independent=True)
    merged = train_trials(trials, ("dedup", "cse"))
    for got, expected, t in zip(merged, alone, trials):
        assert got.status == "succeeded", got.error
        assert got.losses == expected.losses, t.name
        for key in t.frozen:
            if "running" not in key and "num_batches" not in key:  # BN statistics move in train mode
                assert torch.equal(got.state[key], t.initial_state[key]), f"frozen {key} changed"
        for key, value in expected.state.items():
            assert torch.equal(got.state[key], value), (t.name, key)


# ---------------------------------------------------------------------- batching kept only where a step is faster
class DropoutNet(torch.nn.Module):
    """Draws from the global random stream every step: timing steps must not shift its draws."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.drop = torch.nn.Dropout(0.2)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        x = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def dropout_trials() -> list[Trial]:
    torch.manual_seed(0)
    graph = ir.trace(DropoutNet(), (torch.randn(2, 1, 8, 8),))
    return [Trial(f"drop{k}", graph, DataSpec(), TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, seed=k,
                                                              max_steps=5)) for k in range(3)]


@pytest.fixture(autouse=True)
def _choices_timed_afresh(tmp_path, monkeypatch):
    """Each test times its batching choice itself: nothing remembered from another test."""
    from retiarii_ir.runtime.training import decisions

    monkeypatch.setenv("RETIARII_CACHE_DIR", str(tmp_path / "choices"))
    monkeypatch.setattr(decisions, "_MEMORY", {})


def forced_timing(monkeypatch, batched_wins: bool) -> list[str]:
    """Run the real timing steps (so their side effects are exercised) but decide the outcome."""
    real = trainer._GroupRun._step_seconds
    timed = []

    def step_seconds(self, group, module, repeats=3):
        real(self, group, module, repeats)
        timed.append("batched" if group.batched else "plain")
        return 0.0 if bool(group.batched) == batched_wins else 1.0

    monkeypatch.setattr(trainer._GroupRun, "_step_seconds", step_seconds)
    return timed


def test_batching_measured_slower_is_switched_off_and_changes_nothing(monkeypatch):
    """With batching off the group trains exactly as with the exact passes alone: the timing steps
    left no trace in weights, BN statistics, gradients or the dropout draws that follow."""
    trials = dropout_trials()
    exact = train_trials(trials, ("dedup", "cse"))
    timed = forced_timing(monkeypatch, batched_wins=False)
    results = train_trials(trials, ALL)
    assert set(timed) == {"batched", "plain"} and timed.count("plain") == 3  # three rounds, taking turns
    for got, expected in zip(results, exact):
        assert got.batching.startswith("off: timed now (a step took"), got.batching
        assert got.losses == expected.losses and got.metrics == expected.metrics, got.name
        for key, value in expected.state.items():
            assert torch.equal(got.state[key], value), (got.name, key)


def test_batching_measured_faster_is_kept(monkeypatch):
    trials = dropout_trials()
    forced_timing(monkeypatch, batched_wins=True)
    plans = []
    real_plan = trainer.plan
    monkeypatch.setattr(trainer, "plan", lambda *a, **k: plans.append(real_plan(*a, **k)) or plans[-1])
    results = train_trials(trials, ALL)
    assert all(r.batching.startswith("kept: timed now (a step took") and r.status == "succeeded" for r in results)
    assert any(p.batched for p in plans) and not all(p.batched for p in plans)  # batched and plain candidates
    assert results.plans[0].batched  # and the batched one trained


def test_no_timing_without_batching_or_autotune(monkeypatch):
    timed = forced_timing(monkeypatch, batched_wins=True)
    trials = dropout_trials()
    assert all(r.batching == "" for r in train_trials(trials, ("dedup", "cse")))
    assert all(r.batching == "" for r in train_trials(trials, ALL, autotune=False))
    assert timed == []


def test_a_batched_step_that_fails_while_timed_costs_the_batching_not_the_merge(monkeypatch):
    trials = dropout_trials()
    exact = train_trials(trials, ("dedup", "cse"))
    real = trainer._GroupRun._step_seconds

    def step_seconds(self, group, module, repeats=3):
        if group.batched:
            raise RuntimeError("simulated failure inside a fused kernel")
        return real(self, group, module, repeats)

    monkeypatch.setattr(trainer._GroupRun, "_step_seconds", step_seconds)
    results = train_trials(trials, ALL)
    for got, expected in zip(results, exact):
        assert got.batching == ("off: timed now (the batched step failed (RuntimeError: simulated failure inside a "
                                "fused kernel))")
        assert got.trained_as == "merged with 3" and got.losses == expected.losses


@pytest.mark.parametrize("batched_over_plain, kept", [(0.5, True), (0.95, False), (1.2, False)])
def test_batching_is_kept_only_when_clearly_faster(monkeypatch, batched_over_plain, kept):
    def step_seconds(self, group, module, repeats=3):
        return 0.1 * batched_over_plain if group.batched else 0.1

    monkeypatch.setattr(trainer._GroupRun, "_step_seconds", step_seconds)
    results = train_trials(dropout_trials()[:2], ALL)
    assert all(r.batching.startswith("kept" if kept else "off") for r in results), results[0].batching
