"""Drive a strategy: keep K trials in flight, evaluate, tell, stop on budget, lose nothing."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from typing import Any

from retiarii_ir.space.search_space import Sample

from .base import SpaceExhausted, Strategy, StrategyError, Trial


@dataclass(frozen=True)
class Budget:
    """Stop proposing after ``max_trials`` trained trials or ``max_seconds`` of wall time."""

    max_trials: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_trials is None and self.max_seconds is None:
            raise StrategyError("a Budget needs max_trials, max_seconds, or both")
        if self.max_trials is not None and self.max_trials < 1:
            raise StrategyError(f"max_trials must be >= 1, got {self.max_trials}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise StrategyError(f"max_seconds must be > 0, got {self.max_seconds}")


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
    order (deterministic, still K proposals outstanding); with one, K run at once. When the
    budget is spent no new trial starts, and every started trial is still observed.
    Returns the strategy's history.
    """
    if concurrency < 1:
        raise StrategyError(f"concurrency must be >= 1, got {concurrency}")
    if evaluate_many is not None:
        if executor is not None or evaluate is not None:
            raise StrategyError("pass either evaluate (with an optional executor) or evaluate_many, not both")
        return _run_in_groups(strategy, evaluate_many, budget, concurrency, progress)
    if not callable(evaluate):
        raise StrategyError("evaluate must be a callable sample -> metric")
    start, started = time.monotonic(), 0
    report = progress if callable(progress) else (
        (lambda trial: _print_progress(strategy, trial, budget)) if progress else None)

    def may_start() -> bool:
        if budget.max_trials is not None and started >= budget.max_trials:
            return False
        return budget.max_seconds is None or time.monotonic() - start < budget.max_seconds

    def tell(sample: Sample, outcome: Future | Any) -> None:
        try:
            metric = outcome.result() if isinstance(outcome, Future) else outcome
        except Exception as exc:  # noqa: BLE001 - any crash of a trial is data for the strategy
            trial = strategy.observe_failure(sample, exc)
        else:
            trial = strategy.observe(sample, metric)
        if report:
            report(trial)

    def evaluate_here(sample: Sample) -> Future:
        future: Future = Future()
        try:
            future.set_result(evaluate(dict(sample)))
        except Exception as exc:  # noqa: BLE001
            future.set_exception(exc)
        return future

    queue: deque[Sample] = deque()
    running: dict[Future, Sample] = {}
    exhausted = False
    while True:
        while not exhausted and len(queue) + len(running) < concurrency and may_start():
            try:
                sample = strategy.propose()
            except SpaceExhausted:
                exhausted = True
                break
            started += 1
            if executor is None:
                queue.append(sample)
            else:
                running[executor.submit(evaluate, dict(sample))] = sample
        if executor is None:
            if not queue:
                break
            sample = queue.popleft()
            tell(sample, evaluate_here(sample))
        else:
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: strategy_order(running[f], strategy)):
                tell(running.pop(future), future)
    return strategy.history


def _run_in_groups(strategy: Strategy, evaluate_many: Callable[[list[Sample]], list[Any]], budget: Budget,
                   concurrency: int, progress: bool | Callable[[Trial], None]) -> list[Trial]:
    """Ask ``concurrency`` samples, evaluate them together (one merged training group), tell
    each result; repeat. An entry of ``evaluate_many``'s list that is an exception, None or
    NaN is a failed trial; if the call itself raises, every sample of the group failed."""
    start, started = time.monotonic(), 0
    report = progress if callable(progress) else (
        (lambda trial: _print_progress(strategy, trial, budget)) if progress else None)
    while True:
        group: list[Sample] = []
        while len(group) < concurrency and (budget.max_trials is None or started < budget.max_trials) and (
                budget.max_seconds is None or time.monotonic() - start < budget.max_seconds):
            try:
                group.append(strategy.propose())
            except SpaceExhausted:
                break
            started += 1
        if not group:
            return strategy.history
        try:
            outcomes = list(evaluate_many([dict(s) for s in group]))
            if len(outcomes) != len(group):
                raise StrategyError(f"evaluate_many returned {len(outcomes)} results for {len(group)} samples")
        except Exception as exc:  # noqa: BLE001 - the whole group failed: each trial is told so
            outcomes = [exc] * len(group)
        for sample, outcome in zip(group, outcomes):
            trial = (strategy.observe_failure(sample, outcome) if isinstance(outcome, BaseException)
                     else strategy.observe(sample, outcome))
            if report:
                report(trial)


def strategy_order(sample: Sample, strategy: Strategy) -> str:
    """Tie-break for trials finishing together: a stable order, so runs are repeatable."""
    return strategy.space.sample_key(sample)
