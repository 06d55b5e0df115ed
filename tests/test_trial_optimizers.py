"""One optimizer step for a group's trials: trials with the same recipe share one foreach optimizer,
and every tensor ends bit for bit where torch.optim, run for its trial alone, puts it."""

from __future__ import annotations

import pytest
import torch

from optimizer import TrainConfig
from runtime.optimizers import TrialOptimizers

RECIPES = {
    "sgd": TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd-other-lr": TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-3),
    "adam": TrainConfig(optimizer="adam", lr=3e-3, weight_decay=1e-4),
    "adamw": TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=0.01, betas=(0.8, 0.99)),
}
SHAPES = [(4, 3, 3, 3), (4,), (10, 36)]


def parameters(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]


def reference_optimizer(config, params) -> torch.optim.Optimizer:
    """torch.optim as a user would write it for one model, independent of the code under test."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def gradients(step: int, k: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 * step + k)
    return [torch.randn(shape, generator=generator) for shape in SHAPES]


# trial names in order: two pairs share recipes, one trial has its own
GROUP = ["sgd", "sgd", "adam", "adamw", "adam", "sgd-other-lr"]


def test_trials_with_one_recipe_share_an_optimizer():
    configs = [RECIPES[name] for name in GROUP]
    fused = TrialOptimizers(configs, [parameters(k) for k in range(len(GROUP))])
    assert len(fused.optimizers) == 4  # sgd x2, adam x2, adamw, sgd at another learning rate


def test_each_trial_steps_exactly_as_torch_optim_alone_including_steps_it_sits_out():
    configs = [RECIPES[name] for name in GROUP]
    merged = [parameters(k) for k in range(len(GROUP))]
    alone = [[torch.nn.Parameter(p.detach().clone()) for p in ps] for ps in merged]
    fused = TrialOptimizers(configs, merged)
    references = [reference_optimizer(c, ps) for c, ps in zip(configs, alone)]
    for step in range(6):
        fused.zero_grad()
        for k in range(len(GROUP)):
            references[k].zero_grad(set_to_none=True)
            if (step, k) == (3, 0):  # trial 0 has no gradient this step: neither path moves it
                continue
            for p, q, g in zip(merged[k], alone[k], gradients(step, k)):
                p.grad, q.grad = g.clone(), g.clone()
            references[k].step()
        fused.step()
    for k in range(len(GROUP)):
        for p, q in zip(merged[k], alone[k]):
            assert torch.equal(p, q), (GROUP[k], p.shape)
        assert not torch.equal(merged[k][0], parameters(k)[0])  # it did train


def test_state_taken_out_and_put_back_continues_exactly():
    """A group planned again gets new parameter tensors; each trial's momentum must carry over."""
    configs = [RECIPES["sgd"], RECIPES["adam"], RECIPES["sgd"]]
    params = [parameters(k) for k in range(3)]
    fused = TrialOptimizers(configs, params)
    uninterrupted_params = [[torch.nn.Parameter(p.detach().clone()) for p in ps] for ps in params]
    uninterrupted = TrialOptimizers(configs, uninterrupted_params)

    def step(optimizers, ps, n):
        optimizers.zero_grad()
        for k in range(len(ps)):
            for p, g in zip(ps[k], gradients(n, k)):
                p.grad = g
        optimizers.step()

    for n in range(3):
        step(fused, params, n)
        step(uninterrupted, uninterrupted_params, n)
    # the group is rebuilt without trial 1: trials 0 and 2 move to new tensors
    saved = {k: fused.state_of(k) for k in (0, 2)}
    assert all(saved[k] and "momentum_buffer" in saved[k][0] for k in saved)
    moved = [[torch.nn.Parameter(p.detach().clone()) for p in params[k]] for k in (0, 2)]
    rebuilt = TrialOptimizers([configs[0], configs[2]], moved)
    rebuilt.load_state(0, saved[0])
    rebuilt.load_state(1, saved[2])
    for n in range(3, 6):
        rebuilt.zero_grad()
        for new_k, old_k in enumerate((0, 2)):
            for p, g in zip(moved[new_k], gradients(n, old_k)):
                p.grad = g
        rebuilt.step()
        step(uninterrupted, uninterrupted_params, n)
    for new_k, old_k in enumerate((0, 2)):
        for p, q in zip(moved[new_k], uninterrupted_params[old_k]):
            assert torch.equal(p, q)


def test_putting_back_state_for_other_parameters_is_refused():
    fused = TrialOptimizers([RECIPES["sgd"]], [parameters(0)])
    with pytest.raises(ValueError, match="3 parameters, the saved state 2"):
        fused.load_state(0, [{}, {}])
