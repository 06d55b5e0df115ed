"""Supernet: one module holding every architecture of a ModelSpace, weights shared.

Built from the space's own module (the class the user traced): a copy of it in which each
``retiarii_ir.nn`` choice becomes a mixed module (``mixed.py``). The space supplies the
labels, nesting and shared labels, and checks the copy against them, so the same
``ModelSpace`` object serves multi-trial and one-shot search, and every exported sample
freezes with ``space.freeze``. ``subnet_state_dict(sample)`` gives the inherited weights
under the frozen model's own state_dict keys.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from retiarii_ir.space import SiteMutator, nn as space_nn

from .mixed import (
    ArchState,
    Gate,
    MixedInputChoice,
    MixedLayerChoice,
    MixedRepeat,
    MixedValueLayer,
    UnsupportedSpaceError,
    mixed_for,
)


class Supernet(nn.Module):
    """The space's module with its choices turned into mixed modules (weights of the largest forms)."""

    def __init__(self, space: Any, model: nn.Module, method: str = "one-shot search") -> None:
        super().__init__()
        self.space = space
        self.choices = space.search_space
        _refuse_custom_mutators(space, method)
        self.state = ArchState(space.choices())
        self.state.method = method
        self.net = copy.deepcopy(model)
        _convert(self.net, self.state, "", {})
        found = _labels_in(self.net)
        missing = [label for label in self.choices.labels() if label not in found]
        unknown = [label for label in found if label not in self.choices.choices]
        if missing or unknown:
            raise UnsupportedSpaceError(f"the module given for the supernet does not match the space: labels "
                                        f"{missing} are only in the space, {unknown} only in the module; "
                                        f"pass the module the space was traced from")

    @property
    def labels(self) -> list[str]:
        return self.choices.labels()

    def forward(self, *args: Any) -> Any:
        return self.net(*args)

    # ------------------------------------------------------------------ modes
    @contextlib.contextmanager
    def sampled(self, sample: Mapping[str, Any]) -> Iterator[None]:
        """Run exactly the architecture ``sample`` (validated by the space)."""
        previous = (self.state.sample, self.state.gates)
        self.state.sample, self.state.gates = self.space.validate(sample), {}
        try:
            yield
        finally:
            self.state.sample, self.state.gates = previous

    @contextlib.contextmanager
    def gated(self, gates: Mapping[str, Gate]) -> Iterator[None]:
        """Run every label's gated mixture (see ``mixed.py``)."""
        previous = (self.state.sample, self.state.gates)
        self.state.sample, self.state.gates = None, dict(gates)
        try:
            yield
        finally:
            self.state.sample, self.state.gates = previous

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    # ------------------------------------------------------------------ export
    def subnet_state_dict(self, sample: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The weights ``sample`` inherits, under the keys of ``build_module(space.freeze(sample))``."""
        sample = self.space.validate(sample)
        out: dict[str, torch.Tensor] = {}
        _collect(self.net, "", sample, out)
        return out

    def subnet(self, sample: Mapping[str, Any]) -> nn.Module:
        """The standalone module of ``sample`` (built from the frozen graph) with inherited weights."""
        import retiarii_ir

        module = retiarii_ir.build_module(self.space.freeze(sample))
        module.load_state_dict(self.subnet_state_dict(sample), strict=True)
        return module

    @contextlib.contextmanager
    def recalibrating(self) -> Iterator[None]:
        """Batch norms average over the batches that follow (momentum None) from fresh statistics."""
        norms = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        values = [m for m in self.net.modules() if isinstance(m, MixedValueLayer)
                  and issubclass(m.base_class, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        for m in values:
            m.running_mean.zero_(), m.running_var.fill_(1.0), m.num_batches_tracked.zero_()
            m.momentum_override = None
        try:
            yield
        finally:
            for m, momentum in zip(norms, saved):
                m.momentum = momentum
            for m in values:
                m.momentum_override = "unset"


def _refuse_custom_mutators(space: Any, method: str) -> None:
    for mutator in space.mutators:
        if not isinstance(mutator, SiteMutator):
            labels = [c.label for c in space.search_space if c.kind == "mutator"] or [mutator.label]
            raise UnsupportedSpaceError(
                f"{method} cannot relax label(s) {labels} of custom mutator {type(mutator).__name__}: a graph "
                f"rewrite has no weights to share; write the choice with retiarii_ir.nn (LayerChoice, "
                f"ValueChoice...) or search this space with a multi-trial strategy")


def _convert(module: nn.Module, state: ArchState, prefix: str, memo: dict[int, nn.Module]) -> nn.Module:
    """Replace, bottom-up, every choice under ``module`` by the mixed module registered for it."""
    for name, child in list(module.named_children()):
        path = f"{prefix}.{name}" if prefix else name
        if id(child) in memo:
            module._modules[name] = memo[id(child)]
            continue
        if not isinstance(child, space_nn.LooseEndMerge):  # a merge's inputs are its cell's, not its own
            _convert(child, state, path, memo)
        new = mixed_for(child, module, state, path) or child
        memo[id(child)] = new
        module._modules[name] = new
    return module


def _labels_in(net: nn.Module) -> set[str]:
    labels: set[str] = set()
    for m in net.modules():
        if isinstance(m, MixedValueLayer):
            labels.update(m.labels)
        elif isinstance(m, (MixedLayerChoice, MixedInputChoice, MixedRepeat)):
            labels.add(m.label)
    return labels


def _collect(module: nn.Module, prefix: str, sample: Mapping[str, Any], out: dict[str, torch.Tensor]) -> None:
    """Inherited weights, keyed as the frozen graph keys them (a chosen candidate takes its choice's place)."""
    join = lambda name: f"{prefix}.{name}" if prefix else name  # noqa: E731
    if isinstance(module, MixedLayerChoice):
        if module.label in sample:
            _collect(module.candidate(sample[module.label]), prefix, sample, out)
        return
    if isinstance(module, MixedRepeat):
        for i in range(sample[module.label]):
            _collect(module.block(i), join(str(i)), sample, out)
        return
    if isinstance(module, MixedValueLayer):
        for name, tensor in module.sliced_state(module.combo_of(sample)).items():
            if name not in module._non_persistent_buffers_set:
                out[join(name)] = tensor.detach().clone()
        return
    for name, p in module.named_parameters(recurse=False):
        out[join(name)] = p.detach().clone()
    for name, b in module.named_buffers(recurse=False):
        if name not in module._non_persistent_buffers_set:
            out[join(name)] = b.detach().clone()
    for name, child in module.named_children():
        _collect(child, join(name), sample, out)
