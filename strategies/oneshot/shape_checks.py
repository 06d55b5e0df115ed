"""Space shapes that defeat a method: here, a gate whose output a BatchNorm normalises.

A mixed op's output is the gate-weighted sum of its candidates; a BatchNorm right after it
(or after an InputChoice and the mixed op, all positively homogeneous for convolutions and
pools) divides the scale of that sum out again, so the gradient with respect to the active
gate is about 0. Found by running the supernet once with hooks, so the check sees the
model's real data flow, not a guess from module order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .mixed import Gate, MixedInputChoice, MixedLayerChoice, MixedRepeat, MixedValueLayer

_MIXED = (MixedLayerChoice, MixedInputChoice, MixedRepeat, MixedValueLayer)


def gates_before_batchnorm(supernet: nn.Module, gates: Mapping[str, Gate], x: torch.Tensor) -> dict[str, str]:
    """label -> path of the BatchNorm its gated output reaches through mixed modules alone."""
    labels_of: dict[int, tuple[torch.Tensor, set[str]]] = {}  # id(output) -> (output, labels upstream)
    found: dict[str, str] = {}
    hooks = []

    def own_labels(module: nn.Module) -> set[str]:
        return set(module.labels) if isinstance(module, MixedValueLayer) else {module.label}

    def after_mixed(module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            upstream = set().union(*[labels_of[id(a)][1] for a in _tensors(args) if id(a) in labels_of])
            labels_of[id(output)] = (output, own_labels(module) | upstream)

    def before_norm(path: str):
        def hook(module: nn.Module, args: tuple) -> None:
            for a in _tensors(args):
                if id(a) in labels_of:
                    for label in sorted(labels_of[id(a)][1]):
                        found.setdefault(label, path)
        return hook

    for path, module in supernet.named_modules():
        if isinstance(module, _MIXED):
            hooks.append(module.register_forward_hook(after_mixed))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            hooks.append(module.register_forward_pre_hook(before_norm(path.removeprefix("net."))))
    try:
        with torch.no_grad(), supernet.gated(dict(gates)):
            supernet(x)
    finally:
        for hook in hooks:
            hook.remove()
    return dict(sorted(found.items()))  # by label: the same text on every run


def _tensors(args: tuple) -> list[torch.Tensor]:
    """The tensors among a call's arguments, one level into lists (an InputChoice's inputs)."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out

