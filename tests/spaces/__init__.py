"""The three reference spaces of ``retiarii_ir.space.hub``, as test cases.

``SPACES`` maps a name to a ``SpaceCase``: how to build the space (the user's class)
and an example input. ``frozen_and_fixed`` builds, for one sample, the module of the
frozen graph and the ``fixed_arch`` module with the same weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import retiarii_ir

from retiarii_ir.space.hub import DartsSpace, MobileNetV3Space, NasBench201


@dataclass(frozen=True)
class SpaceCase:
    name: str
    build: Callable[[], nn.Module]
    example_input: Callable[[], torch.Tensor]


def _images(size: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


SPACES: dict[str, SpaceCase] = {
    "nasbench201": SpaceCase("nasbench201", NasBench201, _images(8)),
    "darts": SpaceCase("darts", DartsSpace, _images(8)),
    "mobilenetv3": SpaceCase("mobilenetv3", MobileNetV3Space, _images(16)),
}


def trace_case(case: SpaceCase) -> retiarii_ir.ModelSpace:
    """The ModelSpace of a case (weights seeded, so tracing is reproducible)."""
    torch.manual_seed(0)
    return retiarii_ir.trace_space(case.build(), case.example_input())


def frozen_and_fixed(space: retiarii_ir.ModelSpace, case: SpaceCase, sample: dict) -> tuple[nn.Module, nn.Module]:
    """(module of ``space.freeze(sample)``, ``fixed_arch`` module), same weights, eval mode."""
    with space.fixed_arch(sample):
        fixed = case.build()
    graph_module = retiarii_ir.build_module(space.freeze(sample))
    graph_module.load_state_dict(fixed.state_dict(), strict=True)
    return graph_module.eval(), fixed.eval()


__all__ = ["SPACES", "DartsSpace", "MobileNetV3Space", "NasBench201", "SpaceCase", "frozen_and_fixed", "trace_case"]
