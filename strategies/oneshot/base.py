"""What every one-shot method shares: data splits, seeding, the weight step, progress per
epoch, export, architecture weights per label, and the supernet checkpoint.

A method trains the supernet's weights on one half of the training data and decides the
architecture on the other half (the *arch split*), so its choice is never scored on the
batches that trained the weights.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from retiarii_ir.errors import first_line
from retiarii_ir.space import Sample

from .mixed import OneShotError
from .supernet import Supernet

EpochReport = dict[str, Any]


class OneShotSearch:
    """Base class: ``fit(x, y)`` trains and searches; ``export()`` gives the chosen sample."""

    def __init__(self, space: Any, model: nn.Module, *, epochs: int = 5, batch_size: int = 64, lr: float = 0.05,
                 momentum: float = 0.9, weight_decay: float = 3e-4, grad_clip: float = 5.0, seed: int = 0,
                 progress: bool | Callable[[EpochReport], None] = False, device: str | torch.device = "cpu") -> None:
        if epochs < 1 or batch_size < 1:
            raise OneShotError(f"{type(self).__name__} needs epochs >= 1 and batch_size >= 1, "
                                        f"got {epochs} and {batch_size}")
        self.space, self.epochs, self.batch_size = space, epochs, batch_size
        self.lr, self.momentum, self.weight_decay, self.grad_clip = lr, momentum, weight_decay, grad_clip
        self.seed, self.progress, self.device = seed, progress, torch.device(device)
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.supernet = Supernet(space, model, method=type(self).__name__).to(self.device)
        self.history: list[EpochReport] = []
        self.search_seconds = 0.0

    # ------------------------------------------------------------------ subclass API
    def _train_epoch(self, epoch: int, weight_batches: list, arch_batches: list) -> EpochReport:
        raise NotImplementedError

    def _after_training(self, arch_split: tuple[torch.Tensor, torch.Tensor]) -> None:
        """A search that runs once the supernet is trained (SPOS's evolution)."""

    def export(self) -> Sample:
        """The chosen architecture, a plain sample of the space."""
        raise NotImplementedError

    def alphas(self) -> dict[str, dict[str, float]]:
        """Per label, the probability of each candidate (key: the value as JSON text)."""
        return {}

    def arch_state_dict(self) -> dict[str, Any]:
        return {}

    def load_arch_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ running
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> OneShotSearch:
        """Split (x, y) in half (weights / architecture), train ``epochs`` epochs, then search."""
        if len(x) != len(y) or len(x) < 2 * self.batch_size:
            raise OneShotError(f"{type(self).__name__} needs at least {2 * self.batch_size} labelled "
                                        f"examples (two splits of one batch), got {len(x)} inputs, {len(y)} labels")
        torch.manual_seed(self.seed)  # dropout inside the supernet
        order = torch.randperm(len(x), generator=self.generator)
        half = len(x) // 2
        weight_split = (x[order[:half]], y[order[:half]])
        self.arch_split = (x[order[half:]], y[order[half:]])
        self.weight_split = weight_split
        start = time.perf_counter()
        for epoch in range(self.epochs):
            began = time.perf_counter()
            report = self._train_epoch(epoch, list(self._batches(*weight_split)), list(self._batches(*self.arch_split)))
            report = {"method": type(self).__name__, "epoch": epoch + 1, "epochs": self.epochs, **report,
                      "seconds": time.perf_counter() - began}
            self.history.append(report)
            self._report(report)
        self._after_training(self.arch_split)
        self.search_seconds = time.perf_counter() - start
        return self

    def _batches(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(x), generator=self.generator)
        for i in range(0, len(x) - self.batch_size + 1, self.batch_size):
            index = order[i:i + self.batch_size]
            yield x[index].to(self.device), y[index].to(self.device)

    def _report(self, report: EpochReport) -> None:
        if callable(self.progress):
            self.progress(report)
        elif self.progress:
            shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()
                              if k not in ("method", "phase", "epoch", "epochs", "seconds"))
            print(f"{report['method']} {report.get('phase', 'epoch')} {report['epoch']}/{report['epochs']}: {shown}  "
                  f"({report['seconds']:.1f} s)", file=sys.stderr, flush=True)

    def weight_optimizer(self) -> torch.optim.Optimizer:
        if not hasattr(self, "_weight_optimizer"):
            self._weight_optimizer = torch.optim.SGD(self.supernet.weight_parameters(), lr=self.lr,
                                                     momentum=self.momentum, weight_decay=self.weight_decay)
            self._weight_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self._weight_optimizer, self.epochs)
        return self._weight_optimizer

    def end_epoch(self) -> None:
        self.weight_optimizer()
        self._weight_schedule.step()

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One SGD step on the supernet's weights in the current mode; (loss, accuracy) of the batch."""
        optimizer = self.weight_optimizer()
        self.supernet.train()
        optimizer.zero_grad(set_to_none=True)
        out = self.supernet(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.supernet.weight_parameters(), self.grad_clip)
        optimizer.step()
        return loss.item(), (out.argmax(1) == y).float().mean().item()

    # ------------------------------------------------------------------ evaluating
    @torch.no_grad()
    def accuracy(self, sample: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor,
                 recalibrate: torch.Tensor | None = None, recalibration_batches: int = 4) -> float:
        """Accuracy of ``sample`` with inherited weights; batch norms first re-estimated on ``recalibrate``."""
        with self.supernet.sampled(sample):
            if recalibrate is not None:
                with self.supernet.recalibrating():
                    self.supernet.train()
                    for i in range(recalibration_batches):
                        chunk = recalibrate[i * self.batch_size:(i + 1) * self.batch_size]
                        if len(chunk):
                            self.supernet(chunk.to(self.device))
            self.supernet.eval()
            correct = sum((self.supernet(x[i:i + 256].to(self.device)).argmax(1).cpu() == y[i:i + 256]).sum().item()
                          for i in range(0, len(x), 256))
        return correct / len(x)

    def walk(self, pick: Callable[[str, list[Any]], Any]) -> Sample:
        """A sample built label by label in the space's order, ``pick(label, values)`` for active ones."""
        sample: Sample = {}
        for choice in self.space.search_space:
            if self.space.search_space.is_active(choice.label, sample):
                sample[choice.label] = pick(choice.label, list(choice.values))
        return self.space.validate(sample)

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self) -> dict[str, Any]:
        """The supernet's weights, the architecture state and what it means per label."""
        return {"method": type(self).__name__, "seed": self.seed, "supernet": self.supernet.state_dict(),
                "arch": self.arch_state_dict(), "alphas": self.alphas(), "sample": self.export(),
                "history": list(self.history)}

    def save(self, path: str) -> None:
        torch.save(self.checkpoint(), path)

    def load(self, path: str) -> OneShotSearch:
        """Weights and architecture state from ``save``; the file is read as data only
        (``weights_only=True``), and anything that does not fit this search is a OneShotError."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise OneShotError(f"no such checkpoint: {path}") from None
        except Exception as e:  # noqa: BLE001 - a crafted pickle, or not a checkpoint at all
            raise OneShotError(f"{path} is not a one-shot checkpoint torch.load(weights_only=True) reads: "
                               f"{type(e).__name__}: {first_line(e)}") from None
        if not isinstance(state, dict) or state.get("method") != type(self).__name__:
            method = state.get("method") if isinstance(state, dict) else type(state).__name__
            raise OneShotError(f"checkpoint {path!r} was written by {str(method)[:80]!r}, not {type(self).__name__}")
        try:
            self.supernet.load_state_dict(state["supernet"])
            self.load_arch_state_dict(state["arch"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            raise OneShotError(f"checkpoint {path!r} does not fit this {type(self).__name__} search: "
                               f"{type(e).__name__}: {first_line(e)}") from None
        history = state.get("history", [])
        self.history = list(history) if isinstance(history, list) else []
        return self


def probabilities_by_value(logits: Mapping[str, torch.Tensor], space: Any) -> dict[str, dict[str, float]]:
    """label -> {candidate (JSON text): softmax probability}."""
    import json

    values = space.choices()
    return {label: {json.dumps(v): p for v, p in zip(values[label], torch.softmax(t.detach(), 0).tolist())}
            for label, t in logits.items()}
