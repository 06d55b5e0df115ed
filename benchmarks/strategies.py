"""Compare every strategy with Optuna's TPE and random samplers on tabular benchmarks.

Each method runs with the same trial budget over the same seeds on (a) the digits cell
table (real validation accuracies, benchmarks/tabular/digits_cell.json) and (b) a
synthetic landscape with interacting and nested choices. Optuna's samplers run through
plain ask/tell: a duplicate they propose is evaluated and costs a trial, as it would in a
real Optuna study. Prints, per method: median trials to reach the top 1% (">B" when more
than half of the seeds never got there), how many seeds got there, median regret after
50 and 100 trials, and seconds of strategy overhead per run.

    python benchmarks/strategies.py                     # 20 seeds, 200 trials, both tables
    python benchmarks/strategies.py --seeds 5 --tables digits --concurrency 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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

DIGITS_TABLE = Path(__file__).with_name("tabular") / "digits_cell.json"

OURS: dict[str, Callable] = {
    "Random": lambda space, seed: Random(space, seed=seed),
    "GridSearch(shuffle)": lambda space, seed: GridSearch(space, shuffle=True, seed=seed),
    "RegularizedEvolution": lambda space, seed: RegularizedEvolution(space, seed=seed),
    "TPE": lambda space, seed: TPE(space, seed=seed),
    "PolicyBasedRL (PPO)": lambda space, seed: PolicyBasedRL(space, seed=seed),
}


def run_ours(make, bench: TabularBenchmark, seed: int, budget: int, concurrency: int) -> list[float]:
    """Metrics in the order the trials were proposed."""
    strategy = make(bench.space, seed)
    history = run_strategy(strategy, bench.evaluate, Budget(max_trials=budget), concurrency=concurrency)
    return [t.metric for t in sorted(history, key=lambda t: t.number) if t.status == "succeeded"]


def run_optuna(sampler_name: str, bench: TabularBenchmark, seed: int, budget: int, concurrency: int) -> list[float]:
    """Plain Optuna ask/tell with its default sampler options; duplicates are trials too."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=seed) if sampler_name == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(direction=bench.optimize_mode, sampler=sampler)
    space, metrics = bench.space, []
    while len(metrics) < budget:
        asked = []
        for _ in range(min(concurrency, budget - len(metrics) - len(asked))):
            trial, sample = study.ask(), {}
            for label, choice in space.choices.items():
                if space.is_active(label, sample):
                    sample[label] = choice.values[trial.suggest_categorical(label, list(range(len(choice.values))))]
            asked.append((trial, sample))
        for trial, sample in asked:
            value = bench.evaluate(sample)
            study.tell(trial, value)
            metrics.append(value)
    return metrics


def summarise(bench: TabularBenchmark, runs: list[list[float]], budget: int) -> dict[str, str]:
    """Median trials to the top 1%, seeds reaching it, median regret at 50 and 100 trials."""
    better = max if bench.optimize_mode == "maximize" else min
    to_top, regret = [], {50: [], 100: []}
    for metrics in runs:
        hit = next((i + 1 for i, m in enumerate(metrics) if bench.reaches(m, 0.01)), None)
        to_top.append(hit if hit is not None else float("inf"))
        for n in regret:
            regret[n].append(bench.regret(better(metrics[:n])))
    median = statistics.median(to_top)
    return {"trials to top 1% (median)": f">{budget}" if median == float("inf") else f"{median:g}",
            "seeds reaching top 1%": f"{sum(t != float('inf') for t in to_top)}/{len(runs)}",
            "regret@50 (median)": f"{statistics.median(regret[50]):.4f}",
            "regret@100 (median)": f"{statistics.median(regret[100]):.4f}"}


def print_table(title: str, rows: dict[str, dict[str, str]]) -> None:
    columns = ["method"] + list(next(iter(rows.values())))
    print(f"\n{title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for method, row in rows.items():
        print("| " + " | ".join([method] + list(row.values())) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1000,
                        help="seeds are first-seed .. first-seed+seeds-1 (defaults were tuned on seeds 0-99)")
    parser.add_argument("--budget", type=int, default=200, help="trials per run (>= 100 for regret@100)")
    parser.add_argument("--concurrency", type=int, default=1, help="proposals asked before any is told")
    parser.add_argument("--tables", nargs="+", default=["digits", "interaction"], choices=["digits", "interaction"])
    parser.add_argument("--methods", nargs="*", default=None, help="substrings of method names to run")
    args = parser.parse_args(argv)
    if args.budget < 100:
        parser.error("--budget must be at least 100 (regret is reported at 100 trials)")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    methods: dict[str, Callable] = {name: partial(run_ours, make) for name, make in OURS.items()}
    methods["Optuna TPESampler (default)"] = partial(run_optuna, "tpe")
    methods["Optuna RandomSampler"] = partial(run_optuna, "random")
    if args.methods:
        methods = {k: v for k, v in methods.items() if any(m.lower() in k.lower() for m in args.methods)}
    for table in args.tables:
        bench = TabularBenchmark.from_json(DIGITS_TABLE) if table == "digits" else interaction_landscape(0)
        rows = {}
        for name, run in methods.items():
            start = time.perf_counter()
            seeds = range(args.first_seed, args.first_seed + args.seeds)
            runs = [run(bench, seed, args.budget, args.concurrency) for seed in seeds]
            row = summarise(bench, runs, args.budget)
            row["s/run"] = f"{(time.perf_counter() - start) / args.seeds:.2f}"
            rows[name] = row
            print(f"  {table}: {name} done", file=sys.stderr, flush=True)
        print_table(f"{bench.name}: {bench.space.size} architectures, top 1% = metric >= {bench.threshold(0.01):.4f}, "
                    f"optimum {bench.optimum:.4f}; {args.seeds} seeds from {args.first_seed}, {args.budget} trials, "
                    f"concurrency {args.concurrency}", rows)


if __name__ == "__main__":
    main()
