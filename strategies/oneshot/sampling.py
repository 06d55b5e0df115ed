"""Which paths a sampled weight step trains: one uniform path, or FairNAS's strict fairness.

With one uniformly drawn path per step, a candidate of a label with four candidates trains a
quarter of the time, while the layers all paths share (a BatchNorm after the choice, the
head) train every time; a candidate with weights of its own then ranks below parameter-free
ones that lean on the shared layers only. Strict fairness (Chu et al., FairNAS, 2021) draws,
per step, as many paths as the largest label has candidates, such that every candidate of
every label is on exactly one of them (a label with fewer candidates: as evenly as possible),
and steps once on their summed gradients: every candidate trains on every step.
"""

from __future__ import annotations

import random
from typing import Any

from retiarii_ir.space import Sample

from .mixed import OneShotError

PATH_SAMPLING = ("fair", "uniform")


def check_path_sampling(method: str, value: str) -> str:
    if value not in PATH_SAMPLING:
        raise OneShotError(f"{method} path_sampling is one of {PATH_SAMPLING}, got {value!r}")
    return value


def fair_paths(space: Any, rng: random.Random) -> list[Sample]:
    """Paths on which each label's candidates appear equally often (each once for the largest label).

    A label's candidates are dealt in shuffled rounds, so one with ``n`` candidates appears
    ``m // n`` or ``m // n + 1`` times over the ``m`` paths. A nested label uses its deal on
    the paths where it is active.
    """
    choices = space.search_space
    size = max(len(choice.values) for choice in choices)
    deals: dict[str, list[Any]] = {}
    for choice in choices:
        values, deal = list(choice.values), []
        while len(deal) < size:
            rng.shuffle(values)
            deal += values
        deals[choice.label] = deal[:size]
    paths = []
    for i in range(size):
        sample: Sample = {}
        for choice in choices:
            if choices.is_active(choice.label, sample):
                sample[choice.label] = deals[choice.label][i]
        paths.append(space.validate(sample))
    return paths


def sampled_paths(space: Any, rng: random.Random, how: str) -> list[Sample]:
    """The paths of one weight step: ``fair_paths``, or one uniformly drawn path."""
    return fair_paths(space, rng) if how == "fair" else [space.random_sample(rng)]
