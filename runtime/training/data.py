"""Where a ``DataSpec``'s batches come from: the same spec gives the same batches in the same
order, which is what lets merged trials read each batch once.

Two kinds of source, one interface (``steps_per_epoch``, ``epoch(e, device)``, ``validation(device)``,
``close``):
- ``InMemory``: tensors, by a registered name (``register_dataset``) or from a factory that returns
  a ``Dataset`` of tensors; a batch is an index slice (the fast path);
- ``Pipeline`` (``pipeline.py``): a factory that returns the user's own map-style Datasets, read
  through a DataLoader with seeded items."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from retiarii_ir.errors import IRError, first_line
from retiarii_ir.optimizer import DataSpec

from ..references import Trust, resolve


class DataError(IRError):
    """An unknown data set, or one whose factory, items or loader failed (named in the message);
    ``source`` is the data set's name or factory reference."""

    def __init__(self, message: str, source: str | None = None, spec: DataSpec | None = None) -> None:
        super().__init__(message)
        self.source, self.spec = source, spec


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
_MADE: dict[tuple[str, str], Any] = {}  # (factory reference, kwargs) -> what it returned, once per process


def register_dataset(name: str, loader: Callable[[], Dataset]) -> None:
    """Make ``DataSpec(dataset=name)`` read what ``loader()`` returns (called once, cached)."""
    _LOADERS[name] = loader
    _CACHE.pop(name, None)


def is_registered(name: str) -> bool:
    return name in _LOADERS


def dataset(name: str) -> Dataset:
    if name not in _CACHE:
        if name not in _LOADERS:
            raise DataError(f"unknown data set {name!r}; known: {sorted(_LOADERS)} (add one with register_dataset, "
                            f"or name a factory as 'mypkg.data:make')", name)
        made = _LOADERS[name]()
        if not isinstance(made, Dataset):
            raise DataError(f"the loader of data set {name!r} returned {type(made).__name__}, not a "
                            f"retiarii_ir.runtime.training.data.Dataset", name)
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


# ---------------------------------------------------------------------- sources
class InMemory:
    """A ``Dataset`` of tensors: a batch is an index slice of a permutation seeded by the spec
    and the epoch; validation in chunks of 512 rows."""

    def __init__(self, spec: DataSpec, data: Dataset) -> None:
        self.spec, self.data, self.task = spec, data, data.task

    def steps_per_epoch(self) -> int:
        n, b = len(self.data.train_x), self.spec.batch_size
        return n // b if self.spec.drop_last else -(-n // b)

    def epoch(self, epoch: int, device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data, spec = self.data, self.spec
        generator = torch.Generator().manual_seed(spec.shuffle_seed * 100_003 + epoch)
        order = torch.randperm(len(data.train_x), generator=generator)
        for step in range(self.steps_per_epoch()):
            index = order[step * spec.batch_size:(step + 1) * spec.batch_size]
            yield data.train_x[index].to(device), data.train_y[index].to(device)

    def validation(self, device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.data.val_x), 512):
            yield self.data.val_x[start:start + 512].to(device), self.data.val_y[start:start + 512].to(device)

    def close(self) -> None:
        pass


def _made(spec: DataSpec, trust: Trust | None) -> Any:
    """What the spec's factory returns (called once per process for equal arguments)."""
    key = (spec.dataset, spec.kwargs)
    if key not in _MADE:
        try:
            factory = resolve(spec.dataset, trust)
        except IRError as e:
            raise DataError(f"data set {spec.dataset}: {e}", spec.dataset, spec) from None
        try:
            made = factory(**spec.factory_kwargs())
        except Exception as e:  # noqa: BLE001 - the user's factory: one line naming it
            raise DataError(f"{spec.dataset} raised {type(e).__name__}: {first_line(e)}", spec.dataset, spec) from None
        _MADE[key] = made
    return _MADE[key]


def open_source(spec: DataSpec, trust: Trust | None = None):
    """The source of ``spec``'s batches: ``InMemory`` or a ``Pipeline`` (close it when done: it
    may hold loader worker processes). ``trust``: what a reference read from data may import."""
    if not spec.is_reference:
        return InMemory(spec, dataset(spec.dataset))
    made = _made(spec, trust)
    if isinstance(made, Dataset):
        return InMemory(spec, made)
    from .pipeline import Pipeline, split_of

    train, val = split_of(made, spec.dataset)
    return Pipeline(spec, train, val, trust)


def steps_per_epoch(spec: DataSpec, trust: Trust | None = None) -> int:
    """Steps of one epoch of ``spec`` (a factory's data sets are made to count them, once)."""
    if not spec.is_reference:
        return InMemory(spec, dataset(spec.dataset)).steps_per_epoch()
    made = _made(spec, trust)
    if isinstance(made, Dataset):
        return InMemory(spec, made).steps_per_epoch()
    from .pipeline import split_of

    n = len(split_of(made, spec.dataset)[0])
    return n // spec.batch_size if spec.drop_last else -(-n // spec.batch_size)


def batches(spec: DataSpec, epoch: int, device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Epoch ``epoch``'s training batches of an in-memory spec (a registered name)."""
    return InMemory(spec, dataset(spec.dataset)).epoch(epoch, device)
