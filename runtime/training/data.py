"""Data sets by name, and the batches a ``DataSpec`` reads: the same spec gives the same
batches in the same order, which is what lets merged trials read each batch once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from retiarii_ir.optimizer import DataSpec
from retiarii_ir.errors import IRError


class DataError(IRError):
    """An unknown data set, or one whose loader failed."""


@dataclass(frozen=True)
class Dataset:
    """Tensors for training and validation; ``task`` is "classification" or "regression"."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    task: str = "classification"


_LOADERS: dict[str, Callable[[], Dataset]] = {}
_CACHE: dict[str, Dataset] = {}


def register_dataset(name: str, loader: Callable[[], Dataset]) -> None:
    """Make ``DataSpec(dataset=name)`` read what ``loader()`` returns (called once, cached)."""
    _LOADERS[name] = loader
    _CACHE.pop(name, None)


def is_registered(name: str) -> bool:
    return name in _LOADERS


def dataset(name: str) -> Dataset:
    if name not in _CACHE:
        if name not in _LOADERS:
            raise DataError(f"unknown data set {name!r}; known: {sorted(_LOADERS)} (add one with register_dataset)")
        made = _LOADERS[name]()
        if not isinstance(made, Dataset):
            raise DataError(f"the loader of data set {name!r} returned {type(made).__name__}, not a "
                            f"retiarii_ir.runtime.training.data.Dataset")
        _CACHE[name] = made
    return _CACHE[name]


def digits() -> Dataset:
    """scikit-learn's 8x8 digits (bundled, no download): 80% train, 20% validation."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    split = int(0.8 * len(x))
    return Dataset(x[order[:split]], y[order[:split]], x[order[split:]], y[order[split:]])


register_dataset("digits", digits)


def steps_per_epoch(spec: DataSpec) -> int:
    n = len(dataset(spec.dataset).train_x)
    return n // spec.batch_size if spec.drop_last else -(-n // spec.batch_size)


def batches(spec: DataSpec, epoch: int, device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Epoch ``epoch``'s training batches: a permutation seeded by the spec and the epoch."""
    data = dataset(spec.dataset)
    generator = torch.Generator().manual_seed(spec.shuffle_seed * 100_003 + epoch)
    order = torch.randperm(len(data.train_x), generator=generator)
    for step in range(steps_per_epoch(spec)):
        index = order[step * spec.batch_size:(step + 1) * spec.batch_size]
        yield data.train_x[index].to(device), data.train_y[index].to(device)
