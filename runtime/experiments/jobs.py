"""An experiment's evaluation for the search loop: groups of trials as JSON jobs on an executor,
each result written to the store before the strategy hears of it (so a crash loses nothing).

A job that fails as a whole runs again trial by trial (one member may have brought it down); a
trial that fails runs again while it has retries left. Only a trial's last outcome goes back to
the loop."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from retiarii_ir.strategies import Failure, Pending

from .executors import Executor
from .store import Store

RESULT_FIELDS = ("train_seconds", "trained_as", "traceback")


@dataclass
class StoredTrial:
    """A pending trial's place in the store."""

    number: int
    trial_id: int
    attempts: int = 1
    note: str = ""
    queued: bool = False  # re-queued before a stop: it starts running when handed out

    def job_entry(self, sample: dict) -> dict:
        return {"number": self.number, "trial_id": self.trial_id, "sample": sample}


class JobEvaluation:
    """``submit`` sends a group as one job; ``collect`` reads ended jobs, records each trial in
    the store and returns the ones that are done for good."""

    def __init__(self, executor: Executor, store: Store, job_base: dict, retries: int,
                 trial_timeout: float | None) -> None:
        self.executor, self.store, self.job_base = executor, store, job_base
        self.retries, self.trial_timeout = retries, trial_timeout
        self.in_flight: dict[int, list[Pending]] = {}
        self._ids = itertools.count()

    def submit(self, group: list[Pending]) -> None:
        for pending in group:
            if pending.ticket.queued:
                self.store.start(pending.ticket.trial_id)
                pending.ticket.queued = False
        job_id = next(self._ids)
        self.in_flight[job_id] = group
        timeout = self.trial_timeout * len(group) if self.trial_timeout else None
        trials = [p.ticket.job_entry(p.sample) for p in group]
        self.executor.submit(job_id, json.dumps({**self.job_base, "trials": trials}), timeout)

    def collect(self, wait_s: float) -> list[tuple[Pending, Any]]:
        ended: list[tuple[Pending, Any]] = []
        for outcome in self.executor.poll(wait_s):
            group = self.in_flight.pop(outcome.job_id)
            result = job_result(outcome)
            if isinstance(result, str):
                if len(group) > 1:  # one member may have brought the job down: each again, alone
                    for pending in group:
                        pending.ticket.note = f"re-run alone after its group failed: {result}"
                        self.submit([pending])
                else:
                    ended += self._failed(group[0], result, {})
                continue
            by_number = {e.get("number"): e for e in result.get("trials", []) if isinstance(e, dict)}
            for pending in group:
                entry = by_number.get(pending.ticket.number, {"status": "failed",
                                                              "error": "the worker returned no result"})
                ended += self._record(pending, entry)
        return ended

    def _record(self, pending: Pending, entry: dict) -> list[tuple[Pending, Any]]:
        trial = pending.ticket
        attrs = {key: entry[key] for key in RESULT_FIELDS if key in entry}
        if trial.note:
            attrs["note"] = trial.note
        if entry.get("status") != "succeeded":
            return self._failed(pending, entry.get("error") or "failed", attrs)
        self.store.complete(trial.trial_id, entry["metric"], {**attrs, "source": entry["source"],
                                                              "checkpoint": entry["checkpoint"],
                                                              "attempts": trial.attempts})
        return [(pending, entry["metric"])]

    def _failed(self, pending: Pending, reason: str, attrs: dict) -> list[tuple[Pending, Any]]:
        trial = pending.ticket
        if trial.attempts <= self.retries:
            trial.attempts += 1
            trial.note = f"attempt {trial.attempts} after: {reason}"
            self.store.set_attrs(trial.trial_id, {"attempts": trial.attempts, f"failure_{trial.attempts - 1}": reason})
            self.submit([pending])
            return []
        self.store.fail(trial.trial_id, reason, {**attrs, "attempts": trial.attempts})
        return [(pending, Failure(reason))]


def job_result(outcome) -> dict | str:
    """A job's result, or why it has none (the executor's reason, or the worker's)."""
    if outcome.error is not None:
        return outcome.error
    try:
        result = json.loads(outcome.result)
    except (TypeError, ValueError):
        return "the worker returned no readable result"
    if not isinstance(result, dict) or not isinstance(result.get("trials", []), list):
        return "the worker returned no readable result"
    return result["error"] if "error" in result else result
