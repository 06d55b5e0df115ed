"""Regularized (aging) evolution, Real et al. 2019: tournament selection, mutate, kill the oldest."""

from __future__ import annotations

from collections import deque
from typing import Any

from retiarii_ir.space import Sample

from .base import Strategy, StrategyError


class RegularizedEvolution(Strategy):
    """Start with ``population_size`` random samples; then mutate the best of ``sample_size``
    random members. With ``aging`` the oldest member dies, else the worst one does.

    Each active label of the parent changes with ``mutation_prob``; at least one always does.
    The defaults (10, 5) suit budgets of a few hundred trials; Real et al. used 100 and 25
    for tens of thousands.
    Failures are never part of the population (or enter it with the worst score when
    ``on_failure='worst'``).
    """

    def __init__(self, space: Any, *, population_size: int = 10, sample_size: int = 5,
                 mutation_prob: float = 0.05, aging: bool = True, **kwargs: Any):
        super().__init__(space, **kwargs)
        if population_size < 1 or not 1 <= sample_size <= population_size:
            raise StrategyError(f"need population_size >= 1 and 1 <= sample_size <= population_size, "
                                f"got population_size={population_size}, sample_size={sample_size}")
        if not 0.0 <= mutation_prob <= 1.0:
            raise StrategyError(f"mutation_prob must be in [0, 1], got {mutation_prob}")
        self.population_size = population_size
        self.sample_size = sample_size
        self.mutation_prob = mutation_prob
        self.aging = aging
        self.population: deque[tuple[Sample, float]] = deque()
        self._initial_proposed = 0

    def _suggest(self) -> Sample:
        if self._initial_proposed < self.population_size or not self.population:
            return self.space.random_sample(self.rng)
        contenders = self.rng.sample(list(self.population), min(self.sample_size, len(self.population)))
        parent = max(contenders, key=lambda member: member[1])[0]
        return self.mutate(parent)

    def _accepted(self, sample: Sample, extra: dict[str, Any]) -> None:
        self._initial_proposed += 1

    def mutate(self, parent: Sample) -> Sample:
        """A child of ``parent``: labels walk in space order, so nested choices follow their parent."""
        active = self.space.active_labels(parent)
        forced = self.rng.choice(active)
        child: Sample = {}
        for label, choice in self.space.choices.items():
            if not self.space.is_active(label, child):
                continue
            mutate = label == forced or self.rng.random() < self.mutation_prob
            if label in parent and not (mutate and len(choice.values) > 1):
                child[label] = parent[label]
                continue
            options = [v for v in choice.values if label not in parent or v != parent[label]] or list(choice.values)
            child[label] = options[self.rng.randrange(len(options))]
        return child

    def _learn(self, sample: Sample, score: float, extra: dict[str, Any]) -> None:
        self.population.append((sample, score))
        if len(self.population) > self.population_size:
            if self.aging:
                self.population.popleft()
            else:
                self.population.remove(min(self.population, key=lambda member: member[1]))
