"""The one search loop: propose, evaluate (alone or merged), observe, budget, stop.

``run_strategy`` and ``Experiment`` both run this loop; what differs is the ``Evaluation`` they
plug in (a callable in this process, a thread pool, or jobs on an executor with a store behind
them) and what they do when a sample starts or a trial is observed."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from retiarii_ir.space import Sample

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


@dataclass
class Pending:
    """A sample handed out for evaluation and not yet observed; ``ticket`` is the caller's own
    handle on it (an experiment's stored trial)."""

    sample: Sample
    ticket: Any = None


@dataclass(frozen=True)
class Failure:
    """The outcome of a trial that failed: the exception or the reason."""

    error: BaseException | str


class Evaluation(Protocol):
    """Where trials are evaluated. ``submit`` takes a group (trained together, merged or one
    after another); ``collect`` returns the trials that ended, each with its metric or a
    ``Failure``, waiting up to ``wait_s`` seconds for the first. A trial submitted is collected
    exactly once; an evaluation may run it again on its own (a retry) before it returns it."""

    def submit(self, group: list[Pending]) -> None: ...

    def collect(self, wait_s: float) -> list[tuple[Pending, Any]]: ...


@dataclass
class LoopResult:
    """How a loop ended: trials observed in it, and whether the space ran out before the budget."""

    observed: int
    exhausted: bool


def search_loop(strategy: Strategy, evaluation: Evaluation, budget: Budget, *, concurrency: int = 1,
                group_size: int = 1, backlog: Iterable[Pending] = (), finished: int = 0,
                start: Callable[[Sample], Pending] = Pending, on_observed: Callable[[Pending, Trial], None] | None = None,
                on_tick: Callable[[int], None] | None = None, group_key: Callable[[Pending], Any] | None = None,
                wait_s: float = 0.5) -> LoopResult:
    """Keep ``concurrency`` trials in flight: hand out the ``backlog`` first (samples the strategy
    already knows, queued before a stop), then new proposals, each made into a ``Pending`` by
    ``start``; submit them in groups of ``group_size``; tell the strategy each outcome, then
    ``on_observed``. The budget counts ``finished`` trials (from before) and those in flight;
    once it is spent, or the space has no sample left, nothing new starts and every trial in
    flight is still observed. ``on_tick(in_flight)`` runs each turn (it may raise to stop).
    ``group_key(pending)`` orders the new trials before they are cut into groups, so trials with
    equal keys (the same data) share a group where they can."""
    if concurrency < 1:
        raise StrategyError(f"concurrency must be >= 1, got {concurrency}")
    queued, began = deque(backlog), time.monotonic()
    in_flight, observed, exhausted = 0, 0, False

    def budget_left(extra: int) -> bool:
        if budget.max_trials is not None and finished + observed + in_flight + extra >= budget.max_trials:
            return False
        return budget.max_seconds is None or time.monotonic() - began < budget.max_seconds

    while True:
        fresh: list[Pending] = []
        while in_flight + len(fresh) < concurrency:
            if queued:
                fresh.append(queued.popleft())
                continue
            if exhausted or not budget_left(len(fresh)):
                break
            try:
                sample = strategy.propose()
            except SpaceExhausted:
                exhausted = True
                break
            fresh.append(start(sample))
        if group_key is not None:
            fresh.sort(key=group_key)  # stable: proposal order within a key
        for i in range(0, len(fresh), max(1, group_size)):
            evaluation.submit(fresh[i:i + group_size])
        in_flight += len(fresh)
        if on_tick is not None:
            on_tick(in_flight)
        if not in_flight:
            return LoopResult(observed, exhausted)
        for pending, outcome in evaluation.collect(wait_s):
            in_flight -= 1
            observed += 1
            if isinstance(outcome, Failure):
                trial = strategy.observe_failure(pending.sample, outcome.error)
            else:
                trial = strategy.observe(pending.sample, outcome)
            if on_observed is not None:
                on_observed(pending, trial)
