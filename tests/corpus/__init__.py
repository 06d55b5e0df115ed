"""Reference PyTorch architectures written in the style of published model code.

``CORPUS`` maps a case name to a :class:`Case`: a builder returning a freshly
initialised model plus callables producing example inputs (batch size 2 on
dimension 0). Every model is small enough to run in milliseconds on a CPU.
``resnet50`` builds a full-size ResNet-50 for benchmarks and is deliberately not
part of ``CORPUS``.

Typical use::

    torch.manual_seed(0)
    case = CORPUS["resnet_basic"]
    model = case.build().eval()
    out = model(*case.example_args(), **case.example_kwargs())
"""

from __future__ import annotations

from . import (
    cnn,
    gpt,
    misc,
    mobile,
    resnet,
    sequence,
    shufflenet,
    transformer,
    unet,
    vision,
)
from ._base import BATCH, Case
from .resnet import resnet50


def _collect() -> dict[str, Case]:
    corpus: dict[str, Case] = {}
    for module in (
        resnet,
        mobile,
        shufflenet,
        cnn,
        unet,
        transformer,
        gpt,
        vision,
        sequence,
        misc,
    ):
        for case in module.CASES:
            if case.name in corpus:
                raise ValueError(f"duplicate corpus case name: {case.name}")
            corpus[case.name] = case
    return corpus


CORPUS: dict[str, Case] = _collect()


def cases_with_tag(tag: str) -> list[Case]:
    """All cases carrying ``tag``, in corpus order."""
    return [case for case in CORPUS.values() if tag in case.tags]


__all__ = ["BATCH", "CORPUS", "Case", "cases_with_tag", "resnet50"]
