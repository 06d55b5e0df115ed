"""Cheap, exact objective functions to test and compare strategies: lookup tables of metrics.

``TabularBenchmark`` wraps a table of every architecture's metric (e.g. the digits cell
table in ``benchmarks/tabular/``); ``interaction_landscape`` builds a synthetic one whose
choices interact, so greedy one-label-at-a-time search is not enough.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retiarii_ir.space import Choice, Sample, SearchSpace


class TabularBenchmark:
    """Every sample of ``space`` with its metric; evaluation is a lookup."""

    def __init__(self, space: SearchSpace, rows: list[tuple[Sample, float]], name: str = "table",
                 optimize_mode: str = "maximize"):
        self.space, self.name, self.optimize_mode = space, name, optimize_mode
        self.table = {space.sample_key(space.validate(sample)): float(metric) for sample, metric in rows}
        if len(self.table) != space.size:
            raise ValueError(f"table {name!r} has {len(self.table)} distinct samples, the space has {space.size}")
        sign = 1.0 if optimize_mode == "maximize" else -1.0
        self._sorted = sorted(self.table.values(), key=lambda v: -sign * v)
        self.calls = 0

    @classmethod
    def from_json(cls, path: str | Path, metric: str = "accuracy") -> TabularBenchmark:
        """Load a table written by ``benchmarks/tabular/build_digits_table.py``."""
        data = json.loads(Path(path).read_text())
        space = SearchSpace.from_json(data["space"])
        return cls(space, [(row["sample"], row[metric]) for row in data["rows"]], name=data.get("name", "table"))

    def evaluate(self, sample: Mapping[str, Any]) -> float:
        self.calls += 1
        return self.table[self.space.sample_key(self.space.validate(sample))]

    __call__ = evaluate

    @property
    def optimum(self) -> float:
        return self._sorted[0]

    def threshold(self, top_fraction: float) -> float:
        """The metric a sample needs to be in the top ``top_fraction`` of the table (ties included)."""
        return self._sorted[max(0, math.ceil(top_fraction * len(self._sorted)) - 1)]

    def reaches(self, metric: float, top_fraction: float) -> bool:
        t = self.threshold(top_fraction)
        return metric >= t if self.optimize_mode == "maximize" else metric <= t

    def regret(self, metric: float) -> float:
        """How far ``metric`` is from the best in the table (>= 0)."""
        return abs(self.optimum - metric)


def interaction_landscape(seed: int = 0, labels: int = 6, values: int = 4,
                          nested_values: int = 3) -> TabularBenchmark:
    """A synthetic table: per-label effects, strong pairwise interactions (each label with its
    neighbour and one random partner), and a nested choice under the first label's first value."""
    rng = random.Random(seed)
    names = [f"x{i}" for i in range(labels)]
    choices = [Choice(names[0], tuple(f"v{j}" for j in range(values)))]
    choices.append(Choice("x0_detail", tuple(f"d{j}" for j in range(nested_values)), parent=(names[0], "v0")))
    choices += [Choice(n, tuple(f"v{j}" for j in range(values))) for n in names[1:]]
    space = SearchSpace.of(choices)
    unary = {n: [rng.gauss(0, 0.5) for _ in range(values)] for n in names}
    pairs = {(i, (i + 1) % labels) for i in range(labels)} | {(i, rng.randrange(labels)) for i in range(labels)}
    pairs = {p for p in pairs if p[0] != p[1]}
    pair_table = {p: [[rng.gauss(0, 1.0) for _ in range(values)] for _ in range(values)] for p in sorted(pairs)}
    detail = [rng.gauss(0, 1.0) for _ in range(nested_values)]

    def score(sample: Sample) -> float:
        idx = [int(sample[n][1:]) for n in names]
        total = sum(unary[n][idx[i]] for i, n in enumerate(names))
        total += sum(t[idx[i]][idx[j]] for (i, j), t in pair_table.items())
        if "x0_detail" in sample:
            total += detail[int(sample["x0_detail"][1:])]
        return round(total, 6)

    rows = [(sample, score(sample)) for sample in space.grid()]
    return TabularBenchmark(space, rows, name=f"interaction-landscape-{seed}")
