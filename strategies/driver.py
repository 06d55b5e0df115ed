"""Drive a strategy in this process: ``run_strategy`` plugs a callable (run here, in a thread
pool, or on K samples at once) into the one search loop (``loop.py``)."""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any

from retiarii_ir.space import Sample

from .base import Strategy, StrategyError, Trial
from .loop import Budget, Failure, Pending, search_loop


def _print_progress(strategy: Strategy, trial: Trial, budget: Budget) -> None:
    best = strategy.best()
    total = f"/{budget.max_trials}" if budget.max_trials else ""
    result = f"{trial.metric:.6g}" if trial.status == "succeeded" else f"{trial.status} ({trial.error})"
    best_text = f"{best.metric:.6g} (trial {best.number})" if best else "none yet"
    print(f"trial {trial.number}{total}: {result}   best {best_text}", file=sys.stderr, flush=True)


def run_strategy(strategy: Strategy, evaluate: Callable[[Sample], Any] | None, budget: Budget, *,
                 concurrency: int = 1, executor: Executor | None = None,
                 progress: bool | Callable[[Trial], None] = False,
                 evaluate_many: Callable[[list[Sample]], list[Any]] | None = None) -> list[Trial]:
    """Ask ``concurrency`` samples before telling any, evaluate them, tell each result.

    ``evaluate(sample)`` returns the metric; an exception, None or NaN is a failed trial
    told to the strategy. Without an ``executor`` trials run one after another in proposal
    order (deterministic, still K proposals outstanding); with one, K run at once. With
    ``evaluate_many(samples)`` the K samples are evaluated together (one merged training
    group) and each entry of its list is one result. When the budget is spent no new trial
    starts, and every started trial is still observed. Returns the strategy's history.
    """
    if concurrency < 1:
        raise StrategyError(f"concurrency must be >= 1, got {concurrency}")
    if evaluate_many is not None:
        if executor is not None or evaluate is not None:
            raise StrategyError("pass either evaluate (with an optional executor) or evaluate_many, not both")
        evaluation, group_size = _Groups(evaluate_many), concurrency
    elif not callable(evaluate):
        raise StrategyError("evaluate must be a callable sample -> metric")
    else:
        evaluation = _Inline(evaluate) if executor is None else _Threads(evaluate, executor, strategy)
        group_size = 1
    report = progress if callable(progress) else (
        (lambda trial: _print_progress(strategy, trial, budget)) if progress else None)
    search_loop(strategy, evaluation, budget, concurrency=concurrency, group_size=group_size,
                on_observed=(lambda pending, trial: report(trial)) if report else None)
    return strategy.history


def _outcome(evaluate: Callable[[Sample], Any], sample: Sample) -> Any:
    try:
        return evaluate(dict(sample))
    except Exception as exc:  # noqa: BLE001 - any crash of a trial is data for the strategy
        return Failure(exc)


class _Inline:
    """Trials evaluated here, one per ``collect``, in the order they were proposed."""

    def __init__(self, evaluate: Callable[[Sample], Any]) -> None:
        self.evaluate, self.queue = evaluate, deque()

    def submit(self, group: list[Pending]) -> None:
        self.queue.extend(group)

    def collect(self, wait_s: float) -> list[tuple[Pending, Any]]:
        pending = self.queue.popleft()
        return [(pending, _outcome(self.evaluate, pending.sample))]


class _Threads:
    """Trials evaluated by a ``concurrent.futures`` executor, K at once."""

    def __init__(self, evaluate: Callable[[Sample], Any], executor: Executor, strategy: Strategy) -> None:
        self.evaluate, self.executor, self.strategy = evaluate, executor, strategy
        self.running: dict[Future, Pending] = {}

    def submit(self, group: list[Pending]) -> None:
        for pending in group:
            self.running[self.executor.submit(self.evaluate, dict(pending.sample))] = pending

    def collect(self, wait_s: float) -> list[tuple[Pending, Any]]:
        done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
        ended = []
        for future in sorted(done, key=lambda f: strategy_order(self.running[f].sample, self.strategy)):
            pending = self.running.pop(future)
            try:
                ended.append((pending, future.result()))
            except Exception as exc:  # noqa: BLE001
                ended.append((pending, Failure(exc)))
        return ended


class _Groups:
    """Each group evaluated together by ``evaluate_many``; if the call raises, or returns another
    number of results, every trial of the group failed."""

    def __init__(self, evaluate_many: Callable[[list[Sample]], list[Any]]) -> None:
        self.evaluate_many, self.groups = evaluate_many, deque()

    def submit(self, group: list[Pending]) -> None:
        self.groups.append(group)

    def collect(self, wait_s: float) -> list[tuple[Pending, Any]]:
        group = self.groups.popleft()
        try:
            outcomes = list(self.evaluate_many([dict(p.sample) for p in group]))
            if len(outcomes) != len(group):
                raise StrategyError(f"evaluate_many returned {len(outcomes)} results for {len(group)} samples")
        except Exception as exc:  # noqa: BLE001 - the whole group failed: each trial is told so
            outcomes = [exc] * len(group)
        return [(p, Failure(o) if isinstance(o, BaseException) else o) for p, o in zip(group, outcomes)]


def strategy_order(sample: Sample, strategy: Strategy) -> str:
    """Tie-break for trials finishing together: a stable order, so runs are repeatable."""
    return strategy.space.sample_key(sample)
