"""The user's own data pipeline: their map-style ``Dataset`` (decoding, transforms, random
augmentation) read through one ``DataLoader`` per data spec, whose batches a merged group feeds
to every trial that reads that spec.

Every item is prepared under seeds derived from (shuffle seed, epoch, index), never from which
process prepares it: torch's, ``random``'s and numpy's global streams are seeded for the item
(torch's is put back afterwards, so training's own draws are undisturbed), and
``item_generator()`` gives the item's own ``torch.Generator``. So
an item is the same alone or merged, with any ``num_workers``. A transform that keeps a random
state of its own (``np.random.default_rng(0)`` made once, a ``random.Random``) would break that;
``Pipeline`` checks that an item comes out the same twice and refuses the data set if not.

A failing item, a collate error, a crashed or hung loader worker each end in one ``DataError``
naming the factory (and the item where there is one); loader workers are shut down with the
pipeline."""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, get_worker_info
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data.dataloader import default_collate

from retiarii_ir.errors import first_line
from retiarii_ir.optimizer import DataSpec

from ..references import Trust, resolve
from .data import DataError

VALIDATION_EPOCH = -1  # items of the validation split are seeded as if from this epoch
_CURRENT: list[list] = []  # [seed, its generator once asked for] of the item being prepared


_MASK = 2**64 - 1


def item_seed(shuffle_seed: int, epoch: int, index: int) -> int:
    """The seed of one item's random draws: a 32-bit hash of (shuffle seed, epoch, index)
    (SplitMix64's finaliser over the three; 32 bits, which every generator takes as it is)."""
    z = (shuffle_seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) >> 32


def item_generator() -> torch.Generator:
    """The ``torch.Generator`` of the item being prepared (seeded from its shuffle seed, epoch and
    index), for a transform that takes a generator rather than drawing from torch's global stream."""
    if not _CURRENT:
        raise DataError("item_generator() is only available while a data set's item is being prepared")
    current = _CURRENT[-1]
    if current[1] is None:  # made on first use: most transforms draw from the global streams
        current[1] = torch.Generator().manual_seed(current[0])
    return current[1]


@contextlib.contextmanager
def seeded(seed: int):
    """Torch's (CPU), ``random``'s and numpy's global streams seeded with ``seed`` for one item;
    torch's is put back afterwards, so training's own draws (dropout's) are not disturbed. (Only
    the CPU generator: seeding every device would cost far more than a small item.)"""
    torch_state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    _CURRENT.append([seed, None])
    try:
        yield
    finally:
        _CURRENT.pop()
        torch.set_rng_state(torch_state)


@dataclass(frozen=True)
class _Failure:
    """Why an item or a batch could not be prepared (carried back from a loader worker as data,
    so the message reaches the trial intact)."""

    reason: str


class _SeededItems(TorchDataset):
    """The user's data set, read by keys (epoch, index): each item prepared under its own seeds.
    Torch's stream is always seeded; ``random``'s and numpy's only where ``python_and_numpy`` says
    the data set's items draw from them (seeding them costs as much as a small image's crop)."""

    def __init__(self, items: Any, shuffle_seed: int, source: str, python_and_numpy: bool = True) -> None:
        self.items, self.shuffle_seed, self.source = items, shuffle_seed, source
        self.python_and_numpy = python_and_numpy

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[tuple[int, int], Any]:
        epoch, index = key
        seed = item_seed(self.shuffle_seed, epoch, index)
        # What ``seeded`` does, inline (it runs for every item). A loader worker's own stream serves
        # nothing else, so only the training process puts torch's back.
        torch_state = None if get_worker_info() is not None else torch.get_rng_state()
        torch.default_generator.manual_seed(seed)
        if self.python_and_numpy:
            random.seed(seed)
            np.random.seed(seed)
        _CURRENT.append([seed, None])
        try:
            return key, self.items[index]
        except Exception as e:  # noqa: BLE001 - the user's item: its reason travels back as data
            return key, _Failure(f"{self.source}: item {index} raised {type(e).__name__}: {first_line(e)}")
        finally:
            _CURRENT.pop()
            if torch_state is not None:
                torch.set_rng_state(torch_state)


class _EpochOrder(Sampler):
    """Keys (epoch, index) in a permutation seeded by (shuffle seed, epoch), as the in-memory path
    orders its rows; the epoch is set before each pass, so persistent workers serve every epoch."""

    def __init__(self, length: int, shuffle_seed: int, shuffle: bool) -> None:
        self.length, self.shuffle_seed, self.shuffle, self.epoch = length, shuffle_seed, shuffle, 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if not self.shuffle:
            return iter((self.epoch, i) for i in range(self.length))
        generator = torch.Generator().manual_seed(self.shuffle_seed * 100_003 + self.epoch)
        return iter((self.epoch, int(i)) for i in torch.randperm(self.length, generator=generator))


class _Collate:
    """The user's collate (default: torch's) over the items, or the reason it could not be done:
    a failed item, or items whose shapes or dtypes differ (named by index)."""

    def __init__(self, collate: Callable[[list], Any], source: str) -> None:
        self.collate, self.source = collate, source

    def __call__(self, batch: list[tuple[tuple[int, int], Any]]) -> Any:
        failed = next((item for _, item in batch if isinstance(item, _Failure)), None)
        if failed is not None:
            return failed
        mismatch = _mismatch(batch, self.source)  # before collating: torch's would cast a dtype silently
        if mismatch is not None:
            return _Failure(mismatch)
        try:
            return self.collate([item for _, item in batch])
        except Exception as e:  # noqa: BLE001
            return _Failure(f"{self.source}: collating items {[i for (_, i), _ in batch][:8]} raised "
                            f"{type(e).__name__}: {first_line(e)}")


def _mismatch(batch: list[tuple[tuple[int, int], Any]], source: str) -> str | None:
    """The first item whose tensors differ in shape or dtype from the batch's first item."""
    def signature(item: Any) -> list:
        parts = item if isinstance(item, (tuple, list)) else [item]
        return [(tuple(p.shape), p.dtype) if isinstance(p, torch.Tensor) else type(p).__name__ for p in parts]

    (_, first_index), first = batch[0]
    for (_, index), item in batch[1:]:
        if signature(item) != signature(first):
            return (f"{source}: item {index} is {_describe(signature(item))} where item {first_index} is "
                    f"{_describe(signature(first))}; every item must have the same shapes and dtypes")
    return None


def _describe(signature: list) -> str:
    return ", ".join(f"{list(s[0])} {str(s[1]).replace('torch.', '')}" if isinstance(s, tuple) else s
                     for s in signature)


PROBED_ITEMS = 4  # each costs one item's preparation, when a group's loader starts


def _draws_from_python_or_numpy(items: Any) -> bool:
    """Whether preparing the first items draws from ``random``'s or numpy's global stream: then
    both are seeded for every item (torch's always is). A transform that draws from them only
    now and then should draw from torch's stream or ``item_generator()`` instead."""
    for index in range(min(PROBED_ITEMS, len(items))):
        try:
            with seeded(item_seed(0, 0, index)):
                random.seed(index)  # a fresh state: any draw shows
                np.random.seed(index)
                python_before, numpy_before = random.getstate(), np.random.get_state()[1].copy()
                items[index]
                if random.getstate() != python_before or not np.array_equal(np.random.get_state()[1], numpy_before):
                    return True
        except Exception:  # noqa: BLE001 - a failing item is reported when it is read
            return True
    return False


def _is_map_style(value: Any) -> bool:
    return hasattr(value, "__getitem__") and hasattr(value, "__len__")


def split_of(made: Any, source: str) -> tuple[Any, Any]:
    """A factory's (train, validation) data sets, checked."""
    if isinstance(made, dict) and set(made) >= {"train", "val"}:
        made = (made["train"], made["val"])
    if not (isinstance(made, (tuple, list)) and len(made) == 2 and all(_is_map_style(d) for d in made)):
        raise DataError(f"{source} returned {type(made).__name__}; a data factory returns (train, validation) "
                        f"map-style Datasets (with __getitem__ and __len__), or a retiarii Dataset of tensors", source)
    for name, split in zip(("training", "validation"), made):
        if len(split) < 1:
            raise DataError(f"{source}: the {name} split is empty", source)
    return made[0], made[1]


class Pipeline:
    """One data spec's loaders: training batches in the seeded order of each epoch, and the
    validation split in order; each batch moved to the device once (pinned and non-blocking
    where the spec asks for it). ``close()`` shuts the loader workers down."""

    task = None  # the metric follows the trial's loss (or its own ``metric``)

    def __init__(self, spec: DataSpec, train: Any, val: Any, trust: Trust | None = None) -> None:
        self.spec, self.source = spec, spec.dataset
        collate = resolve(spec.collate_fn, trust) if spec.collate_fn else default_collate
        streams = self._check_items(train)
        self._order = _EpochOrder(len(train), spec.shuffle_seed, shuffle=True)
        self._train = self._loader(_SeededItems(train, spec.shuffle_seed, self.source, streams), self._order,
                                   collate, spec.drop_last)
        self._val = self._loader(_SeededItems(val, spec.shuffle_seed, self.source, streams),
                                 _EpochOrder(len(val), spec.shuffle_seed, shuffle=False), collate, False)
        self._val_order = self._val.sampler
        self._val_order.epoch = VALIDATION_EPOCH
        self.train_size, self.val_size = len(train), len(val)

    def _loader(self, items: _SeededItems, order: _EpochOrder, collate, drop_last: bool) -> DataLoader:
        spec = self.spec
        workers = spec.num_workers
        options = {"prefetch_factor": spec.prefetch_factor} if spec.prefetch_factor else {}
        return DataLoader(items, batch_size=spec.batch_size, sampler=order, num_workers=workers,
                          collate_fn=_Collate(collate, self.source), drop_last=drop_last,
                          pin_memory=spec.pin_memory and torch.cuda.is_available(),
                          persistent_workers=spec.persistent_workers, timeout=spec.timeout if workers else 0,
                          worker_init_fn=_loader_worker_start if workers else None,
                          multiprocessing_context=_worker_context() if workers else None, **options)

    def _check_items(self, train: Any) -> bool:
        """The first item comes out the same when prepared twice with the same seeds (else a
        transform keeps a random state of its own); returns whether the first items draw from
        ``random``'s or numpy's stream (then both are seeded for every item)."""
        items = _SeededItems(train, self.spec.shuffle_seed, self.source)
        first, again = items[(0, 0)][1], items[(0, 0)][1]
        for item in (first, again):
            if isinstance(item, _Failure):
                raise DataError(item.reason, self.source, self.spec)
        if not _same(first, again):
            raise DataError(f"{self.source}: item 0 came out different when prepared twice with the same seeds; a "
                            f"transform keeps a random state of its own (a numpy Generator or random.Random made "
                            f"once). Draw from torch's, random's or numpy's global streams, which are seeded for "
                            f"each item, or from retiarii_ir.runtime.training.item_generator()", self.source,
                            self.spec)
        return _draws_from_python_or_numpy(train)

    def error(self, reason: str) -> DataError:
        return DataError(f"{self.source}: {reason}", self.source, self.spec)

    def _concerns(self, error: BaseException) -> bool:
        """Whether a loader failure is this pipeline's: torch reports a dead worker wherever the
        main process happens to be, so a report naming only others' workers is not."""
        pids = reported_worker_pids(error)
        return not pids or any(self.owns_worker(pid) for pid in pids)

    def owns_worker(self, pid: int) -> bool:
        """Whether a loader worker process of this pipeline has this pid."""
        return any(getattr(w, "pid", None) == pid for loader in (self._train, self._val)
                   for w in getattr(getattr(loader, "_iterator", None) or _LIVE.get(id(loader)), "_workers", []))

    def steps_per_epoch(self) -> int:
        n, b = self.train_size, self.spec.batch_size
        return n // b if self.spec.drop_last else -(-n // b)

    def epoch(self, epoch: int, device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._order.epoch = epoch
        return self._batches(self._train, device)

    def validation(self, device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self._val, device)

    def _batches(self, loader: DataLoader, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        non_blocking = self.spec.pin_memory and torch.device(device).type == "cuda"
        iterator = iter(loader)
        _LIVE[id(loader)] = iterator
        try:
            while True:
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                except DataError:
                    raise
                except Exception as e:  # noqa: BLE001 - a crashed or hung loader worker
                    if not self._concerns(e):
                        raise  # another pipeline's worker died, reported while this one was read
                    lost = isinstance(e, (ConnectionError, EOFError))  # a worker's end of the pipe went away
                    reason = _dead_workers(iterator, 2.0 if lost else 0.0, self) or f"{type(e).__name__}: {first_line(e)}"
                    raise self.error(f"the data loader failed: {reason}") from None
                if isinstance(batch, _Failure):
                    raise DataError(batch.reason, self.source, self.spec)
                if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                    raise self.error(f"a batch is {type(batch).__name__}; items are (input, target)")
                x, y = batch
                yield x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
        finally:
            if not loader.persistent_workers:  # a persistent loader keeps its workers for the next epoch
                _shut_down(iterator)
                _LIVE.pop(id(loader), None)

    def close(self) -> None:
        for loader in (self._train, self._val):
            _shut_down(getattr(loader, "_iterator", None))
            loader._iterator = None  # noqa: SLF001 - persistent workers live on this attribute


_LIVE: dict[int, Any] = {}  # id(loader) -> its iterator in use (whose workers a crash report names)


def reported_worker_pids(error: BaseException) -> set[int]:
    """The loader workers a RuntimeError of torch's says died (none for any other error)."""
    found = re.search(r"DataLoader worker \(pids?\(?s?\)? ?([\d, ]+)\)", str(error))
    if not isinstance(error, RuntimeError) or not found:
        return set()
    return {int(p) for p in re.findall(r"\d+", found.group(1))}


def _dead_workers(iterator: Any, wait: float = 0.0, owner: "Pipeline | None" = None) -> str | None:
    """Which loader workers have died, and how (``exit code 3``, ``killed by SIGKILL``). A
    worker whose pipe broke may not have been reaped yet: ``wait`` gives it that long."""
    deadline = time.monotonic() + wait
    try:
        while True:
            dead = [w for w in getattr(iterator, "_workers", []) if w.exitcode not in (None, 0)]
            if dead or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    except RuntimeError as reported:  # torch's SIGCHLD handler names the worker that died
        if owner is not None and not owner._concerns(reported):
            raise
        return first_line(reported)
    if not dead:
        return None
    return "; ".join(f"loader worker (pid {w.pid}) exited unexpectedly with "
                     f"{'exit code ' + str(w.exitcode) if w.exitcode > 0 else 'signal ' + str(-w.exitcode)}"
                     for w in dead)


def _worker_context():
    """Loader workers are forked where the platform can: they start at once, and they have the
    user's data set as it is, a class from a file the experiment loaded included (a spawned
    worker could not import such a module by name)."""
    import multiprocessing

    return multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


def _loader_worker_start(worker_id: int) -> None:
    """A loader worker dies with the process it prepares batches for, even if that is killed."""
    from ..lifetime import die_with_parent

    die_with_parent()


def _shut_down(iterator: Any) -> None:
    """Stop a loader iterator's worker processes now (not whenever it is collected)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return a == b
