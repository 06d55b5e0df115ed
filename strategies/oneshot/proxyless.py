"""ProxylessNAS: binarised paths, the two-path gate gradient and a measured latency term.

Weight steps train one path sampled from the architecture probabilities. Architecture
steps draw two candidates per label, make one of them the active path (a binary gate),
and read the loss gradient with respect to both gates (the output of the inactive path
times the incoming gradient); the softmax over the pair turns it into a gradient for the
architecture weights (Cai et al., 2019). With a ``latency_target_ms``, the loss adds
``latency_weight * max(0, E[latency] / target - 1)``, E[latency] from a ``LatencyTable``
measured on this machine (calibrated to whole models, see ``latency.py``).

A BatchNorm right after a gate (with nothing but the mixed op between, or an InputChoice
then a mixed op) normalises away the scale of the active path, so that path's gate
gradient is about 0 and only the inactive path is scored. The architecture steps therefore
run the batch norms on their running statistics (``arch_batchnorm="running"``, the
default); with ``"batch"`` a space of that shape is warned about. The weights train alone
for ``warmup_epochs`` (2 by default) first.
"""

from __future__ import annotations

from collections.abc import Mapping
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from retiarii_ir.space import Sample

from .base import OneShotSearch, probabilities_by_value
from .latency import LatencyTable
from .mixed import Gate, OneShotError, OneShotWarning
from .shape_checks import gates_before_batchnorm


ARCH_BATCHNORM = ("running", "batch")


class ProxylessNAS(OneShotSearch):
    """Path-level binarisation with a latency-aware loss."""

    default_warmup_epochs = 2

    def __init__(self, space: Any, model: nn.Module, *, arch_lr: float = 1e-2, latency_target_ms: float | None = None,
                 latency_weight: float = 1.0, latency_table: LatencyTable | None = None,
                 example_input: torch.Tensor | None = None, arch_batchnorm: str = "running", **options: Any) -> None:
        super().__init__(space, model, **options)
        if arch_batchnorm not in ARCH_BATCHNORM:
            raise OneShotError(f"ProxylessNAS arch_batchnorm is one of {ARCH_BATCHNORM}, got {arch_batchnorm!r}")
        self.arch_batchnorm = arch_batchnorm
        self.before_batchnorm: dict[str, str] | None = None
        self.logits = {label: nn.Parameter(torch.zeros(len(values))) for label, values in space.choices().items()}
        self.arch_optimizer = torch.optim.Adam(list(self.logits.values()), lr=arch_lr, betas=(0.0, 0.999))
        self.latency_target_ms, self.latency_weight = latency_target_ms, latency_weight
        self.latency_table = latency_table
        if latency_target_ms is not None and latency_table is None:
            if example_input is None:
                raise OneShotError("ProxylessNAS with latency_target_ms needs example_input (one input, the batch "
                                   "size to time) or a latency_table")
            self.latency_table = LatencyTable.measure(self.supernet, example_input)

    def probabilities(self) -> dict[str, torch.Tensor]:
        return {label: torch.softmax(t, 0) for label, t in self.logits.items()}

    def _one_path(self) -> Sample:
        probs = {label: p.detach() for label, p in self.probabilities().items()}
        return self.walk(lambda label, values: values[int(torch.multinomial(probs[label], 1, generator=self.generator))])

    def _train_epoch(self, epoch: int, weight_batches: list, arch_batches: list) -> dict[str, Any]:
        losses, accs, arch_losses, latencies = [], [], [], []
        for (xw, yw), (xa, ya) in zip(weight_batches, arch_batches):
            with self.supernet.sampled(self._one_path()):
                loss, acc = self.weight_step(xw, yw)
            losses.append(loss), accs.append(acc)
            arch_loss, latency = self._arch_step(xa, ya)
            arch_losses.append(arch_loss), latencies.append(latency)
        self.end_epoch()
        report = {"loss": sum(losses) / len(losses), "train_acc": sum(accs) / len(accs),
                  "arch_loss": sum(arch_losses) / len(arch_losses)}
        if self.latency_table is not None:
            report["expected_ms"] = sum(latencies) / len(latencies)
        return report

    def _check_shape(self, gates: dict[str, Gate], x: torch.Tensor) -> None:
        """Once: which gates feed a BatchNorm directly; a warning when their gradient will be lost."""
        self.before_batchnorm = gates_before_batchnorm(self.supernet, gates, x)
        if self.before_batchnorm and self.arch_batchnorm == "batch":
            where = ", ".join(f"{label!r} -> {norm!r}" for label, norm in self.before_batchnorm.items())
            warnings.warn(f"ProxylessNAS: label(s) feed a BatchNorm directly ({where}); on batch statistics the "
                          f"active path's gate gradient is about 0, so these labels are not learnt. Use "
                          f"arch_batchnorm='running' (the default) or a BatchNorm inside each candidate",
                          OneShotWarning, stacklevel=5)

    def _arch_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        gates, pairs = {}, {}
        for label, logits in self.logits.items():
            n = len(logits)
            pair = torch.multinomial(torch.softmax(logits.detach(), 0), min(2, n), replacement=False,
                                     generator=self.generator).tolist()
            within = torch.softmax(logits.detach()[pair], 0)
            active = pair[int(torch.multinomial(within, 1, generator=self.generator))]
            weights = torch.zeros(n)
            weights[active] = 1.0
            weights.requires_grad_(True)
            gates[label], pairs[label] = Gate(weights, pair), (pair, within)
        if self.before_batchnorm is None:
            self._check_shape(gates, x)
        self.supernet.train(self.arch_batchnorm == "batch")
        with self.supernet.gated(gates):
            loss = F.cross_entropy(self.supernet(x), y)
        gate_grads = torch.autograd.grad(loss, [g.weights for g in gates.values()], allow_unused=True)
        self.arch_optimizer.zero_grad(set_to_none=True)
        for (label, logits), grad in zip(self.logits.items(), gate_grads):
            pair, within = pairs[label]
            g = torch.zeros(len(logits)) if grad is None else grad
            alpha_grad = torch.zeros(len(logits))
            for i, a in enumerate(pair):
                for j, b in enumerate(pair):
                    alpha_grad[a] += g[b] * within[j] * ((1.0 if i == j else 0.0) - within[i])
            logits.grad = alpha_grad
        latency = 0.0
        if self.latency_table is not None:
            expected = self.latency_table.expected(self.probabilities())
            latency = expected.item()
            penalty = self.latency_weight * F.relu(expected / self.latency_target_ms - 1.0)
            penalty_grads = torch.autograd.grad(penalty, list(self.logits.values()), allow_unused=True)
            for logits, g in zip(self.logits.values(), penalty_grads):
                if g is not None:
                    logits.grad = logits.grad + g
        self.arch_optimizer.step()
        return loss.item(), latency

    def choose(self) -> Sample:
        return self.walk(lambda label, values: values[int(self.logits[label].argmax())])

    def alphas(self) -> dict[str, dict[Any, float]]:
        return probabilities_by_value(self.logits, self.space)

    def arch_state_dict(self) -> dict[str, Any]:
        return {"logits": {label: t.detach().clone() for label, t in self.logits.items()},
                "latency_target_ms": self.latency_target_ms}

    def load_arch_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            for label, t in state["logits"].items():
                self.logits[label].copy_(t)
