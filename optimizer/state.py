"""Where each trial's state_dict entries live in a merged module, and moving them there and back.

Most entries keep their tensor under a prefix (``fc.weight`` -> ``t3.fc.weight``). A fused
layer keeps K trials' weights (and a fused batch norm their running statistics) stacked in
one tensor, so a trial's entry is a row range of it; a module computed once for several
trials maps all their entries to one key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from retiarii_ir.errors import IRError


class StateError(IRError):
    """A trial's state does not fit its places in the merged module (a missing entry)."""


@dataclass(frozen=True)
class StateRef:
    """A trial's tensor: merged key ``key``, rows ``rows`` of it (None: the whole tensor)."""

    key: str
    rows: tuple[int, int] | None = None

    def read(self, merged: dict[str, torch.Tensor]) -> torch.Tensor:
        tensor = merged[self.key]
        return tensor if self.rows is None else tensor[self.rows[0]:self.rows[1]]

    def to_json(self) -> list:
        return [self.key, list(self.rows) if self.rows else None]


class KeyIndex:
    """State keys by every module path that holds them (``fc`` holds ``fc.weight``, not
    ``fc2.weight``): one pass over the keys, then each module's lookup is a dict read rather
    than a scan of every key, which kept planning quadratic in the size of a merged graph."""

    def __init__(self, keys) -> None:
        self._under: dict[str, list[str]] = {}
        for key in keys:
            parts = key.split(".")
            for end in range(1, len(parts) + 1):
                self._under.setdefault(".".join(parts[:end]), []).append(key)

    def under(self, prefix: str) -> list[str]:
        return self._under.get(prefix, [])


def extract_trial_state(module: nn.Module, state_map: dict[str, StateRef]) -> dict[str, torch.Tensor]:
    """Trial k's own state_dict, copied out of the merged module: it loads with strict=True
    into the trial's standalone module."""
    merged = module.state_dict(keep_vars=False)
    return {key: ref.read(merged).detach().clone() for key, ref in state_map.items()}


@torch.no_grad()
def load_trial_state(module: nn.Module, state_map: dict[str, StateRef], state: dict[str, torch.Tensor]) -> None:
    """Write a trial's state_dict into its places in the merged module."""
    merged = module.state_dict(keep_vars=True)
    missing = set(state_map) - set(state)
    if missing:
        raise StateError(f"trial state lacks {sorted(missing)[:5]}")
    for key, ref in state_map.items():
        ref.read(merged).copy_(state[key])
