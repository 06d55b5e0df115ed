"""Strategies find good architectures far more often than chance, on exact tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retiarii_ir.strategies import (
    TPE,
    Budget,
    GridSearch,
    PolicyBasedRL,
    Random,
    RegularizedEvolution,
    run_strategy,
)
from retiarii_ir.strategies.landscapes import TabularBenchmark, interaction_landscape

DIGITS_TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "tabular" / "digits_cell.json"
BUDGET = 60
RUNS = {"evolution": 40, "tpe": 12, "ppo": 12}  # evolution is cheap: more runs, a steadier rate

LEARNERS = {
    "evolution": lambda space, seed, **kw: RegularizedEvolution(space, seed=seed, **kw),
    "tpe": lambda space, seed, **kw: TPE(space, seed=seed, **kw),
    "ppo": lambda space, seed, **kw: PolicyBasedRL(space, seed=seed, **kw),
}


@pytest.fixture(scope="module")
def small_table():
    """384 architectures with interacting choices and a nested one."""
    return interaction_landscape(seed=3, labels=4, values=4, nested_values=3)


def hits_of_optimum(make, bench, runs: int = 12, budget: int = BUDGET) -> int:
    hits = 0
    for seed in range(runs):
        strategy = make(bench.space, seed)
        run_strategy(strategy, bench, Budget(max_trials=budget), concurrency=2)
        hits += strategy.best().metric == bench.optimum
    return hits


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_finds_the_optimum_far_more_often_than_chance(name, small_table):
    chance = BUDGET / small_table.space.size  # any non-repeating strategy: 60 of 384 = 16%
    hits = hits_of_optimum(LEARNERS[name], small_table, RUNS[name])
    assert hits / RUNS[name] >= 2.5 * chance, f"{name} found the optimum in {hits}/{RUNS[name]} runs"


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


def test_digits_table_entries_are_reproduced_by_its_build_script():
    """A row retrained with the shipped recipe gives the recorded accuracy (one image of slack)."""
    import importlib.util

    import torch

    script = DIGITS_TABLE.with_name("build_digits_table.py")
    spec = importlib.util.spec_from_file_location("build_digits_table", script)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    bench = TabularBenchmark.from_json(DIGITS_TABLE)
    data = build.load_split()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sample = bench.space.random_sample(5)
        assert abs(build.train_and_evaluate(sample, data) - bench(sample)) <= 1 / 360 + 1e-6
    finally:
        torch.set_num_threads(threads)
