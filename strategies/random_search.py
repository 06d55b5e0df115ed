"""Baselines: uniform random search and (optionally shuffled) grid search."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from retiarii_ir.space import Sample

from .base import SpaceExhausted, Strategy, StrategyError

MAX_SHUFFLED_GRID = 2_000_000


class Random(Strategy):
    """Uniform over the space (each active label drawn independently), never repeating."""

    def _suggest(self) -> Sample:
        return self.space.random_sample(self.rng)


class GridSearch(Strategy):
    """Every sample once, in grid order or in a seeded random order (``shuffle=True``)."""

    def __init__(self, space: Any, *, shuffle: bool = False, **kwargs: Any):
        super().__init__(space, **kwargs)
        self.shuffle = shuffle
        self._order: Iterator[Sample] | None = None

    def _make_order(self) -> Iterator[Sample]:
        if not self.shuffle:
            return self.space.grid()
        if self.space.size > MAX_SHUFFLED_GRID:
            raise StrategyError(f"a shuffled grid over {self.space.size} samples would not fit in memory; "
                                f"use Random instead (it never repeats either)")
        samples = list(self.space.grid())
        self.rng.shuffle(samples)
        return iter(samples)

    def _suggest(self) -> Sample:
        if self._order is None:
            self._order = self._make_order()
        for sample in self._order:
            if self.space.sample_key(sample) not in self._seen:
                return sample
        raise SpaceExhausted(f"the grid of {self.space.size} samples is done")
