"""Shared pieces of the reference corpus: the ``Case`` record and input helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

BATCH = 2


def _no_kwargs() -> dict:
    return {}


@dataclass(frozen=True)
class Case:
    """One reference architecture together with a way to produce example inputs.

    ``build`` returns a freshly initialised model (the caller seeds the global RNG
    beforehand if it needs reproducible weights). ``example_args`` and
    ``example_kwargs`` return fresh inputs with batch size ``BATCH`` on dimension 0;
    they use a private, fixed-seed generator so they are deterministic on their own.
    """

    name: str
    build: Callable[[], nn.Module]
    example_args: Callable[[], tuple]
    example_kwargs: Callable[[], dict] = _no_kwargs
    tags: tuple[str, ...] = ()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(
    channels: int = 3, size: int = 32, batch: int = BATCH, seed: int = 0
) -> torch.Tensor:
    """A float image batch of shape (batch, channels, size, size)."""
    return torch.randn(batch, channels, size, size, generator=_gen(seed))


def sequences(
    length: int, features: int, batch: int = BATCH, seed: int = 0
) -> torch.Tensor:
    """A float sequence batch of shape (batch, length, features)."""
    return torch.randn(batch, length, features, generator=_gen(seed))


def tokens(
    length: int, vocab_size: int, batch: int = BATCH, seed: int = 0, low: int = 1
) -> torch.Tensor:
    """A long tensor of token ids in [low, vocab_size) of shape (batch, length)."""
    return torch.randint(
        low, vocab_size, (batch, length), generator=_gen(seed), dtype=torch.long
    )
