"""Policy-based RL: an autoregressive GRU controller over the labels, trained with PPO."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from retiarii_ir.space import Sample, SearchSpace

from .base import Strategy, StrategyError


class Controller(nn.Module):
    """Decides the labels in space order; each step sees the previous decision and the label
    it is about to decide. Inactive (nested) labels are skipped, so they get no gradient."""

    def __init__(self, space: SearchSpace, hidden: int = 64, logit_scale: float = 2.5):
        super().__init__()
        self.space = space
        self.labels = space.labels()
        sizes = [len(space.choices[label].values) for label in self.labels]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.action_embedding = nn.Embedding(sum(sizes) + 1, hidden)  # last row: start token
        self.label_embedding = nn.Embedding(len(self.labels), hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, size) for size in sizes)
        self.logit_scale = logit_scale
        self.start = sum(sizes)

    def _logits(self, h: torch.Tensor, step: int) -> torch.Tensor:
        return self.logit_scale * torch.tanh(self.heads[step](h) / self.logit_scale)  # ENAS-style tanh cap

    def sample(self, generator: torch.Generator) -> tuple[dict[str, int], float]:
        """Indices of the chosen values, one per active label, and their log-probability."""
        actions: dict[str, int] = {}
        log_prob = 0.0
        partial: Sample = {}
        h = torch.zeros(1, self.cell.hidden_size)
        prev = self.start
        with torch.no_grad():
            for step, label in enumerate(self.labels):
                if not self.space.is_active(label, partial):
                    continue
                x = self.action_embedding.weight[prev] + self.label_embedding.weight[step]
                h = self.cell(x.unsqueeze(0), h)
                probs = torch.softmax(self._logits(h, step), dim=-1)
                index = int(torch.multinomial(probs, 1, generator=generator))
                log_prob += float(torch.log(probs[0, index]))
                actions[label] = index
                partial[label] = self.space.choices[label].values[index]
                prev = self.offsets[step] + index
        return actions, log_prob

    def log_prob_and_entropy(self, batch: list[dict[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probability of each action dict in ``batch`` and the summed
        entropy of its active steps; a label missing from a dict leaves its state untouched."""
        n = len(batch)
        h = torch.zeros(n, self.cell.hidden_size)
        prev = torch.full((n,), self.start, dtype=torch.long)
        log_prob, entropy = torch.zeros(n), torch.zeros(n)
        for step, label in enumerate(self.labels):
            active = torch.tensor([label in actions for actions in batch])
            if not bool(active.any()):
                continue
            chosen = torch.tensor([actions.get(label, 0) for actions in batch])
            x = self.action_embedding(prev) + self.label_embedding.weight[step]
            h = torch.where(active.unsqueeze(1), self.cell(x, h), h)
            log_probs = torch.log_softmax(self._logits(h, step), dim=-1)
            picked = log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1)
            log_prob = log_prob + torch.where(active, picked, torch.zeros(()))
            step_entropy = -(log_probs.exp() * log_probs).sum(1)
            entropy = entropy + torch.where(active, step_entropy, torch.zeros(()))
            prev = torch.where(active, self.offsets[step] + chosen, prev)
        return log_prob, entropy


class PolicyBasedRL(Strategy):
    """PPO (clipped ratio, normalised advantages over a moving baseline, entropy bonus) on a
    GRU controller. The policy is updated every ``batch_size`` observed trials; proposals
    made meanwhile keep the log-probability of the policy that made them."""

    def __init__(self, space: Any, *, batch_size: int = 8, ppo_epochs: int = 4, lr: float = 0.01,
                 clip: float = 0.2, entropy_coef: float = 0.01, baseline_decay: float = 0.9,
                 hidden: int = 64, **kwargs: Any):
        super().__init__(space, **kwargs)
        if batch_size < 1 or ppo_epochs < 1 or lr <= 0 or clip <= 0:
            raise StrategyError("need batch_size >= 1, ppo_epochs >= 1, lr > 0 and clip > 0")
        self.batch_size, self.ppo_epochs, self.clip = batch_size, ppo_epochs, clip
        self.entropy_coef, self.baseline_decay = entropy_coef, baseline_decay
        seed = self.rng.randrange(2**31)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.controller = Controller(self.space, hidden=hidden)
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.baseline: float | None = None
        self._buffer: list[tuple[dict[str, int], float, float]] = []  # actions, old log-prob, reward
        self.updates = 0
        self._suggested: tuple[str, float] | None = None  # (sample key, log-prob) of the last suggestion

    def _suggest(self) -> Sample:
        actions, log_prob = self.controller.sample(self.generator)
        sample = {label: self.space.choices[label].values[i] for label, i in actions.items()}
        self._suggested = (self.space.sample_key(sample), log_prob)
        return sample

    def _actions(self, sample: Sample) -> dict[str, int]:
        return {label: self.space.choices[label].index(value) for label, value in sample.items()}

    def _accepted(self, sample: Sample, extra: dict[str, Any]) -> None:
        extra["actions"] = self._actions(sample)
        if self._suggested is not None and self._suggested[0] == self.space.sample_key(sample):
            extra["log_prob"] = self._suggested[1]
        else:  # a fallback sample from the base class: score it under the current policy
            with torch.no_grad():
                extra["log_prob"] = float(self.controller.log_prob_and_entropy([extra["actions"]])[0][0])
        self._suggested = None

    def _learn(self, sample: Sample, score: float, extra: dict[str, Any]) -> None:
        self._buffer.append((extra["actions"], extra["log_prob"], score))
        if len(self._buffer) >= self.batch_size:
            self._update()

    def _update(self) -> None:
        """One PPO update on the buffered trials, then the buffer is cleared."""
        rewards = torch.tensor([r for _, _, r in self._buffer])
        if self.baseline is None:
            self.baseline = float(rewards.mean())
        advantages = rewards - self.baseline
        if len(rewards) > 1 and float(rewards.std()) > 1e-8:
            advantages = advantages / rewards.std()  # scale-free: minimised losses and accuracies alike
        old_log_probs = torch.tensor([lp for _, lp, _ in self._buffer])
        for _ in range(self.ppo_epochs):
            log_probs, entropies = self.controller.log_prob_and_entropy([actions for actions, _, _ in self._buffer])
            entropy = entropies.mean()
            ratio = torch.exp(log_probs - old_log_probs)
            clipped = torch.clamp(ratio, 1 - self.clip, 1 + self.clip)
            loss = -torch.min(ratio * advantages, clipped * advantages).mean() - self.entropy_coef * entropy
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        for reward in rewards.tolist():
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        self._buffer.clear()
        self.updates += 1
