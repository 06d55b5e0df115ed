"""The ask/tell contract every strategy keeps: concurrency, seeds, duplicates, modes, failures."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from retiarii_ir.space.search_space import Choice, SearchSpace, product_space
from retiarii_ir.strategies import (
    TPE,
    Budget,
    GridSearch,
    PolicyBasedRL,
    Random,
    RegularizedEvolution,
    SpaceExhausted,
    StrategyError,
    run_strategy,
)
from retiarii_ir.strategies.landscapes import interaction_landscape

ALL = [Random, GridSearch, RegularizedEvolution, TPE, PolicyBasedRL]
FAST = dict(population_size=8, sample_size=3)


def make(cls, space, **kwargs):
    if cls is RegularizedEvolution:
        kwargs = {**FAST, **kwargs}
    if cls is GridSearch:
        kwargs.setdefault("shuffle", True)
    return cls(space, **kwargs)


def nested_space() -> SearchSpace:
    """12 samples: op=conv has a kernel, op=pool has a kind, op=skip has nothing; times width."""
    return SearchSpace.of([Choice("op", ("conv", "pool", "skip")),
                           Choice("kernel", (1, 3, 5), parent=("op", "conv")),
                           Choice("kind", ("max", "avg"), parent=("op", "pool")),
                           Choice("width", (8, 16))])


@pytest.fixture(scope="module")
def bench():
    return interaction_landscape(seed=3, labels=4, values=4, nested_values=3)


@pytest.mark.parametrize("cls", ALL)
def test_concurrent_proposals_are_distinct_and_valid(cls, bench):
    strategy = make(cls, bench.space, seed=0)
    first = [strategy.propose() for _ in range(6)]
    assert len({bench.space.sample_key(s) for s in first}) == 6
    assert all(bench.space.validate(s) == s for s in first)
    assert len(strategy.pending) == 6
    for sample in first:
        strategy.observe(sample, bench(sample))
    history = run_strategy(strategy, bench, Budget(max_trials=40), concurrency=4)
    assert len(history) == 46 and not strategy.pending
    assert len({bench.space.sample_key(t.sample) for t in history}) == 46


@pytest.mark.parametrize("cls", ALL)
def test_same_seed_same_proposals_other_seed_other_proposals(cls, bench):
    def proposals(seed):
        history = run_strategy(make(cls, bench.space, seed=seed), bench, Budget(max_trials=30), concurrency=3)
        return [bench.space.sample_key(t.sample) for t in history]

    assert proposals(7) == proposals(7)
    assert proposals(7) != proposals(8)


@pytest.mark.parametrize("cls", ALL)
def test_no_duplicates_until_the_space_is_exhausted(cls):
    space = nested_space()
    assert space.size == 12
    strategy = make(cls, space, seed=1)
    history = run_strategy(strategy, lambda s: len(str(s)), Budget(max_trials=100), concurrency=2)
    assert len(history) == 12
    assert {space.sample_key(t.sample) for t in history} == {space.sample_key(s) for s in space.grid()}
    assert strategy.exhausted
    with pytest.raises(SpaceExhausted, match="all 12 samples"):
        strategy.propose()


def test_grid_search_without_shuffle_follows_grid_order():
    space = nested_space()
    history = run_strategy(GridSearch(space), lambda s: 0.0, Budget(max_trials=12))
    assert [t.sample for t in history] == list(space.grid())


def ramp_space() -> SearchSpace:
    """216 samples whose metric is a + b + c: every label has one good end (uniform mean 7.5)."""
    return product_space(a=list(range(6)), b=list(range(6)), c=list(range(6)))


def ramp(sample) -> float:
    return float(sample["a"] + sample["b"] + sample["c"])


def oriented(metric: float, mode: str) -> float:
    """The higher-is-better score a strategy must learn from ``metric``."""
    return metric if mode == "maximize" else -metric


def leans_right(mean: float, mode: str, margin: float) -> bool:
    return mean > 7.5 + margin if mode == "maximize" else mean < 7.5 - margin


def sample_of(space: SearchSpace, indices: dict) -> dict:
    return {label: space.choices[label].values[i] for label, i in indices.items()}


@pytest.mark.parametrize("cls", [RegularizedEvolution, TPE, PolicyBasedRL])
@pytest.mark.parametrize("mode", ["maximize", "minimize"])
def test_optimize_mode_is_honoured(cls, mode):
    """What each learner learned points the right way, not only ``best()`` (which any search
    that tries enough samples gets right). Planted bug: TPE's direction double-negated."""
    import torch

    space = ramp_space()
    strategy = cls(space, seed=0, optimize_mode=mode)
    run_strategy(strategy, ramp, Budget(max_trials=60), concurrency=2)
    later = [t.metric for t in strategy.history[30:]]
    assert leans_right(sum(later) / len(later), mode, 0.5), f"the last 30 proposals average {sum(later) / 30}"
    if cls is TPE:
        done = [t for t in strategy.study.trials if t.value is not None]
        assert done and all(t.value == oriented(ramp(sample_of(space, t.params)), mode) for t in done)
        assert sample_of(space, strategy.study.best_trial.params) == strategy.best().sample
    elif cls is RegularizedEvolution:
        assert all(score == oriented(ramp(member), mode) for member, score in strategy.population)
        members = [ramp(member) for member, _ in strategy.population]
        assert len(members) == strategy.population_size and leans_right(sum(members) / len(members), mode, 1.0)
    else:
        generator = torch.Generator().manual_seed(0)
        drawn = [ramp(sample_of(space, strategy.controller.sample(generator)[0])) for _ in range(200)]
        assert leans_right(sum(drawn) / len(drawn), mode, 1.0), f"the policy averages {sum(drawn) / 200}"


def crashes(sample) -> bool:
    """A fixed third of the space fails, as if those models ran out of memory."""
    return sum(map(ord, str(sorted(sample.items())))) % 3 == 0


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("on_failure", ["ignore", "worst"])
def test_strategy_keeps_going_after_failures(cls, on_failure, bench):
    def evaluate(sample):
        if crashes(sample):
            raise RuntimeError("CUDA out of memory (simulated)")
        return bench(sample)

    strategy = make(cls, bench.space, seed=2, on_failure=on_failure)
    history = run_strategy(strategy, evaluate, Budget(max_trials=60), concurrency=3)
    failed = [t for t in history if t.status == "failed"]
    assert len(history) == 60 and failed and len(failed) < 60
    assert all("out of memory" in t.error for t in failed)
    assert strategy.best().status == "succeeded" and not crashes(strategy.best().sample)


@pytest.mark.parametrize("mode", ["maximize", "minimize"])
def test_a_failure_is_learned_with_the_worst_score_so_far(mode):
    """Planted bug: a failed trial gets the best score instead of the worst. With
    on_failure="worst", a crash and a filtered sample enter evolution's population with the
    lowest score seen; with "ignore" they do not enter it at all."""
    space = ramp_space()
    samples = list(space.grid())
    rejected = samples[3]
    for policy in ("worst", "ignore"):
        strategy = RegularizedEvolution(space, seed=0, optimize_mode=mode, on_failure=policy,
                                        model_filter=lambda s: s != rejected)
        order = iter(samples)
        strategy._suggest = lambda: next(order)  # a fixed order of proposals
        good, bad, crashed = strategy.propose(), strategy.propose(), strategy.propose()
        assert (good, bad, crashed) == (samples[0], samples[1], samples[2])
        metric = {"maximize": (5.0, 2.0), "minimize": (2.0, 5.0)}[mode]
        strategy.observe(good, metric[0])
        strategy.observe(bad, metric[1])
        strategy.observe_failure(crashed, RuntimeError("out of memory"))
        assert strategy.propose() == samples[4] and strategy.history[3].status == "filtered"
        learned = [(member, score) for member, score in strategy.population]
        worst = oriented(metric[1], mode)
        expected = [(good, oriented(metric[0], mode)), (bad, worst)]
        if policy == "worst":
            expected += [(crashed, worst), (rejected, worst)]
        assert learned == expected, policy


def test_nan_and_none_metrics_are_failures(bench):
    strategy = Random(bench.space, seed=0)
    a, b, c = strategy.propose(), strategy.propose(), strategy.propose()
    nan, none = strategy.observe(a, float("nan")), strategy.observe(b, None)
    assert (nan.status, nan.error) == ("failed", "metric is NaN")
    assert (none.status, none.error) == ("failed", "no metric reported")
    assert strategy.observe(c, "high").error.startswith("metric is not a number")
    assert strategy.best() is None


@pytest.mark.parametrize("cls", ALL)
def test_model_filter_runs_before_training(cls, bench):
    evaluated = []

    def evaluate(sample):
        evaluated.append(sample)
        return bench(sample)

    small = lambda s: s["x1"] != "v0"
    strategy = make(cls, bench.space, seed=0, model_filter=small)
    history = run_strategy(strategy, evaluate, Budget(max_trials=30), concurrency=2)
    assert len(evaluated) == 30 and all(small(s) for s in evaluated)
    filtered = [t for t in history if t.status == "filtered"]
    assert filtered and all(not small(t.sample) for t in filtered)
    assert all(t.error == "rejected by model_filter" and t.metric is None for t in filtered)
    assert sorted(t.number for t in history) == list(range(len(history))), "one number per proposal"


@pytest.mark.parametrize("cls", ALL)
def test_a_filtered_sample_is_never_proposed_again(cls):
    """Planted bug: filtered samples not marked seen. Each of the 12 samples is proposed once,
    filtered or trained, and then the space is exhausted."""
    space = nested_space()
    no_pool = lambda s: s["op"] != "pool"  # noqa: E731 - rejects 4 of the 12
    strategy = make(cls, space, seed=0, model_filter=no_pool)
    history = run_strategy(strategy, ramp_or_zero, Budget(max_trials=100), concurrency=2)
    keys = [space.sample_key(t.sample) for t in history]
    assert sorted(keys) == sorted(space.sample_key(s) for s in space.grid())
    assert [t.status for t in history].count("filtered") == 4 and strategy.exhausted
    with pytest.raises(SpaceExhausted):
        strategy.propose()


def ramp_or_zero(sample) -> float:
    return float(sample.get("kernel", 0) + sample["width"])


def test_a_filter_that_rejects_everything_is_reported(bench):
    strategy = Random(bench.space, seed=0, model_filter=lambda s: False, max_filtered_in_a_row=50)
    with pytest.raises(StrategyError, match="rejected 50 samples in a row"):
        strategy.propose()
    assert [t.status for t in strategy.history] == ["filtered"] * 50


def test_time_budget_stops_and_observes_every_started_trial(bench, monkeypatch):
    """On a clock that each trial moves by 0.03 s: 3 trials start at 0 s, one more after each
    of the first 6 (up to 0.18 s), none after the 7th (0.21 s); all 9 are observed."""
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def slow(sample):
        clock[0] += 0.03
        return bench(sample)

    strategy = Random(bench.space, seed=0)
    history = run_strategy(strategy, slow, Budget(max_seconds=0.2), concurrency=3)
    assert len(history) == 9 and not strategy.pending
    assert all(t.status == "succeeded" for t in history)


def test_executor_runs_trials_concurrently_and_loses_none(bench):
    def slow(sample):
        time.sleep(0.01)
        if crashes(sample):
            raise ValueError("diverged")
        return bench(sample)

    strategy = RegularizedEvolution(bench.space, seed=0, **FAST)
    with ThreadPoolExecutor(4) as pool:
        history = run_strategy(strategy, slow, Budget(max_trials=40), concurrency=4, executor=pool)
    assert len(history) == 40 and not strategy.pending
    assert sorted(t.number for t in history) == list(range(40))


def test_progress_callback_sees_every_trial(bench):
    seen = []
    run_strategy(Random(bench.space, seed=0), bench, Budget(max_trials=5), progress=seen.append)
    assert [t.number for t in seen] == list(range(5))


class FakeModelSpace:
    """Anything with a .search_space is accepted, as a ModelSpace will be."""

    def __init__(self, space):
        self.search_space = space


def test_accepts_objects_with_a_search_space():
    space = product_space(a=[1, 2, 3], b=["x", "y"])
    strategy = Random(FakeModelSpace(space), seed=0)
    assert strategy.space is space
    with pytest.raises(StrategyError, match="SearchSpace or an object with a .search_space"):
        Random(object())


def test_misuse_gets_clear_errors():
    space = product_space(a=[1, 2, 3], b=["x", "y"])
    with pytest.raises(StrategyError, match="optimize_mode must be one of"):
        Random(space, optimize_mode="max")
    with pytest.raises(StrategyError, match="on_failure must be one of"):
        Random(space, on_failure="retry")
    with pytest.raises(StrategyError, match="needs max_trials, max_seconds"):
        Budget()
    with pytest.raises(StrategyError, match="sample_size"):
        RegularizedEvolution(space, population_size=3, sample_size=5)
    strategy = Random(space, seed=0)
    sample = strategy.propose()
    with pytest.raises(StrategyError, match=r": it was never proposed$"):
        strategy.observe(next(s for s in space.grid() if s != sample), 1.0)
    strategy.observe(sample, 1.0)
    with pytest.raises(StrategyError, match=r": it was already observed$"):
        strategy.observe(sample, 1.0)
    with pytest.raises(StrategyError, match="outside the space"):
        strategy.observe({"a": 7, "b": "x"}, 1.0)


def test_tpe_without_optuna_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match="pip install optuna"):
        TPE(product_space(a=[1, 2]))


def test_history_is_plain_data(bench):
    import json

    history = run_strategy(Random(bench.space, seed=0), bench, Budget(max_trials=3))
    text = json.dumps([t.to_dict() for t in history])
    assert json.loads(text)[0]["status"] == "succeeded" and not math.isnan(history[0].metric)


def test_drives_a_real_model_space_with_a_parameter_count_filter():
    """Proposals freeze into concrete graphs; the filter sees the real parameter count."""
    import torch

    import retiarii_ir
    from retiarii_ir import nn

    @nn.model_wrapper
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            width = nn.ValueChoice([8, 16], label="width")
            self.stem = nn.Conv2d(3, width, 3, padding=1)
            self.op = nn.LayerChoice({"conv": nn.Conv2d(width, width, 3, padding=1),
                                      "pool": nn.MaxPool2d(3, 1, 1)}, label="op")
            self.blocks = nn.Repeat(lambda i: nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU()),
                                    depth=(0, 2), label="depth")
            self.head = nn.Linear(width, 10)

        def forward(self, x):
            return self.head(self.blocks(self.op(self.stem(x))).mean((2, 3)))

    space = retiarii_ir.trace_space(Net(), torch.randn(2, 3, 8, 8))

    def parameters(sample):
        return sum(p.numel() for p in retiarii_ir.build_module(space.freeze(sample)).parameters())

    strategy = TPE(space, seed=0, optimize_mode="minimize", model_filter=lambda s: parameters(s) < 1500)
    history = run_strategy(strategy, parameters, Budget(max_trials=20), concurrency=2)
    trained = [t for t in history if t.status == "succeeded"]
    assert len(history) == space.size == 12 and len(trained) == 9
    assert all(t.metric < 1500 for t in trained)
    assert strategy.best().metric == min(parameters(s) for s in space.grid())


def test_evaluate_many_gets_the_proposals_in_flight_as_one_group(bench):
    groups = []

    def evaluate_many(samples):
        groups.append(len(samples))
        return [bench(s) if i != 1 else RuntimeError("diverged") for i, s in enumerate(samples)]

    strategy = RegularizedEvolution(bench.space, seed=0, **FAST)
    history = run_strategy(strategy, None, Budget(max_trials=10), concurrency=4, evaluate_many=evaluate_many)
    assert groups == [4, 4, 2]
    assert len(history) == 10 and [t.status for t in history].count("failed") == 3
    assert all(t.error and "diverged" in t.error for t in history if t.status == "failed")
    reference = RegularizedEvolution(bench.space, seed=0, **FAST)
    assert [t.sample for t in history[:4]] == [reference.propose() for _ in range(4)], "the same first proposals"


def test_evaluate_many_that_raises_fails_its_whole_group_and_goes_on(bench):
    calls = []

    def evaluate_many(samples):
        calls.append(len(samples))
        if len(calls) == 1:
            raise MemoryError("merged group too large (simulated)")
        return [bench(s) for s in samples]

    history = run_strategy(Random(bench.space, seed=0), None, Budget(max_trials=6), concurrency=3,
                           evaluate_many=evaluate_many)
    assert [t.status for t in history] == ["failed"] * 3 + ["succeeded"] * 3
    with pytest.raises(StrategyError, match="not both"):
        run_strategy(Random(bench.space, seed=0), bench, Budget(max_trials=2), evaluate_many=evaluate_many)


class Stuck(Random):
    """Suggests the same sample forever: every proposal after the first comes from the fallback."""

    def _suggest(self):
        return {"op": "skip", "width": 8}


def test_a_stuck_strategy_still_proposes_every_sample_once():
    space = nested_space()
    strategy = Stuck(space, seed=0)
    proposals = [strategy.propose() for _ in range(12)]
    assert proposals[0] == {"op": "skip", "width": 8}
    assert sorted(map(space.sample_key, proposals)) == sorted(map(space.sample_key, space.grid()))
    assert strategy.exhausted and len(strategy.pending) == 12
    assert strategy.pending == proposals


def test_trials_record_what_happened_as_plain_data():
    space = nested_space()
    strategy = Random(space, seed=0, optimize_mode="minimize")
    a, b, c, d = (strategy.propose() for _ in range(4))
    assert not strategy.exhausted and strategy.best() is None
    first = strategy.observe(a, "0.5")
    strategy.observe(b, float("inf"))
    strategy.observe(c, 0.25)
    failed = strategy.observe_failure(d, ValueError("diverged"))
    assert first.to_dict() == {"number": 0, "sample": a, "status": "succeeded", "metric": 0.5, "error": None}
    assert failed.to_dict() == {"number": 3, "sample": d, "status": "failed", "metric": None,
                                "error": "ValueError: diverged"}
    assert strategy.best().metric == 0.25 and strategy.best().sample == c
    assert [t.number for t in strategy.history] == [0, 1, 2, 3] and strategy.pending == []
    assert repr(strategy) == "Random(optimize_mode='minimize', seed=0, trials=4, pending=0)"


def test_the_last_unseen_samples_are_found_by_enumeration_reproducibly():
    """When random draws keep hitting proposed samples, the rest of the grid is enumerated:
    a stuck strategy still proposes all 600 samples once, in the same order for the same seed."""
    space = product_space(a=list(range(20)), b=list(range(30)))

    def proposals(seed):
        strategy = Stuck(space, seed=seed)
        strategy._suggest = lambda: {"a": 0, "b": 0}
        keys = [space.sample_key(strategy.propose()) for _ in range(space.size)]
        with pytest.raises(SpaceExhausted):
            strategy.propose()
        assert strategy._grid_keys is not None, "the enumeration fallback was used"
        return keys

    first = proposals(3)
    assert sorted(first) == sorted(space.sample_key(s) for s in space.grid())
    assert proposals(3) == first and proposals(4) != first


@pytest.mark.parametrize("cls", ALL)
def test_an_adopted_sample_is_pending_seen_and_numbered_like_a_proposal(cls):
    """A trial of an earlier run, adopted when an experiment resumes: it comes back checked, is
    pending until observed, takes the next trial number, is learned from, and is never proposed
    or adopted again."""
    space = nested_space()
    strategy = make(cls, space, seed=0)
    first = strategy.propose()
    adopted = next(s for s in space.grid() if space.sample_key(s) != space.sample_key(first))
    assert strategy.adopt(dict(adopted)) == adopted
    assert strategy.pending == [first, adopted]
    with pytest.raises(StrategyError, match="already proposed"):
        strategy.adopt(adopted)
    assert strategy.observe(adopted, 1.0).to_dict() == {"number": 1, "sample": adopted, "status": "succeeded",
                                                       "metric": 1.0, "error": None}
    assert strategy.observe(first, 2.0).number == 0
    history = run_strategy(strategy, lambda s: len(str(s)), Budget(max_trials=100), concurrency=2)
    assert sorted(t.number for t in history) == list(range(12))
    assert sorted(space.sample_key(t.sample) for t in history) == sorted(space.sample_key(s) for s in space.grid())
    with pytest.raises(StrategyError):
        make(cls, space, seed=0).adopt({"op": "conv"})  # an adopted sample is checked like any other


def test_the_default_filter_limit_is_a_thousand_rejections_in_a_row():
    space = product_space(a=list(range(40)), b=list(range(30)))  # 1,200 samples: room for 1,000 rejections
    strategy = Random(space, seed=0, model_filter=lambda s: False)
    with pytest.raises(StrategyError, match="rejected 1000 samples in a row"):
        strategy.propose()
    assert len(strategy.history) == 1000


def test_a_space_at_the_enumeration_limit_is_enumerated_and_one_over_it_is_not(monkeypatch):
    import retiarii_ir.strategies.base as base

    space = product_space(a=list(range(10)), b=list(range(20)))
    monkeypatch.setattr(base, "MAX_GRID_FOR_FALLBACK", space.size)
    strategy = Stuck(space, seed=0)
    strategy._suggest = lambda: {"a": 0, "b": 0}
    assert len({space.sample_key(strategy.propose()) for _ in range(space.size)}) == space.size

    monkeypatch.setattr(base, "MAX_GRID_FOR_FALLBACK", space.size - 1)
    strategy = Stuck(space, seed=0)
    strategy._suggest = lambda: {"a": 0, "b": 0}
    with pytest.raises(StrategyError, match="could not find an unseen sample in 200 after 100 random draws"):
        for _ in range(space.size):
            strategy.propose()
