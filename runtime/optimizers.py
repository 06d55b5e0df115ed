"""One optimizer step for every trial of a merged group.

Trials with the same recipe (optimizer and hyperparameters) share one ``torch.optim`` optimizer
over all their tensors, so one set of foreach kernels updates all of them. Foreach updates are
elementwise, so each tensor still gets exactly the arithmetic ``torch.optim`` gives it when its
trial trains alone. Trials whose hyperparameters differ step in optimizers of their own: folding
a learning rate into a per-tensor factor would round differently from ``torch.optim``, and
merging must not change a trial's result.
"""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(config, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The trial's ``torch.optim`` optimizer; foreach: one kernel per update for all its tensors."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               foreach=True)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, foreach=True)


def recipe_of(config) -> tuple:
    """What must be equal for two trials to share an optimizer."""
    return config.optimizer, config.lr, config.momentum, config.weight_decay, tuple(config.betas)


class TrialOptimizers:
    """The optimizers of a group's trials, one per distinct recipe; each trial's state can be
    taken out and put back, so a group planned again keeps every trial's momentum."""

    def __init__(self, configs: list, parameters: list[list[nn.Parameter]]) -> None:
        self.parameters = parameters
        members: dict[tuple, list[int]] = {}
        for k, config in enumerate(configs):
            members.setdefault(recipe_of(config), []).append(k)
        self.optimizers: list[torch.optim.Optimizer] = []
        self._optimizer_of: dict[int, torch.optim.Optimizer] = {}
        for trials in members.values():
            unique = list({id(p): p for k in trials for p in parameters[k]}.values())
            optimizer = make_optimizer(configs[trials[0]], unique)
            self.optimizers.append(optimizer)
            self._optimizer_of.update(dict.fromkeys(trials, optimizer))

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Tensors without a gradient (a trial that left this step) are skipped, as torch.optim does."""
        for optimizer in self.optimizers:
            optimizer.step()

    def state_of(self, k: int) -> list[dict]:
        """Trial k's optimizer state, one entry per parameter in the order of its parameter list."""
        state = self._optimizer_of[k].state
        return [dict(state[p]) if p in state else {} for p in self.parameters[k]]

    def load_state(self, k: int, states: list[dict]) -> None:
        """Put back what ``state_of`` took, onto trial k's (new) parameters in the same order."""
        if len(states) != len(self.parameters[k]):
            raise ValueError(f"trial {k} has {len(self.parameters[k])} parameters, the saved state {len(states)}")
        optimizer = self._optimizer_of[k]
        for param, entry in zip(self.parameters[k], states):
            if entry:
                optimizer.state[param] = dict(entry)
