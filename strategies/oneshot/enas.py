"""ENAS: an LSTM controller samples subnets of the shared-weight supernet; REINFORCE trains it.

Each epoch trains the shared weights, then trains the controller on the arch split: reward =
a subnet's accuracy on a batch, minus a moving-average baseline, plus an entropy bonus (Pham
et al., 2018). The controller walks the labels in the space's order, so a nested label is
decided only when it is active. The reward runs the subnet's batch norms on its own batch
statistics (``reward_batchnorm="path"``): the running ones are shared by every path and fit
none. The shared weights train on fair paths (``sampling.py``), first alone for
``warmup_epochs`` (10 by default), so the controller's rewards rank trained candidates;
``train_on_policy=True`` trains the controller's samples during the search instead, as the
paper does, which let it lock on to a parameter-free candidate that was ahead early.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from retiarii_ir.space import Sample

from .base import OneShotSearch, probabilities_by_value
from .batchnorm import batch_statistics
from .mixed import OneShotError
from .sampling import sampled_paths

REWARD_BATCHNORM = ("path", "running")


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    module.eval()
    yield


class Controller(nn.Module):
    """An LSTM cell stepping through the labels; one embedding and one softmax head per label."""

    def __init__(self, choices: Mapping[str, list[Any]], hidden: int = 64) -> None:
        super().__init__()
        self.labels = list(choices)
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, len(v)) for v in choices.values())
        self.embeddings = nn.ModuleList(nn.Embedding(len(v), hidden) for v in choices.values())

    def sample(self, space: Any, generator: torch.Generator | None, greedy: bool = False
               ) -> tuple[Sample, torch.Tensor, torch.Tensor]:
        """(sample, sum of log-probabilities, sum of entropies) of one walk over the active labels."""
        values = space.choices()
        sample: Sample = {}
        x, state = self.start, None
        log_prob, entropy = torch.zeros(()), torch.zeros(())
        for k, label in enumerate(self.labels):
            if not space.search_space.is_active(label, sample):
                continue
            h, c = self.cell(x, state)
            state = (h, c)
            logits = self.heads[k](h)[0]
            probs = torch.softmax(logits, 0)
            index = int(probs.argmax()) if greedy else int(torch.multinomial(probs.detach(), 1, generator=generator))
            log_prob = log_prob + torch.log_softmax(logits, 0)[index]
            entropy = entropy - (probs * torch.log_softmax(logits, 0)).sum()
            sample[label] = values[label][index]
            x = self.embeddings[k](torch.tensor([index]))
        return sample, log_prob, entropy


class ENAS(OneShotSearch):
    """Efficient NAS by parameter sharing: an LSTM controller trained with REINFORCE."""

    default_warmup_epochs = 10

    def __init__(self, space: Any, model: nn.Module, *, controller_lr: float = 5e-3, entropy_weight: float = 1e-3,
                 baseline_decay: float = 0.95, controller_steps: int | None = None, derive_samples: int = 16,
                 reward_batchnorm: str = "path", train_on_policy: bool = False, **options: Any) -> None:
        super().__init__(space, model, **options)
        if reward_batchnorm not in REWARD_BATCHNORM:
            raise OneShotError(f"ENAS reward_batchnorm is one of {REWARD_BATCHNORM}, got {reward_batchnorm!r}")
        self.reward_batchnorm, self.train_on_policy = reward_batchnorm, train_on_policy
        torch.manual_seed(self.seed)
        self.controller = Controller(space.choices())
        self.controller_optimizer = torch.optim.Adam(self.controller.parameters(), lr=controller_lr)
        self.entropy_weight, self.baseline_decay = entropy_weight, baseline_decay
        self.controller_steps, self.derive_samples = controller_steps, derive_samples
        self.baseline: float | None = None
        self.chosen: Sample | None = None

    def _train_epoch(self, epoch: int, weight_batches: list, arch_batches: list) -> dict[str, Any]:
        losses, accs = [], []
        for x, y in weight_batches:
            if self.train_on_policy:
                with torch.no_grad():
                    paths = [self.controller.sample(self.space, self.generator)[0]]
            else:
                paths = sampled_paths(self.space, self.rng, self.path_sampling)
            loss, acc = self.paths_step(paths, x, y)
            losses.append(loss), accs.append(acc)
        self.end_epoch()
        rewards = []
        for step in range(self.controller_steps or len(arch_batches)):
            x, y = arch_batches[step % len(arch_batches)]
            rewards.append(self._controller_step(x, y))
        return {"loss": sum(losses) / len(losses), "train_acc": sum(accs) / len(accs),
                "reward": sum(rewards) / len(rewards), "baseline": self.baseline}

    def _reward(self, sample: Sample, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy of ``sample`` on a batch, its batch norms on that path's own statistics
        (``reward_batchnorm="path"``) or on the running ones shared by every path."""
        statistics = batch_statistics(self.supernet) if self.reward_batchnorm == "path" else _eval(self.supernet)
        with torch.no_grad(), statistics, self.supernet.sampled(sample):
            return (self.supernet(x).argmax(1) == y).float().mean().item()

    def _controller_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        sample, log_prob, entropy = self.controller.sample(self.space, self.generator)
        reward = self._reward(sample, x, y)
        self.baseline = reward if self.baseline is None else \
            self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        loss = -(reward - self.baseline) * log_prob - self.entropy_weight * entropy
        self.controller_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.controller_optimizer.step()
        return reward

    def _after_training(self, arch_split: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Derive: the greedy walk and ``derive_samples`` sampled subnets; keep the best on the arch split."""
        with torch.no_grad():
            candidates = [self.controller.sample(self.space, None, greedy=True)[0]]
            candidates += [self.controller.sample(self.space, self.generator)[0] for _ in range(self.derive_samples)]
        x, y = arch_split
        scored = [(self._reward(s, x[:256], y[:256]), -i, s) for i, s in enumerate(candidates)]
        self.chosen = max(scored, key=lambda t: t[:2])[2]

    def choose(self) -> Sample:
        if self.chosen is None:
            with torch.no_grad():
                return self.space.validate(self.controller.sample(self.space, None, greedy=True)[0])
        return self.space.validate(self.chosen)

    def alphas(self) -> dict[str, dict[Any, float]]:
        """The controller's probabilities along its greedy walk (labels it does not visit: none)."""
        logits: dict[str, torch.Tensor] = {}
        sample: Sample = {}
        x, state = self.controller.start, None
        with torch.no_grad():
            for k, label in enumerate(self.controller.labels):
                if not self.space.search_space.is_active(label, sample):
                    continue
                state = self.controller.cell(x, state)
                logits[label] = self.controller.heads[k](state[0])[0]
                index = int(logits[label].argmax())
                sample[label] = self.space.choices()[label][index]
                x = self.controller.embeddings[k](torch.tensor([index]))
        return probabilities_by_value(logits, self.space)

    def arch_state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict(), "baseline": self.baseline, "chosen": self.chosen}

    def load_arch_state_dict(self, state: Mapping[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.baseline, self.chosen = state["baseline"], state["chosen"]
