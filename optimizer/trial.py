"""A trial as plain data: a concrete graph plus how to train it.

Everything here is JSON-serialisable (the graph through its own versioned JSON), so a
trial can cross process and machine boundaries without pickling live objects. Trials with
equal ``DataSpec`` read the same batches in the same order: the optimizer loads them once.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from retiarii_ir import Graph
from retiarii_ir.errors import IRError


class TrialSpecError(IRError):
    """A trial's training configuration is malformed."""


LOSSES = ("cross_entropy", "mse")
METRICS = ("accuracy", "neg_mse")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
FROZEN_MODES = ("train", "eval")  # eval: modules whose parameters are all frozen run in eval mode  # cosine: annealed from lr towards 0 over all steps


@dataclass(frozen=True)
class DataSpec:
    """Which batches a trial reads, as plain data: the data set and the DataLoader settings.

    ``dataset`` is a registered name (in-memory tensors, the fast path) or a reference to the
    user's factory, ``"mypkg.data:make"`` or ``"path/to/data.py:make"``, called with ``kwargs``
    and returning map-style ``torch.utils.data.Dataset``s ``(train, validation)``. Sample order
    and every random draw of an item's transforms derive from (``shuffle_seed``, epoch, index),
    so equal specs give equal batches, alone or merged, for any ``num_workers``: a merged group
    reads them once. ``collate_fn`` is a reference too; ``timeout`` bounds the wait for a loader
    worker's batch (seconds), so a hung worker fails its trials instead of hanging them."""

    dataset: str = "digits"
    batch_size: int = 64
    shuffle_seed: int = 0
    drop_last: bool = False
    num_workers: int = 0
    prefetch_factor: int | None = None
    pin_memory: bool = False
    persistent_workers: bool = False
    collate_fn: str | None = None
    timeout: float = 300.0
    kwargs: Any = "{}"  # a dict of JSON values; kept as canonical JSON text (hashable, exact in JSON)

    def __post_init__(self) -> None:
        _check(isinstance(self.dataset, str) and self.dataset and len(self.dataset) <= 1000,
               f"dataset must be a name or a 'module:factory' reference, got {str(self.dataset)[:80]!r}")
        _check(type(self.batch_size) is int and self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size!r}")
        _check(type(self.shuffle_seed) is int, f"shuffle_seed must be an integer, got {self.shuffle_seed!r}")
        _check(type(self.drop_last) is bool, f"drop_last must be True or False, got {self.drop_last!r}")
        _check(type(self.num_workers) is int and 0 <= self.num_workers <= 256,
               f"num_workers must be an integer from 0 to 256, got {self.num_workers!r}")
        _check(self.prefetch_factor is None or type(self.prefetch_factor) is int and self.prefetch_factor > 0,
               f"prefetch_factor must be None or > 0, got {self.prefetch_factor!r}")
        _check(self.prefetch_factor is None or self.num_workers > 0, "prefetch_factor needs num_workers > 0")
        _check(not self.persistent_workers or self.num_workers > 0, "persistent_workers needs num_workers > 0")
        for name in ("pin_memory", "persistent_workers"):
            _check(type(getattr(self, name)) is bool, f"{name} must be True or False, got {getattr(self, name)!r}")
        _check(self.collate_fn is None or isinstance(self.collate_fn, str) and ":" in self.collate_fn,
               f"collate_fn must be a 'module:function' reference, got {self.collate_fn!r}")
        _check(isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0,
               f"timeout must be seconds > 0, got {self.timeout!r}")
        object.__setattr__(self, "kwargs", _canonical_kwargs(self.kwargs))

    @property
    def is_reference(self) -> bool:
        """A factory named by reference (``module:factory``), not a registered name."""
        return ":" in self.dataset

    def factory_kwargs(self) -> dict[str, Any]:
        return json.loads(self.kwargs)


def _canonical_kwargs(kwargs: Any) -> str:
    """The factory's keyword arguments as canonical JSON text: equal arguments, equal text."""
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except ValueError:
            raise TrialSpecError(f"data kwargs text is not JSON: {kwargs[:80]!r}") from None
    _check(isinstance(kwargs, dict) and all(isinstance(k, str) and k.isidentifier() for k in kwargs),
           f"data kwargs must be a dict of keyword names to values, got {str(kwargs)[:80]}")
    try:
        return json.dumps(kwargs, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TrialSpecError(f"data kwargs must be plain JSON values: {e}") from None


@dataclass(frozen=True)
class TrainConfig:
    """Loss, metric, optimizer and its hyperparameters, learning-rate schedule, epochs, seed and
    gradient clipping. ``loss`` and ``metric`` are built-in names or references to the user's
    functions: ``loss(output, target) -> scalar tensor`` (per step) and ``metric(outputs,
    targets) -> float`` (over the validation split). Without a ``metric``: accuracy for
    classification, negative MSE for regression (as the data set or the loss says)."""

    loss: str = "cross_entropy"
    metric: str | None = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 1
    max_steps: int | None = None  # stop an epoch loop early (tests, quick runs)
    seed: int = 0
    grad_clip: float | None = None
    schedule: str = "constant"

    def __post_init__(self) -> None:
        _check(isinstance(self.loss, str) and (self.loss in LOSSES or ":" in self.loss),
               f"loss must be one of {LOSSES} or a 'module:function' reference, got {self.loss!r}")
        _check(self.metric is None or isinstance(self.metric, str) and (self.metric in METRICS or ":" in self.metric),
               f"metric must be one of {METRICS} or a 'module:function' reference, got {self.metric!r}")
        _check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
                   f"{name} must be a finite number >= 0, got {value!r}")
        _check(type(self.epochs) is int and self.epochs > 0, f"epochs must be > 0, got {self.epochs!r}")
        _check(self.max_steps is None or type(self.max_steps) is int and self.max_steps > 0,
               f"max_steps must be > 0, got {self.max_steps!r}")
        _check(self.grad_clip is None or isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0,
               f"grad_clip must be > 0, got {self.grad_clip!r}")
        _check(isinstance(self.betas, (tuple, list)) and len(self.betas) == 2 and all(
            isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
            f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(self.betas))


@dataclass
class Trial:
    """One model to train: its graph, its data and its recipe.

    ``frozen`` names state_dict keys that do not train (a pretrained backbone); the optimizer
    computes modules that read only frozen, equal weights once for every trial that contains
    them. ``frozen_mode="eval"`` runs every module whose parameters are all frozen in eval mode
    (batch norms use and keep their running statistics, dropout is off), as a user fine-tuning
    a head does; ``eval_modules`` names such modules one by one.

    The weights a trial starts from: ``initial_state`` if given; else, for a graph traced from a
    model in this process (``ir.trace``), that model's own weights; else fresh ones from
    ``train.seed`` (a graph from a space sample, from JSON, or edited). ``starts_from`` says which."""

    name: str
    graph: Graph
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    frozen: tuple[str, ...] = ()
    initial_state: dict[str, Any] | None = None
    frozen_mode: str = "train"
    eval_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and self.name, "a trial needs a name")
        _check(isinstance(self.graph, Graph), f"trial {self.name!r}: graph must be a retiarii_ir.Graph")
        _check(self.frozen_mode in FROZEN_MODES,
               f"trial {self.name!r}: frozen_mode must be one of {FROZEN_MODES}, got {self.frozen_mode!r}")
        for field_name in ("frozen", "eval_modules"):
            value = getattr(self, field_name)
            _check(isinstance(value, (tuple, list, set, frozenset)),
                   f"trial {self.name!r}: {field_name} is a list of names, got {type(value).__name__}")
        self.frozen = tuple(self.frozen)
        self.eval_modules = tuple(self.eval_modules)
        _check(all(isinstance(p, str) for p in (*self.frozen, *self.eval_modules)),
               f"trial {self.name!r}: frozen and eval_modules must hold names (strings)")

    @property
    def starts_from(self) -> str:
        """Where the starting weights come from: "initial_state", "traced model" or "seed N"."""
        if self.initial_state is not None:
            return "initial_state"
        if self.graph.weights is not None:
            return "traced model"
        return f"seed {self.train.seed}"

    def to_json(self) -> str:
        """The trial as JSON (initial weights are not included: ship them as a checkpoint)."""
        return json.dumps({"name": self.name, "graph": json.loads(self.graph.to_json()),
                           "data": asdict(self.data), "train": asdict(self.train), "frozen": list(self.frozen),
                           "frozen_mode": self.frozen_mode, "eval_modules": list(self.eval_modules)})

    @staticmethod
    def from_json(text: str, trust: tuple[str, ...] = ()) -> "Trial":
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise TrialSpecError(f"trial JSON is not valid: {e}") from None
        _check(isinstance(raw, dict), "a trial must be a JSON object")
        graph = Graph.from_json(json.dumps(raw.get("graph")), trust=trust)
        lists = {key: raw.get(key, []) for key in ("frozen", "eval_modules")}
        _check(all(isinstance(v, list) for v in lists.values()), "a trial's frozen and eval_modules must be lists")
        return Trial(raw.get("name"), graph, _dataclass(DataSpec, raw.get("data", {})),
                     _dataclass(TrainConfig, raw.get("train", {})), tuple(lists["frozen"]),
                     frozen_mode=raw.get("frozen_mode", "train"), eval_modules=tuple(lists["eval_modules"]))


def _dataclass(cls: type, raw: Any) -> Any:
    _check(isinstance(raw, dict), f"{cls.__name__} must be an object")
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    _check(not unknown, f"{cls.__name__} has unknown fields {sorted(unknown)}")
    try:
        return cls(**raw)
    except TypeError as e:
        raise TrialSpecError(f"{cls.__name__}: {e}") from None


def _check(condition: Any, message: str) -> None:
    if not condition:
        raise TrialSpecError(message)
