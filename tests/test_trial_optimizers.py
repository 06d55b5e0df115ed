"""One optimizer step for a group's trials, checked against torch.optim run for each trial alone:
trials with the same recipe share one foreach optimizer, a tensor that operator batching
stacks for K trials steps once for all of them (per-trial hyperparameters as per-row
tensors), and every trial's tensor ends bit for bit where torch.optim puts it."""

from __future__ import annotations

import math

import pytest
import torch

from retiarii_ir.errors import IRError
from retiarii_ir.optimizer import TrainConfig, TrialTensor
from retiarii_ir.runtime.training.optimizers import GroupOptimizer, scheduled_lr

RECIPES = {
    "sgd": TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd-other-lr": TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-3),
    "sgd-plain": TrainConfig(optimizer="sgd", lr=0.2),
    "sgd-momentum-only": TrainConfig(optimizer="sgd", lr=0.03, momentum=0.5),
    "adam": TrainConfig(optimizer="adam", lr=3e-3, weight_decay=1e-4),
    "adam-other": TrainConfig(optimizer="adam", lr=1e-2, betas=(0.8, 0.99)),
    "adam-plain": TrainConfig(optimizer="adam", lr=7e-4),
    "adamw": TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=0.01, betas=(0.8, 0.99)),
    "adamw-other": TrainConfig(optimizer="adamw", lr=2e-3, weight_decay=0.1),
}
SHAPES = [(4, 3, 3, 3), (4,), (10, 36)]


def parameters(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]


def whole(params: list[torch.nn.Parameter]) -> list[TrialTensor]:
    return [TrialTensor(f"p{i}", p) for i, p in enumerate(params)]


def stacked(per_trial: list[list[torch.nn.Parameter]]) -> tuple[list[torch.nn.Parameter], list[list[TrialTensor]]]:
    """Each shape's K tensors as rows of one tensor, as operator batching lays them out."""
    joined = [torch.nn.Parameter(torch.cat([ps[i].detach() for ps in per_trial])) for i in range(len(SHAPES))]
    pieces = [[TrialTensor(f"p{i}", joined[i], (k * shape[0], (k + 1) * shape[0])) for i, shape in enumerate(SHAPES)]
              for k in range(len(per_trial))]
    return joined, pieces


def reference_optimizer(config, params) -> torch.optim.Optimizer:
    """torch.optim as a user would write it for one model, independent of the code under test."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def gradients(step: int, k: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 * step + k)
    return [torch.randn(shape, generator=generator) for shape in SHAPES]


def give_gradients(pieces: list[list[TrialTensor]], step: int, skip: set[int] = frozenset()) -> None:
    for k, trial in enumerate(pieces):
        for piece, g in zip(trial, gradients(step, k)):
            if piece.param.grad is None:
                piece.param.grad = torch.zeros_like(piece.param)
            if k not in skip:
                piece.of(piece.param.grad).copy_(g)


def trained_alone(configs, steps: int, skip: dict[int, int] | None = None) -> list[list[torch.nn.Parameter]]:
    """Each trial's tensors after ``steps`` steps of its own torch.optim optimizer."""
    out = []
    for k, config in enumerate(configs):
        params = parameters(k)
        optimizer = reference_optimizer(config, params)
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            if (skip or {}).get(k) == step:
                continue
            for p, g in zip(params, gradients(step, k)):
                p.grad = g.clone()
            optimizer.step()
        out.append(params)
    return out


def assert_each_trial_equals(pieces: list[list[TrialTensor]], expected: list[list[torch.nn.Parameter]], names):
    for k, trial in enumerate(pieces):
        for piece, reference in zip(trial, expected[k]):
            assert torch.equal(piece.of(piece.param).detach(), reference.detach()), (names[k], piece.key)
        assert not torch.equal(trial[0].of(trial[0].param).detach(), parameters(k)[0])  # it did train


# trial names in order: two pairs share recipes, one trial has its own
GROUP = ["sgd", "sgd", "adam", "adamw", "adam", "sgd-other-lr"]


def test_trials_with_one_recipe_share_an_optimizer():
    configs = [RECIPES[name] for name in GROUP]
    fused = GroupOptimizer(configs, [whole(parameters(k)) for k in range(len(GROUP))])
    assert len(fused.optimizers) == 4  # sgd x2, adam x2, adamw, sgd at another learning rate
    assert fused.rowwise == []


def test_each_trial_steps_exactly_as_torch_optim_alone_including_steps_it_sits_out():
    configs = [RECIPES[name] for name in GROUP]
    pieces = [whole(parameters(k)) for k in range(len(GROUP))]
    fused = GroupOptimizer(configs, pieces)
    for step in range(6):
        fused.zero_grad()
        for k, trial in enumerate(pieces):
            if (step, k) == (3, 0):  # trial 0 has no gradient this step: neither path moves it
                continue
            for piece, g in zip(trial, gradients(step, k)):
                piece.param.grad = g.clone()
        fused.step(step)
    assert_each_trial_equals(pieces, trained_alone(configs, 6, skip={0: 3}), GROUP)


@pytest.mark.parametrize("names", [
    ["sgd", "sgd-other-lr", "sgd-plain", "sgd-momentum-only"],
    ["adam", "adam-other", "adam-plain"],
    ["adamw", "adamw-other", "adamw"],
    ["adam", "adam", "adam"],  # one recipe: torch.optim itself steps the stacked tensor
], ids=["sgd", "adam", "adamw", "one-recipe"])
def test_a_stacked_tensor_steps_once_and_each_trials_rows_equal_torch_optim_alone(names):
    configs = [RECIPES[name] for name in names]
    joined, pieces = stacked([parameters(k) for k in range(len(names))])
    fused = GroupOptimizer(configs, pieces)
    assert len(fused.rowwise) == (0 if len(set(names)) == 1 else 1)
    for step in range(7):
        fused.zero_grad()
        give_gradients(pieces, step)
        fused.step(step)
    assert_each_trial_equals(pieces, trained_alone(configs, 7), names)


def test_stacked_rows_of_different_optimizer_kinds_are_refused():
    _, pieces = stacked([parameters(0), parameters(1)])
    with pytest.raises(ValueError, match="cannot step with optimizers"):
        GroupOptimizer([RECIPES["sgd"], RECIPES["adam"]], pieces)


@pytest.mark.parametrize("names", [["sgd", "sgd-other-lr", "sgd-plain"], ["adam", "adamw-other", "adam-other"],
                                   ["adam", "adam", "adam"]])
def test_state_moves_between_layouts_and_training_continues_exactly(names):
    """A group planned again lays tensors out anew (stacked for K, then K-1, or whole): each
    trial's momentum and step count must carry over."""
    configs = [RECIPES[name] for name in names]
    kind = {c.optimizer for c in configs}
    if len(kind) > 1:  # adam and adamw cannot share a stacked tensor: start from whole tensors
        pieces = [whole(parameters(k)) for k in range(len(names))]
    else:
        _, pieces = stacked([parameters(k) for k in range(len(names))])
    fused = GroupOptimizer(configs, pieces)
    for step in range(3):
        fused.zero_grad()
        give_gradients(pieces, step)
        fused.step(step)
    saved = {k: fused.state_of(k) for k in (0, 2)}
    assert saved[0]["p0"]  # trial 0 has momentum (or Adam's moments) to carry over
    current = {k: [piece.of(piece.param).detach().clone() for piece in pieces[k]] for k in (0, 2)}
    # trial 1 leaves: 0 and 2 continue in the other layout
    if any(piece.rows is not None for piece in pieces[0]):
        moved = [whole([torch.nn.Parameter(t) for t in current[k]]) for k in (0, 2)]
    else:
        _, moved = stacked([[torch.nn.Parameter(t) for t in current[k]] for k in (0, 2)])
    rebuilt = GroupOptimizer([configs[0], configs[2]], moved)
    rebuilt.load_state(0, saved[0])
    rebuilt.load_state(1, saved[2])
    for step in range(3, 6):
        rebuilt.zero_grad()
        for new_k, old_k in enumerate((0, 2)):
            for piece, g in zip(moved[new_k], gradients(step, old_k)):
                if piece.param.grad is None:
                    piece.param.grad = torch.zeros_like(piece.param)
                piece.of(piece.param.grad).copy_(g)
        rebuilt.step(step)
    expected = trained_alone(configs, 6)
    assert_each_trial_equals(moved, [expected[0], expected[2]], [names[0], names[2]])


def test_putting_back_state_for_other_tensors_is_refused():
    fused = GroupOptimizer([RECIPES["sgd"]], [whole(parameters(0))])
    with pytest.raises(IRError, match="lacks"):
        fused.load_state(0, {"p0": {}})


def test_cosine_schedule_follows_torch_cosine_annealing():
    config = TrainConfig(optimizer="sgd", lr=0.1, schedule="cosine")
    params = [torch.nn.Parameter(torch.zeros(1))]
    reference = torch.optim.SGD(params, lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=10)
    for step in range(10):
        assert math.isclose(scheduled_lr(config, step, 10), scheduler.get_last_lr()[0], rel_tol=1e-12, abs_tol=1e-15)
        reference.step()
        scheduler.step()
    assert scheduled_lr(TrainConfig(lr=0.1), 7, 10) == 0.1


def test_per_trial_gradient_clipping_on_stacked_rows_equals_clip_grad_norm_alone():
    names = ["sgd", "sgd-other-lr"]
    joined, pieces = stacked([parameters(k) for k in range(2)])
    fused = GroupOptimizer([RECIPES[n] for n in names], pieces)
    give_gradients(pieces, 0)
    for k, max_norm in ((0, 0.5), (1, 1e6)):
        fused.clip_grad_norm(k, max_norm)
        alone = parameters(k)
        for p, g in zip(alone, gradients(0, k)):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(alone, max_norm)
        for piece, reference in zip(pieces[k], alone):
            assert torch.equal(piece.of(piece.param.grad), reference.grad)
    assert not torch.equal(pieces[0][0].of(joined[0].grad), gradients(0, 0)[0])  # trial 0 was clipped


def test_a_stacked_tensor_that_only_some_trials_own_steps_without_asking_the_others():
    """Trials 0 and 2 (Adam, different hyperparameters) share stacked tensors; trial 1 has its
    own. Trial 1's Adam step count is not the stacked tensor's business (at 0 it divided by zero)."""
    configs = [RECIPES["adam"], RECIPES["adam-other"], RECIPES["adam-plain"]]
    _, shared = stacked([parameters(0), parameters(2)])
    pieces = [shared[0], whole(parameters(1)), shared[1]]
    fused = GroupOptimizer(configs, pieces)
    assert len(fused.rowwise) == 1
    for step in range(4):
        fused.zero_grad()
        give_gradients(pieces, step)
        fused.step(step)
    assert_each_trial_equals(pieces, trained_alone(configs, 4), ["adam", "adam-other", "adam-plain"])
