"""DARTS: every label's candidates mixed by a softmax over learnt architecture weights.

Weights and architecture weights step in turn on the two splits. First order treats the
weights as constants in the architecture step; second order (``unrolled=True``) takes
the gradient through one virtual weight step, its Hessian term by finite differences,
as in Liu et al. (2019). The export takes each active label's strongest candidate.

The weights first train alone (``warmup_epochs``, 2 by default), so an untrained candidate
does not lose at once to one that needs no training. Then a collapse guard (on by default,
``collapse_guard=False`` turns it off) stops the search early when parameter-free
candidates take over, in the manner of DARTS+ (Liang et al., 2019; see ``collapse.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from retiarii_ir.space import Sample

from .base import OneShotSearch, probabilities_by_value
from .collapse import CollapseGuard
from .mixed import Gate


class DARTS(OneShotSearch):
    """Differentiable architecture search (softmax relaxation) over a model space."""

    default_warmup_epochs = 2

    def __init__(self, space: Any, model: nn.Module, *, unrolled: bool = False, arch_lr: float = 3e-3,
                 arch_weight_decay: float = 1e-3, collapse_guard: bool = True, **options: Any) -> None:
        super().__init__(space, model, **options)
        self.unrolled = unrolled
        self.logits = {label: nn.Parameter(1e-3 * torch.randn(len(values), generator=self.generator))
                       for label, values in space.choices().items()}
        self.arch_optimizer = torch.optim.Adam(list(self.logits.values()), lr=arch_lr, betas=(0.5, 0.999),
                                               weight_decay=arch_weight_decay)
        self.guard = CollapseGuard(self.supernet, space.choices()) if collapse_guard else None
        self.stopped: dict[str, Any] | None = None

    def gates(self) -> dict[str, Gate]:
        return {label: Gate(torch.softmax(t, 0), list(range(len(t)))) for label, t in self.logits.items()}

    def _warmup_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """The weights of the mixture at its current (untrained, uniform) architecture weights."""
        with self.supernet.gated({label: Gate(g.weights.detach(), g.active) for label, g in self.gates().items()}):
            return self.weight_step(x, y)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.supernet.gated(self.gates()):
            return F.cross_entropy(self.supernet(x), y)

    def _train_epoch(self, epoch: int, weight_batches: list, arch_batches: list) -> dict[str, Any]:
        losses, accs, arch_losses = [], [], []
        for (xw, yw), (xa, ya) in zip(weight_batches, arch_batches):
            self.supernet.train()
            arch_losses.append(self._unrolled_step(xw, yw, xa, ya) if self.unrolled else self._arch_step(xa, ya))
            with self.supernet.gated(self.gates()):
                loss, acc = self.weight_step(xw, yw)
            losses.append(loss), accs.append(acc)
        self.end_epoch()
        return {"loss": sum(losses) / len(losses), "train_acc": sum(accs) / len(accs),
                "arch_loss": sum(arch_losses) / len(arch_losses), "max_prob": self._max_probability()}

    def _should_stop(self) -> bool:
        """The collapse guard's verdict on this epoch; on a stop, the weights of the epoch before."""
        if self.guard is None:
            return False
        verdict = self.guard.observe(self.logits)
        if verdict is None:
            return False
        self.load_arch_state_dict({"logits": verdict.pop("restore")})
        self.stopped = {"epoch": len([r for r in self.history if "phase" not in r]), **verdict}
        self._report({"method": "DARTS", "phase": "collapse guard", "epoch": self.stopped["epoch"],
                      "epochs": self.epochs, "seconds": 0.0,
                      "stopped": f"{verdict['candidates']} took the lead of {verdict['labels']}; the architecture "
                                 f"weights of the epoch before are kept"})
        return True

    def _arch_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.arch_optimizer.zero_grad(set_to_none=True)
        loss = self._loss(x, y)
        loss.backward()
        self.arch_optimizer.step()
        return loss.item()

    def _unrolled_step(self, xw: torch.Tensor, yw: torch.Tensor, xa: torch.Tensor, ya: torch.Tensor) -> float:
        """grad_a L_val(w - xi grad_w L_train(w, a), a), the second-order term by finite differences."""
        weights = [w for w in self.supernet.weight_parameters() if w.requires_grad]
        alphas = list(self.logits.values())
        xi = self.weight_optimizer().param_groups[0]["lr"]
        saved = [w.detach().clone() for w in weights]
        train_grads = _grads(self._loss(xw, yw), weights)
        with torch.no_grad():
            for w, g in zip(weights, train_grads):
                w.sub_(xi * g)
        val_loss = self._loss(xa, ya)
        grads = _grads(val_loss, alphas + weights)
        alpha_grads, direction = grads[:len(alphas)], grads[len(alphas):]
        eps = 0.01 / (torch.sqrt(sum((g * g).sum() for g in direction)) + 1e-12)
        hessian = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for w, w0, d in zip(weights, saved, direction):
                    w.copy_(w0 + sign * eps * d)
            hessian.append(_grads(self._loss(xw, yw), alphas))
        with torch.no_grad():
            for w, w0 in zip(weights, saved):
                w.copy_(w0)
        self.arch_optimizer.zero_grad(set_to_none=True)
        for a, g, plus, minus in zip(alphas, alpha_grads, *hessian):
            a.grad = g - xi * (plus - minus) / (2 * eps)
        self.arch_optimizer.step()
        return val_loss.item()

    def _max_probability(self) -> float:
        return sum(torch.softmax(t.detach(), 0).max().item() for t in self.logits.values()) / len(self.logits)

    def choose(self) -> Sample:
        return self.walk(lambda label, values: values[int(self.logits[label].argmax())])

    def alphas(self) -> dict[str, dict[Any, float]]:
        return probabilities_by_value(self.logits, self.space)

    def arch_state_dict(self) -> dict[str, Any]:
        return {"logits": {label: t.detach().clone() for label, t in self.logits.items()}, "stopped": self.stopped}

    def load_arch_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            for label, t in state["logits"].items():
                self.logits[label].copy_(t)
        self.stopped = state.get("stopped", self.stopped)


def _grads(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d tensor for each tensor; zeros where the loss does not depend on it."""
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
