"""ENAS: an LSTM controller samples subnets of the shared-weight supernet; REINFORCE trains it.

Each epoch trains the shared weights on subnets the controller samples, then trains the
controller on the arch split: reward = a subnet's accuracy on a batch, minus a
moving-average baseline, plus an entropy bonus (Pham et al., 2018). The controller walks
the labels in the space's order, so a nested label is decided only when it is active.
The shared weights first train alone on uniformly sampled subnets (``warmup_epochs``, 2 by
default), so the controller's first rewards rank trained paths, not initial ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from retiarii_ir.space import Sample

from .base import OneShotSearch, probabilities_by_value


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

    default_warmup_epochs = 2

    def __init__(self, space: Any, model: nn.Module, *, controller_lr: float = 5e-3, entropy_weight: float = 1e-3,
                 baseline_decay: float = 0.95, controller_steps: int | None = None, derive_samples: int = 16,
                 **options: Any) -> None:
        super().__init__(space, model, **options)
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
            with torch.no_grad():
                sample, _, _ = self.controller.sample(self.space, self.generator)
            with self.supernet.sampled(sample):
                loss, acc = self.weight_step(x, y)
            losses.append(loss), accs.append(acc)
        self.end_epoch()
        rewards = []
        for step in range(self.controller_steps or len(arch_batches)):
            x, y = arch_batches[step % len(arch_batches)]
            rewards.append(self._controller_step(x, y))
        return {"loss": sum(losses) / len(losses), "train_acc": sum(accs) / len(accs),
                "reward": sum(rewards) / len(rewards), "baseline": self.baseline}

    def _reward(self, sample: Sample, x: torch.Tensor, y: torch.Tensor) -> float:
        self.supernet.eval()
        with torch.no_grad(), self.supernet.sampled(sample):
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
