"""An experiment: a model space searched by a strategy, trials trained by an executor, every
step recorded in the store so a crash loses nothing.

    exp = Experiment(SpaceSpec("retiarii_ir.space.hub.digits:DigitsSpace", inputs=[(2, 1, 8, 8)]),
                     Classification("digits", epochs=2, lr=nn.ValueChoice([1e-3, 1e-2], label="lr")),
                     "evolution", max_trials=16, concurrency=4, storage="runs.db", name="digits")
    exp.run()          # or exp.resume() after a crash: finished trials stay, running ones run again
    exp.top(5); exp.export(1, "best/")

The loop keeps ``concurrency`` trials in flight: it asks the strategy for samples, records
each as a RUNNING trial, sends them to the executor in groups (one merged model per group
with ``cross_model``), records each result and only then tells the strategy."""

from __future__ import annotations

import collections
import datetime
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import retiarii_ir as ir

from retiarii_ir.optimizer import EXACT_PASSES
from retiarii_ir.runtime.experiments.driver_lock import DriverLock
from retiarii_ir.runtime.experiments.evaluators import Evaluator
from retiarii_ir.runtime.experiments.executors import Executor, InProcess
from retiarii_ir.runtime.experiments.jobs import JobEvaluation, StoredTrial
from retiarii_ir.runtime.errors import ConfigError, ExperimentError
from retiarii_ir.runtime.references import Trust
from retiarii_ir.runtime.experiments.space_spec import SpaceSpec
from retiarii_ir.runtime.experiments.store import DEFAULT_STORAGE, Store, TrialRecord
from retiarii_ir.runtime.experiments.store_schema import StoreError
from retiarii_ir.runtime.experiments.worker import WorkerContext

INTERRUPTED = "interrupted: the experiment stopped while it ran; re-queued as a new trial"


def _strategies() -> dict[str, type]:
    from retiarii_ir import strategies

    return {"random": strategies.Random, "grid": strategies.GridSearch, "gridsearch": strategies.GridSearch,
            "evolution": strategies.RegularizedEvolution, "regularizedevolution": strategies.RegularizedEvolution,
            "tpe": strategies.TPE, "rl": strategies.PolicyBasedRL, "policybasedrl": strategies.PolicyBasedRL}


def strategy_name(strategy: Any) -> str:
    """A strategy given by name (``"tpe"``) or class -> its canonical name; unknown ones are refused."""
    known = _strategies()
    if isinstance(strategy, str):
        key = strategy.lower().replace("_", "").replace("-", "")
        if key not in known:
            raise ConfigError(f"unknown strategy {strategy!r}; known: random, grid, evolution, tpe, rl")
        return key
    for name, cls in known.items():
        if strategy is cls:
            return name
    raise ConfigError(f"strategy must be a name (random, grid, evolution, tpe, rl) or one of the strategy "
                      f"classes, got {strategy!r}")


@dataclass
class Progress:
    """Counts the progress bar and ``status`` show."""

    done: int = 0
    failed: int = 0
    running: int = 0
    best: float | None = None
    best_trial: int | None = None
    events: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why each failed trial failed
    exhausted: bool = False  # the strategy had no untried sample left before the budget ran out

    def most_common_failure(self) -> tuple[str, int] | None:
        """The reason most failed trials give, and how many give it."""
        return collections.Counter(self.reasons).most_common(1)[0] if self.reasons else None


def check_name(name: Any) -> str:
    """An experiment name: also the name of its artifacts folder, so nothing that leaves it."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise ConfigError(f"experiment name {str(name)[:120]!r}: letters, digits, '_', '.', '-' (up to 100), "
                          f"starting with a letter or digit")
    return name


def check_device(device: Any) -> str:
    """Where evaluators train: "cpu", "cuda" or "cuda:N", checked here rather than in a worker."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this torch sees no CUDA device")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(parsed)


class Experiment:
    """A searched, recorded, resumable experiment (see the module docstring)."""

    def __init__(self, space: SpaceSpec | str, evaluator: Evaluator, strategy: Any = "random", *,
                 max_trials: int | None = None, max_duration: float | None = None, concurrency: int = 4,
                 cross_model: bool = True, storage: str = DEFAULT_STORAGE, name: str | None = None,
                 executor: Executor | None = None, strategy_options: dict | None = None, seed: int = 0,
                 optimize_mode: str = "maximize", retries: int = 0, trial_timeout: float | None = None,
                 passes: tuple[str, ...] = EXACT_PASSES, artifacts: str | None = None,
                 progress: bool = True, config_file: str | None = None, device: str = "cpu") -> None:
        if isinstance(space, str):
            space = SpaceSpec(space)
        if not isinstance(space, SpaceSpec):
            raise ConfigError(f"space must be a SpaceSpec('module:factory', inputs=[...]), got {type(space).__name__}")
        if not isinstance(evaluator, Evaluator):
            raise ConfigError(f"evaluator must be Classification, Regression or FunctionEvaluator, "
                              f"got {type(evaluator).__name__}")
        if max_trials is None and max_duration is None:
            raise ConfigError("give max_trials, max_duration, or both")
        if max_trials is not None and (type(max_trials) is not int or max_trials < 1):
            raise ConfigError(f"max_trials must be an integer >= 1, got {max_trials!r}")
        if max_duration is not None and not (isinstance(max_duration, (int, float)) and max_duration > 0):
            raise ConfigError(f"max_duration must be seconds > 0, got {max_duration!r}")
        if type(concurrency) is not int or concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if type(retries) is not int or retries < 0:
            raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
        if optimize_mode not in ("maximize", "minimize"):
            raise ConfigError(f"optimize_mode must be 'maximize' or 'minimize', got {optimize_mode!r}")
        if name is not None:
            check_name(name)
        self.device = check_device(device)
        space.check()  # a typo in the factory's name is reported here, not in a worker
        self.space, self.evaluator = space, evaluator
        self.strategy = strategy_name(strategy)
        self.strategy_options = dict(strategy_options or {})
        self.max_trials, self.max_duration, self.concurrency = max_trials, max_duration, concurrency
        self.cross_model, self.passes = cross_model, tuple(passes)
        self.seed, self.optimize_mode, self.retries, self.trial_timeout = seed, optimize_mode, retries, trial_timeout
        self.storage = storage
        factory = space.factory.rpartition(":")[2].split(".")[-1].lower() or "experiment"
        self.name = name or f"{factory}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        self.named = name is not None  # resume needs a name the user gave, not today's date
        if isinstance(executor, str):
            from retiarii_ir.runtime.experiments.executors import executor_named

            executor = executor_named(executor)
        if executor is not None and not isinstance(executor, Executor):
            raise ConfigError(f"executor must be InProcess(), ProcessPool(workers), Ray(...) or one of the names "
                              f"in-process, pool, ray; got {executor!r}")
        self.executor = executor or InProcess()
        self.progress, self.config_file = progress, config_file
        self.artifacts = artifacts
        self.last_run: Progress | None = None

    # ------------------------------------------------------------------ definition
    def _store(self) -> Store:
        return Store(self.storage)

    def _artifacts(self, store: Store) -> str:
        from retiarii_ir.runtime.experiments.export import default_artifacts

        return os.path.abspath(self.artifacts) if self.artifacts else default_artifacts(store.url, self.name)

    def search_space(self) -> tuple[ir.ModelSpace, ir.SearchSpace]:
        """The model space, and the search space strategies see: its choices plus the
        evaluator's searched hyperparameters."""
        model_space = self.space.build()
        extra = self.evaluator.choices()
        clash = sorted({c.label for c in extra} & set(model_space.search_space.choices))
        if clash:
            raise ConfigError(f"hyperparameter labels {clash} are also choices of the model space; rename them")
        return model_space, ir.SearchSpace.of([*model_space.search_space, *extra])

    def references(self) -> list[str]:
        """The code this experiment names: its space factory, evaluator function and data loaders."""
        return [self.space.factory, *self.evaluator.references()]

    def trust(self) -> Trust:
        """What its workers may import: exactly the references it names, nothing else of their packages."""
        return Trust.of(self.references())

    def _context(self, store: Store) -> WorkerContext:
        return WorkerContext(store.url, self._artifacts(store), self.trust())

    def _config(self, store: Store, model_space: ir.ModelSpace, search: ir.SearchSpace) -> dict:
        return json.loads(json.dumps({
            "space": self.space.to_dict(), "evaluator": self.evaluator.to_dict(),
            "strategy": {"name": self.strategy, "options": self.strategy_options, "seed": self.seed},
            "model_space": model_space.search_space.to_json(), "search_space": search.to_json(),
            "frozen_weights": model_space.frozen_fingerprint(),
            "max_trials": self.max_trials, "max_duration": self.max_duration, "concurrency": self.concurrency,
            "cross_model": self.cross_model, "passes": list(self.passes), "retries": self.retries,
            "device": self.device,
            "trial_timeout": self.trial_timeout, "optimize_mode": self.optimize_mode,
            "artifacts": self._artifacts(store), "config_file": self.config_file,
            "created": datetime.datetime.now().isoformat(timespec="seconds")}))

    def _build_strategy(self, search: ir.SearchSpace):
        cls = _strategies()[self.strategy]
        try:
            return cls(search, optimize_mode=self.optimize_mode, seed=self.seed, **self.strategy_options)
        except TypeError as e:
            raise ConfigError(f"strategy {self.strategy}: {e}") from None
        except ValueError as e:
            raise ConfigError(f"strategy {self.strategy}: {e}") from None

    # ------------------------------------------------------------------ public API
    def run(self) -> Progress:
        """Start the experiment (its name must be new in the store) and run it to its budget."""
        self.evaluator.check()
        model_space, search = self.search_space()
        strategy = self._build_strategy(search)
        store = self._store()
        config = self._config(store, model_space, search)
        study_id = store.create(self.name, config, self.optimize_mode == "maximize")
        with DriverLock(store, self.name) as lock:
            return self._loop(store, study_id, config, strategy, search, lock)

    def resume(self) -> Progress:
        """Continue a stopped experiment: finished trials are kept (and told to a fresh strategy),
        trials that were running when it stopped are failed as interrupted and run again. The
        trials run as this definition says; it is refused, naming the field, where its space,
        evaluator or data differ from what the store recorded."""
        self.evaluator.check()
        model_space, search = self.search_space()
        store = self._store()
        study_id = store.study_id(self.name)
        config = self._config(store, model_space, search)
        with DriverLock(store, self.name) as lock:
            if difference := recorded_difference(store.config(study_id), config):
                raise ExperimentError(f"experiment {self.name!r} was recorded with another {difference}; "
                                      f"resume runs the definition it started with (or start a new experiment)")
            store.update_config(study_id, {**config, "created": store.config(study_id).get("created")})
            recover(store, study_id, search)
            strategy = self._build_strategy(search)
            return self._loop(store, study_id, config, strategy, search, lock)

    def top(self, k: int = 5) -> list[TrialRecord]:
        from retiarii_ir.runtime.experiments.leaderboard import top

        store = Store(self.storage, create=False)
        return top(store, store.study_id(self.name), k)

    def export(self, rank: int, out_dir: str, stem: str = "model", onnx: bool = True) -> dict[str, str]:
        from retiarii_ir.runtime.experiments.export import export

        store = Store(self.storage, create=False)
        return export(store, self.name, rank, out_dir, stem=stem, onnx=onnx, artifacts=self._artifacts(store),
                      trust=Trust.of(self.references(), packages=self.space.trust))

    # ------------------------------------------------------------------ the loop
    def _job_size(self) -> int:
        """Trials per job: the ones in flight shared out among the workers. Without
        ``cross_model`` a job trains its trials one after another, so the strategy sees
        results in the same groups either way and proposes the same samples."""
        if not self.evaluator.merges:
            return 1
        return max(1, math.ceil(self.concurrency / max(1, self.executor.workers)))

    def _loop(self, store: Store, study_id: int, config: dict, strategy, search: ir.SearchSpace,
              lock: DriverLock) -> Progress:
        """The one search loop (``strategies.search_loop``) with this experiment's jobs, store and
        progress bar plugged in."""
        from retiarii_ir.strategies import Budget, Pending, search_loop

        choices = {c.label: list(c.values) for c in search}
        records = store.trials(study_id)
        backlog = [Pending(r.sample, StoredTrial(r.number, r.trial_id, queued=True)) for r in replay(strategy, records)]
        state = Progress()
        for r in records:
            if r.state == "COMPLETE":
                state.done += 1
                _better(state, r.metric, r.number, self.optimize_mode)
            elif r.state == "FAIL" and not r.interrupted:
                state.failed += 1
                state.reasons.append(r.attrs.get("failure", "failed"))
        job_base = {"space": config["space"], "evaluator": config["evaluator"], "cross_model": self.cross_model,
                    "passes": list(self.passes), "model_space": config["model_space"], "device": self.device,
                    "frozen_weights": config.get("frozen_weights")}
        evaluation = JobEvaluation(self.executor, store, job_base, self.retries, self.trial_timeout)
        bar = _ProgressBar(self.max_trials, state, self.progress, self.name)

        def start(sample: dict) -> Pending:
            return Pending(sample, StoredTrial(*store.add_trial(study_id, sample, choices)))

        def observed(pending: Pending, trial) -> None:
            if trial.status == "succeeded":
                state.done += 1
                _better(state, trial.metric, pending.ticket.number, self.optimize_mode)
            else:
                state.failed += 1
                state.reasons.append(trial.error)
                state.events.append(f"trial {pending.ticket.number} failed: {trial.error}")

        def tick(in_flight: int) -> None:
            if lock.lost:
                raise ExperimentError(f"experiment {self.name!r} was taken over by another driver while this "
                                      f"one stalled; stopping here (its trials are in the store)")
            state.running = in_flight
            bar.update()

        self.executor.start(self._context(store))
        try:
            ended = search_loop(strategy, evaluation, Budget(self.max_trials, self.max_duration),
                                concurrency=self.concurrency, group_size=self._job_size(), backlog=backlog,
                                finished=state.done + state.failed, start=start, on_observed=observed, on_tick=tick,
                                group_key=lambda pending: self.evaluator.group_key(pending.sample))
            state.exhausted, state.running = ended.exhausted, 0
        except BaseException:  # interrupted (Ctrl-C) or failed: no worker goes on with a job nobody reads
            self.executor.close(abort=True)
            raise
        else:
            self.executor.close()
        finally:
            bar.close()
        self.last_run = state
        return state


RECORDED_FIELDS = ("space", "evaluator", "search_space", "model_space", "frozen_weights", "optimize_mode")


def recorded_difference(recorded: dict, current: dict) -> str | None:
    """The first field where an experiment's definition differs from what its store recorded, as
    ``field.path ('recorded' recorded, 'current' now)``; None when they agree."""
    for key in RECORDED_FIELDS:
        if key == "frozen_weights" and recorded.get(key) is None:
            continue  # recorded before fingerprints existed
        if path := _first_difference(recorded.get(key), current.get(key), key):
            where, old, new = path
            if key == "frozen_weights":
                return "frozen_weights: other frozen (pretrained) weights; the file its space loads them from changed"
            return f"{where} ({_short(old)} recorded, {_short(new)} now)"
    return None


def _first_difference(old: Any, new: Any, where: str) -> tuple[str, Any, Any] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if found := _first_difference(old.get(key), new.get(key), f"{where}.{key}"):
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if found := _first_difference(a, b, f"{where}[{i}]"):
                return found
        return None
    return None if old == new else (where, old, new)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _better(state: Progress, metric: float | None, number: int, mode: str) -> None:
    if metric is None:
        return
    if state.best is None or (metric > state.best if mode == "maximize" else metric < state.best):
        state.best, state.best_trial = metric, number


def recover(store: Store, study_id: int, search: ir.SearchSpace) -> int:
    """Trials left RUNNING by a stopped process: each gets a WAITING copy (once, even if this
    itself is interrupted), then is failed as interrupted. Returns how many were re-queued."""
    choices = {c.label: list(c.values) for c in search}
    records = store.trials(study_id)
    copied = {r.attrs.get("requeued_from") for r in records if "requeued_from" in r.attrs}
    count = 0
    for r in records:
        if r.state != "RUNNING":
            continue
        if r.number not in copied:
            if any(label not in choices or value not in choices[label] for label, value in r.sample.items()):
                raise StoreError(f"trial {r.number} in {store.url} holds a sample this space cannot give "
                                 f"({str(r.sample)[:200]}); this store was not written by this experiment")
            store.add_trial(study_id, r.sample, choices, state="WAITING", attrs={"requeued_from": r.number})
        store.fail(r.trial_id, INTERRUPTED, {"interrupted": True})
        count += 1
    return count


def replay(strategy, records: list[TrialRecord]) -> list[TrialRecord]:
    """Tell a fresh strategy what the store holds, in trial order; returns the queued trials
    (adopted as pending: they run first)."""
    waiting = []
    for r in sorted(records, key=lambda r: r.number):
        if r.state == "COMPLETE":
            strategy.adopt(r.sample)
            strategy.observe(r.sample, r.metric)
        elif r.state == "FAIL" and not r.interrupted:
            strategy.adopt(r.sample)
            strategy.observe_failure(r.sample, r.attrs.get("failure", "failed"))
        elif r.state == "WAITING":
            strategy.adopt(r.sample)
            waiting.append(r)
    return waiting


class _ProgressBar:
    """tqdm on stderr: trials done of the budget with ETA, running, failed and the best metric."""

    def __init__(self, total: int | None, state: Progress, enabled: bool, name: str) -> None:
        self.state, self.bar, self._shown = state, None, 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=state.done + state.failed, desc=name, unit="trial",
                            file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(self) -> None:
        if self.bar is None:
            return
        s = self.state
        for event in s.events[self._shown:]:
            self.bar.write(f"  {event}", file=sys.stderr)
        self._shown = len(s.events)
        self.bar.n = s.done + s.failed
        best = f"{s.best:.4g} (#{s.best_trial})" if s.best is not None else "-"
        self.bar.set_postfix_str(f"done {s.done} running {s.running} failed {s.failed} best {best}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.update()
            self.bar.close()
