"""How a trial is judged. Two kinds, both plain data that any worker rebuilds:

- ``Classification(dataset, epochs=, optimizer=, lr=, batch_size=...)`` (and ``Regression``):
  the batching trainer trains the proposals in flight, merged into one model when the
  experiment asks for it; the metric is validation accuracy (negative MSE for regression).
- ``FunctionEvaluator(fn, **params)``: ``fn(model, **params) -> metric`` for anything else;
  ``report(value)`` inside it records an intermediate value.

A hyperparameter given as ``nn.ValueChoice([...], label=...)`` joins the search space."""

from __future__ import annotations

import contextlib

from typing import Any, Callable

import retiarii_ir as ir
from retiarii_ir import nn

from retiarii_ir.runtime.errors import ConfigError
from retiarii_ir.runtime.references import Trust, check_reference, reference_of, resolve

_TRAIN_FIELDS = ("epochs", "optimizer", "lr", "batch_size", "momentum", "weight_decay", "seed", "max_steps",
                 "grad_clip", "shuffle_seed", "schedule")
_REQUIRED_TRAIN_FIELDS = ("dataset", "loss", *_TRAIN_FIELDS[:-1])  # a schedule came later: its default holds


def _encode(name: str, value: Any) -> Any:
    if isinstance(value, nn.ValueChoice):
        return {"choice": value.label, "values": list(value.candidates)}
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    raise ConfigError(f"hyperparameter {name}={value!r}: give a plain number or string, or an nn.ValueChoice")


def _is_choice(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"choice", "values"}


class Evaluator:
    """Base: hyperparameters (plain or searched) and a JSON form."""

    kind = ""
    merges = False  # whether several trials can train as one merged model

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = {name: _encode(name, value) for name, value in params.items()}

    def choices(self) -> list[ir.Choice]:
        """The searched hyperparameters, as choices of the experiment's search space."""
        return [ir.Choice(v["choice"], tuple(v["values"]), None, "value") for v in self.params.values()
                if _is_choice(v)]

    def resolve(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The hyperparameters with each searched one taken from ``sample``."""
        missing = sorted(v["choice"] for v in self.params.values() if _is_choice(v) and v["choice"] not in sample)
        if missing:
            raise ConfigError(f"the sample {str(sample)[:200]} has no value for the hyperparameter(s) {missing}")
        return {name: sample[v["choice"]] if _is_choice(v) else v for name, v in self.params.items()}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": self.params}

    def references(self) -> list[str]:
        """The code this evaluator names (imported where trials run)."""
        dataset = self.params.get("dataset")
        names = dataset["values"] if _is_choice(dataset) else [dataset]
        return [d for d in names if isinstance(d, str) and ":" in d]

    def group_key(self, sample: dict[str, Any]) -> str:
        return ""

    @staticmethod
    def from_dict(raw: Any) -> "Evaluator":
        """The evaluator a store or job line holds; checked, nothing imported."""
        kinds = {"classification": Classification, "regression": Regression, "function": FunctionEvaluator}
        if not isinstance(raw, dict) or raw.get("kind") not in kinds or set(raw) - {"kind", "params", "fn"}:
            raise ConfigError(f"malformed evaluator {str(raw)[:200]}: expected kind "
                              f"(classification, regression, function) and params")
        params = raw.get("params")
        if not isinstance(params, dict) or not all(isinstance(k, str) and _is_param(v) for k, v in params.items()):
            raise ConfigError(f"malformed evaluator params {str(params)[:200]}: plain values or "
                              f"{{'choice': label, 'values': [...]}}")
        if raw["kind"] != "function" and (missing := sorted(set(_REQUIRED_TRAIN_FIELDS) - set(params))):
            raise ConfigError(f"malformed evaluator params: {raw['kind']} needs {missing}")
        evaluator = kinds[raw["kind"]].__new__(kinds[raw["kind"]])
        evaluator.params = dict(params)
        if raw["kind"] == "function":
            evaluator.fn = check_reference(raw.get("fn"))
        for reference in evaluator.references():
            check_reference(reference)
        return evaluator


def _is_param(value: Any) -> bool:
    if _is_choice(value):
        return (isinstance(value["choice"], str) and isinstance(value["values"], list) and value["values"]
                and all(_is_plain(v) for v in value["values"]))
    return isinstance(value, (int, float, str, bool, type(None)))


def _is_plain(value: Any, depth: int = 0) -> bool:
    """A JSON value a searched candidate may be: scalars and short nested lists."""
    if isinstance(value, list):
        return depth < 8 and all(_is_plain(v, depth + 1) for v in value)
    return isinstance(value, (int, float, str, bool, type(None)))


def _reference_or_name(value: Any) -> Any:
    """A function given as an object becomes its reference; a ``module:name`` string is checked."""
    if value is None or isinstance(value, nn.ValueChoice):
        return value
    if not isinstance(value, str):
        return reference_of(value)
    return check_reference(value) if ":" in value else value


class Classification(Evaluator):
    """Train with the batching trainer; metric: validation accuracy (or ``metric``).

    ``dataset`` is a registered name (``retiarii_ir.runtime.training.register_dataset``) or the
    user's factory, by reference or as the function itself (``"mypkg.data:make"``, called in each
    worker with ``data_kwargs``), returning map-style ``(train, validation)`` Datasets (or a
    ``Dataset`` of tensors). The DataLoader settings (``num_workers``, ``pin_memory``,
    ``prefetch_factor``, ``persistent_workers``, ``drop_last``, ``collate_fn``) go into each trial's
    ``DataSpec``: trials with equal specs are grouped together and read each batch once. ``loss``
    and ``metric`` may name the user's functions (``loss(output, target)``, ``metric(outputs,
    targets)``)."""

    kind = "classification"
    merges = True
    loss = "cross_entropy"

    def __init__(self, dataset: str | Callable = "digits", *, epochs: Any = 1, optimizer: Any = "adam",
                 lr: Any = 1e-3, batch_size: Any = 64, momentum: Any = 0.0, weight_decay: Any = 0.0, seed: int = 0,
                 max_steps: int | None = None, grad_clip: float | None = None, shuffle_seed: int = 0,
                 schedule: Any = "constant", num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, persistent_workers: bool = False, drop_last: bool = False,
                 collate_fn: str | Callable | None = None, data_kwargs: dict | None = None,
                 loss: str | Callable | None = None, metric: str | Callable | None = None,
                 timeout: float = 300.0) -> None:
        import json

        values = dict(epochs=epochs, optimizer=optimizer, lr=lr, batch_size=batch_size, momentum=momentum,
                      weight_decay=weight_decay, seed=seed, max_steps=max_steps, grad_clip=grad_clip,
                      shuffle_seed=shuffle_seed, schedule=schedule, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=prefetch_factor, persistent_workers=persistent_workers, drop_last=drop_last,
                      collate_fn=_reference_or_name(collate_fn), timeout=timeout,
                      loss=_reference_or_name(loss) or self.loss, metric=_reference_or_name(metric))
        try:
            kwargs = json.dumps(data_kwargs or {}, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data_kwargs must be plain JSON values: {e}") from None
        super().__init__({"dataset": _reference_or_name(dataset), **values, "data_kwargs": kwargs})

    def references(self) -> list[str]:
        names = super().references()
        for key in ("collate_fn", "loss", "metric"):
            value = self.params.get(key)
            if isinstance(value, str) and ":" in value:
                names.append(value)
        return names

    def train_spec(self, sample: dict[str, Any]):
        """(DataSpec, TrainConfig) of one trial."""
        from retiarii_ir.optimizer import DataSpec, TrainConfig

        p = self.resolve(sample)
        data = DataSpec(p["dataset"], batch_size=p["batch_size"], shuffle_seed=p["shuffle_seed"],
                        drop_last=p.get("drop_last", False), num_workers=p.get("num_workers", 0),
                        prefetch_factor=p.get("prefetch_factor"), pin_memory=p.get("pin_memory", False),
                        persistent_workers=p.get("persistent_workers", False), collate_fn=p.get("collate_fn"),
                        timeout=p.get("timeout", 300.0), kwargs=p.get("data_kwargs", "{}"))
        train = TrainConfig(loss=p["loss"], metric=p.get("metric"), optimizer=p["optimizer"], lr=p["lr"],
                            momentum=p["momentum"], weight_decay=p["weight_decay"], epochs=p["epochs"],
                            seed=p["seed"], max_steps=p["max_steps"], grad_clip=p["grad_clip"],
                            schedule=p.get("schedule", "constant"))
        return data, train

    def group_key(self, sample: dict[str, Any]) -> str:
        """Trials whose keys are equal read the same batches: the experiment puts them in one job."""
        import dataclasses
        import json

        return json.dumps(dataclasses.asdict(self.train_spec(sample)[0]), sort_keys=True)

    def check(self) -> None:
        """Every fixed and every candidate setting makes a valid recipe (fails here, not in a worker)."""
        for choice in self.choices() or [None]:
            for value in (choice.values if choice else [None]):
                sample = {c.label: c.values[0] for c in self.choices()}
                if choice:
                    sample[choice.label] = value
                try:
                    self.train_spec(sample)
                except ir.IRError as e:
                    raise ConfigError(f"{type(self).__name__}: {e}") from None


class Regression(Classification):
    """The same, with mean squared error; metric: negative validation MSE (higher is better)."""

    kind = "regression"
    loss = "mse"


class FunctionEvaluator(Evaluator):
    """``fn(model, **params) -> metric``: ``model`` is the trial's generated PyTorch module,
    fresh from its constructor; what ``fn`` leaves in its weights is the trial's checkpoint."""

    kind = "function"

    def __init__(self, fn: Callable | str, **params: Any) -> None:
        super().__init__(params)
        self.fn = reference_of(fn)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "fn": self.fn}

    def references(self) -> list[str]:
        return [self.fn]

    def function(self, trust: Trust | None = None) -> Callable:
        """The checked function (``trust``: what a reference read from data may import)."""
        return resolve(self.fn, trust)

    def check(self) -> None:
        """The function resolves here, before any worker starts."""
        self.function()


# --------------------------------------------------------------------- intermediate reports
_REPORTER: list[Callable[[float], None]] = []


def report(value: float) -> None:
    """Record an intermediate value of the trial ``fn`` is evaluating (one step per call);
    outside an experiment it does nothing."""
    if _REPORTER:
        _REPORTER[-1](float(value))


@contextlib.contextmanager
def reporting(record: Callable[[float], None]):
    """Within the block, ``report(value)`` calls ``record(value)`` (the worker's store writer)."""
    _REPORTER.append(record)
    try:
        yield
    finally:
        _REPORTER.pop()
