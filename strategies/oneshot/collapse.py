"""DARTS's collapse guard: stop when parameter-free candidates take over.

DARTS tends to hand the architecture weight to candidates without parameters (pooling,
identity), whose output is useful before anything has trained and whose scale no weight
can take over (the well-known collapse). DARTS+ (Liang et al., 2019) stops the search
when such candidates reach a count. This guard is stricter: after every search epoch it
looks at each label that offers both kinds of candidate, and when the likeliest candidate
of one passes from a candidate with parameters to one without, the search stops and the
architecture weights of the epoch before are kept. The price: a space whose best choice
is parameter-free, and only wins late, needs ``collapse_guard=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .mixed import MixedLayerChoice


def parameter_free_candidates(supernet: nn.Module) -> dict[str, list[int]]:
    """label -> indices of its candidates without parameters, for LayerChoices that have both kinds."""
    found: dict[str, list[int]] = {}
    for module in supernet.modules():
        if isinstance(module, MixedLayerChoice):
            free = [i for i, v in enumerate(module.values)
                    if not any(True for _ in module.candidate(v).parameters())]
            if 0 < len(free) < len(module.values):
                found[module.label] = free
    return found


class CollapseGuard:
    """Watches the architecture weights epoch by epoch; says when to stop and what to keep."""

    def __init__(self, supernet: nn.Module, values: Mapping[str, list[Any]]) -> None:
        self.free = parameter_free_candidates(supernet)
        self.values = values
        self.previous: dict[str, torch.Tensor] | None = None

    def leaders(self, logits: Mapping[str, torch.Tensor]) -> dict[str, int]:
        return {label: int(logits[label].argmax()) for label in self.free}

    def observe(self, logits: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """None to go on; else the labels taken over, their new leaders and the logits to restore."""
        snapshot = {label: t.detach().clone() for label, t in logits.items()}
        previous, self.previous = self.previous, snapshot
        if previous is None:
            return None
        now, before = self.leaders(snapshot), self.leaders(previous)
        taken = [label for label in self.free if now[label] in self.free[label]
                 and before[label] not in self.free[label]]
        if not taken:
            return None
        return {"labels": taken, "candidates": [self.values[label][now[label]] for label in taken],
                "restore": previous}
