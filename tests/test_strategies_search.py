"""Strategies find good architectures far more often than chance, on exact tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strategies import TPE, Budget, GridSearch, PolicyBasedRL, Random, RegularizedEvolution, run_strategy
from strategies.landscapes import TabularBenchmark, interaction_landscape

DIGITS_TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "tabular" / "digits_cell.json"
SEEDS = range(12)
BUDGET = 60

LEARNERS = {
    "evolution": lambda space, seed, **kw: RegularizedEvolution(space, seed=seed, **kw),
    "tpe": lambda space, seed, **kw: TPE(space, seed=seed, **kw),
    "ppo": lambda space, seed, **kw: PolicyBasedRL(space, seed=seed, **kw),
}


@pytest.fixture(scope="module")
def small_table():
    """384 architectures with interacting choices and a nested one."""
    return interaction_landscape(seed=3, labels=4, values=4, nested_values=3)


def hits_of_optimum(make, bench, budget=BUDGET) -> int:
    hits = 0
    for seed in SEEDS:
        strategy = make(bench.space, seed)
        run_strategy(strategy, bench, Budget(max_trials=budget), concurrency=2)
        hits += strategy.best().metric == bench.optimum
    return hits


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_finds_the_optimum_far_more_often_than_chance(name, small_table):
    chance = BUDGET / small_table.space.size  # any non-repeating strategy: 60 of 384 = 16%
    hits = hits_of_optimum(LEARNERS[name], small_table)
    assert hits / len(SEEDS) >= 2.5 * chance, f"{name} found the optimum in {hits}/{len(SEEDS)} runs"


def test_random_and_grid_find_it_about_as_often_as_chance(small_table):
    """The baselines the learners are measured against (a sanity check of the table)."""
    for make in (lambda s, seed: Random(s, seed=seed), lambda s, seed: GridSearch(s, shuffle=True, seed=seed)):
        assert hits_of_optimum(make, small_table) <= 5


def test_minimising_a_loss_table_finds_its_minimum(small_table):
    """The same table as a loss: every learner must now look for the lowest value."""
    loss = TabularBenchmark(small_table.space, [(s, -small_table(s)) for s in small_table.space.grid()],
                            optimize_mode="minimize")
    for name, make in LEARNERS.items():
        hits = 0
        for seed in range(6):
            strategy = make(loss.space, seed, optimize_mode="minimize")
            run_strategy(strategy, loss, Budget(max_trials=BUDGET))
            hits += strategy.best().metric == loss.optimum
        assert hits >= 2, f"{name} minimising found the minimum in {hits}/6 runs"


def test_shipped_digits_table_is_complete_and_real():
    data = json.loads(DIGITS_TABLE.read_text())
    bench = TabularBenchmark.from_json(DIGITS_TABLE)
    assert len(data["rows"]) == bench.space.size == len(bench.table) >= 500
    accuracies = sorted(bench.table.values())
    assert 0.0 <= accuracies[0] < accuracies[len(accuracies) // 2] < accuracies[-1] <= 1.0
    assert data["recipe"]["seed"] == 0 and data["recipe"]["epochs"] >= 1


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_learners_reach_the_digits_top_one_percent(name):
    bench = TabularBenchmark.from_json(DIGITS_TABLE)
    reached = 0
    for seed in range(4):
        strategy = LEARNERS[name](bench.space, seed)
        run_strategy(strategy, bench, Budget(max_trials=100), concurrency=4)
        reached += bench.reaches(strategy.best().metric, 0.01)
    assert reached >= 3
