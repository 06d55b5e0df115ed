"""What every one-shot method shares: data splits, warm-up, seeding, the weight step,
progress per epoch, export, architecture probabilities per label, and the checkpoint.

A method trains the supernet's weights on one part of the training data and decides the
architecture on the other (the *arch split*, ``arch_fraction`` of the data, or a data set of
its own), so its choice is never scored on the batches that trained the weights. Methods
with architecture steps first train the weights alone for a warm-up: an untrained candidate
then does not lose to one that needs no training.
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

    #: whether the method has architecture steps a warm-up can precede (SPOS has none)
    has_warmup = True
    #: warm-up epochs when neither ``warmup_epochs`` nor ``warmup_steps`` is given
    default_warmup_epochs = 0

    def __init__(self, space: Any, model: nn.Module, *, epochs: int = 20, batch_size: int = 64, lr: float = 0.05,
                 momentum: float = 0.9, weight_decay: float = 3e-4, grad_clip: float = 5.0, seed: int = 0,
                 warmup_epochs: int | None = None, warmup_steps: int | None = None, arch_fraction: float = 0.5,
                 progress: bool | Callable[[EpochReport], None] = False, device: str | torch.device = "cpu") -> None:
        name = type(self).__name__
        if epochs < 1 or batch_size < 1:
            raise OneShotError(f"{name} needs epochs >= 1 and batch_size >= 1, got {epochs} and {batch_size}")
        if not 0.0 < arch_fraction < 1.0:
            raise OneShotError(f"{name} needs 0 < arch_fraction < 1 (the share of the data that decides the "
                               f"architecture), got {arch_fraction}")
        self.warmup_epochs, self.warmup_steps = self._warmup_setting(warmup_epochs, warmup_steps)
        self.arch_fraction = arch_fraction
        self.space, self.epochs, self.batch_size = space, epochs, batch_size
        self.lr, self.momentum, self.weight_decay, self.grad_clip = lr, momentum, weight_decay, grad_clip
        self.seed, self.progress, self.device = seed, progress, torch.device(device)
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.supernet = Supernet(space, model, method=type(self).__name__).to(self.device)
        self.history: list[EpochReport] = []
        self.search_seconds = 0.0

    def _warmup_setting(self, epochs: int | None, steps: int | None) -> tuple[int, int]:
        name = type(self).__name__
        if not self.has_warmup:
            if epochs or steps:
                raise OneShotError(f"{name} has no architecture steps, so no warm-up: its weights train alone "
                                   f"already")
            return 0, 0
        if epochs is not None and steps is not None:
            raise OneShotError(f"{name} takes warmup_epochs or warmup_steps, not both")
        for what, value in (("warmup_epochs", epochs), ("warmup_steps", steps)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise OneShotError(f"{name} needs {what} to be a whole number >= 0, got {value!r}")
        if epochs is None and steps is None:
            return self.default_warmup_epochs, 0
        return epochs or 0, steps or 0

    # ------------------------------------------------------------------ subclass API
    def _warmup_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One weights-only step before the search: a uniformly sampled path by default."""
        with self.supernet.sampled(self.space.random_sample(self.rng)):
            return self.weight_step(x, y)

    def _train_epoch(self, epoch: int, weight_batches: list, arch_batches: list) -> EpochReport:
        raise NotImplementedError

    def _after_training(self, arch_split: tuple[torch.Tensor, torch.Tensor]) -> None:
        """A search that runs once the supernet is trained (SPOS's evolution)."""

    def choose(self) -> Sample:
        """The chosen architecture, in the space's own sample format."""
        raise NotImplementedError

    def export(self) -> Sample:
        """The chosen architecture in NNI's sample format (an InputChoice's value is a list of
        indices, also of one); ``space.freeze`` and ``supernet.sampled`` take it as it is."""
        return nni_sample(self.space, self.choose())

    def alphas(self) -> dict[str, dict[Any, float]]:
        """Per label, the probability the method gives each candidate (key: the candidate itself,
        a list as a tuple); the probabilities of a label sum to 1 and the export takes the likeliest."""
        return {}

    def arch_state_dict(self) -> dict[str, Any]:
        return {}

    def load_arch_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ running
    def fit(self, x: torch.Tensor, y: torch.Tensor, arch_x: torch.Tensor | None = None,
            arch_y: torch.Tensor | None = None) -> OneShotSearch:
        """Train the weights on (x, y) and decide the architecture on (arch_x, arch_y); without
        those, on a random ``arch_fraction`` of (x, y). Warm-up first, then ``epochs`` epochs."""
        self.weight_split, self.arch_split = self._splits(x, y, arch_x, arch_y)
        torch.manual_seed(self.seed)  # dropout inside the supernet
        start = time.perf_counter()
        self._warm_up()
        for epoch in range(self.epochs):
            began = time.perf_counter()
            report = self._train_epoch(epoch, list(self._batches(*self.weight_split)),
                                       list(self._batches(*self.arch_split)))
            report = {"method": type(self).__name__, "epoch": epoch + 1, "epochs": self.epochs, **report,
                      "seconds": time.perf_counter() - began}
            self.history.append(report)
            self._report(report)
            if self._should_stop():
                break
        self._after_training(self.arch_split)
        self.search_seconds = time.perf_counter() - start
        return self

    def _should_stop(self) -> bool:
        """Whether the search ends before ``epochs`` (DARTS's collapse guard)."""
        return False

    def _splits(self, x: torch.Tensor, y: torch.Tensor, arch_x: torch.Tensor | None, arch_y: torch.Tensor | None
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        name = type(self).__name__
        if (arch_x is None) != (arch_y is None):
            raise OneShotError(f"{name}.fit needs both arch_x and arch_y, or neither")
        if len(x) != len(y) or (arch_x is not None and len(arch_x) != len(arch_y)):
            raise OneShotError(f"{name}.fit got inputs and labels of different lengths: {len(x)} and {len(y)}"
                               + ("" if arch_x is None else f", {len(arch_x)} and {len(arch_y)} (arch)"))
        if arch_x is not None:
            weights, arch = (x, y), (arch_x, arch_y)
        else:
            order = torch.randperm(len(x), generator=self.generator)
            cut = len(x) - int(round(self.arch_fraction * len(x)))
            weights = (x[order[:cut]], y[order[:cut]])
            arch = (x[order[cut:]], y[order[cut:]])
        if min(len(weights[0]), len(arch[0])) < self.batch_size:
            raise OneShotError(f"{name} needs at least one batch ({self.batch_size}) of labelled examples for the "
                               f"weights and one for the architecture, got {len(weights[0])} and {len(arch[0])}")
        return weights, arch

    def _warm_up(self) -> None:
        """Weights only: ``warmup_epochs`` epochs, or ``warmup_steps`` steps, on the weight split."""
        steps = self.warmup_steps or self.warmup_epochs * (len(self.weight_split[0]) // self.batch_size)
        done, epoch = 0, 0
        while done < steps:
            began, losses, accs = time.perf_counter(), [], []
            for x, y in self._batches(*self.weight_split):
                loss, acc = self._warmup_step(x, y)
                losses.append(loss), accs.append(acc)
                done += 1
                if done == steps:
                    break
            if self.warmup_epochs:
                self.end_epoch()
            epoch += 1
            report = {"method": type(self).__name__, "phase": "warmup", "epoch": epoch,
                      "epochs": self.warmup_epochs or -(-steps // max(1, len(self.weight_split[0]) // self.batch_size)),
                      "loss": sum(losses) / len(losses), "train_acc": sum(accs) / len(accs), "steps": done,
                      "seconds": time.perf_counter() - began}
            self.history.append(report)
            self._report(report)

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
            self._weight_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self._weight_optimizer,
                                                                               self.epochs + self.warmup_epochs)
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


def nni_sample(space: Any, sample: Mapping[str, Any]) -> Sample:
    """``sample`` with every InputChoice value written as a list of input indices."""
    kinds = {choice.label: choice.kind for choice in space.search_space}
    return {label: [value] if kinds.get(label) == "input" and isinstance(value, int) else value
            for label, value in sample.items()}


def candidate_key(value: Any) -> Any:
    """A candidate as a dict key: itself, or a tuple for a list (an InputChoice of several)."""
    return tuple(candidate_key(v) for v in value) if isinstance(value, (list, tuple)) else value


def probabilities_by_value(logits: Mapping[str, torch.Tensor], space: Any) -> dict[str, dict[Any, float]]:
    """label -> {candidate: softmax probability}."""
    values = space.choices()
    return {label: {candidate_key(v): p for v, p in zip(values[label], torch.softmax(t.detach(), 0).tolist())}
            for label, t in logits.items()}
