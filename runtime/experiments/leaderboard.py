"""Reading an experiment back from the store: the leaderboard and a status summary. Needs
nothing but the store, so it works while another process is still writing to it."""

from __future__ import annotations

import json

from retiarii_ir.runtime.experiments.store import Store, TrialRecord
from retiarii_ir.runtime.experiments.store_schema import printable


def top(store: Store, study_id: int, k: int = 5) -> list[TrialRecord]:
    """The ``k`` best finished trials, best first (by the experiment's direction; ties by trial number)."""
    maximize = store.maximize(study_id)
    done = [r for r in store.trials(study_id) if r.state == "COMPLETE" and r.metric is not None]
    done.sort(key=lambda r: (-r.metric if maximize else r.metric, r.number))
    return done[:k]


def status(store: Store, study_id: int) -> dict:
    """Counts by state, the budget and the best trial."""
    records = store.trials(study_id)
    config = store.config(study_id)
    counts = {"COMPLETE": 0, "RUNNING": 0, "WAITING": 0, "FAIL": 0}
    interrupted = 0
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
        interrupted += r.interrupted
    best = top(store, study_id, 1)
    from retiarii_ir.runtime.experiments.driver_lock import driver_state

    return {"driver": driver_state(store, store.name_of(study_id)) if counts["RUNNING"] else None,"trials": len(records), "complete": counts["COMPLETE"], "running": counts["RUNNING"],
            "waiting": counts["WAITING"], "failed": counts["FAIL"] - interrupted, "interrupted": interrupted,
            "max_trials": config.get("max_trials"), "best": best[0] if best else None,
            "strategy": config["strategy"]["name"], "space": config["space"]["factory"]}


def format_top(records: list[TrialRecord]) -> str:
    """The leaderboard as a plain table."""
    lines = [f"{'rank':>4}  {'trial':>5}  {'metric':>9}  {'seconds':>7}  sample"]
    for rank, r in enumerate(records, 1):
        seconds = r.attrs.get("train_seconds")
        lines.append(f"{rank:>4}  {r.number:>5}  {r.metric:>9.4f}  "
                     f"{(f'{seconds:.1f}' if seconds is not None else '-'):>7}  {json.dumps(r.sample, sort_keys=True)}")
    return "\n".join(lines)


def format_status(name: str, s: dict) -> str:
    name = printable(name)
    budget = f"/{s['max_trials']}" if s["max_trials"] else ""
    best = (f"best {s['best'].metric:.4f} (trial {s['best'].number})" if s["best"] else "no finished trial yet")
    driver = f" ({s['driver']})" if s.get("driver") else ""
    return (f"{name}: {s['complete'] + s['failed']}{budget} trials finished ({s['complete']} complete, "
            f"{s['failed']} failed), {s['running']} running{driver}, {s['waiting']} queued, "
            f"{s['interrupted']} interrupted and re-queued; {best}; strategy {printable(s['strategy'])}, "
            f"space {printable(s['space'])}")
