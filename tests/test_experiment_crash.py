"""kill -9 of the experiment process at any moment, then resume: no finished trial lost, none
run twice, the ones running at the kill re-queued. Checked from the store with plain SQL."""

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from retiarii_ir.runtime.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_TRIALS = 12

SCRIPT = """
import sys
from retiarii_ir import nn
from retiarii_ir.runtime import Experiment, FunctionEvaluator, SpaceSpec

def experiment(storage):
    evaluator = FunctionEvaluator("tests.experiment_fixtures:slow_count",
                                  delay=nn.ValueChoice([0.4, 0.41, 0.42, 0.43, 0.44, 0.45], label="delay"))
    return Experiment(SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)]), evaluator,
                      "random", max_trials={max_trials}, concurrency=2, storage=storage, name="crash",
                      progress=False)

if __name__ == "__main__":
    getattr(experiment(sys.argv[2]), sys.argv[1])()
"""


def _rows(db: str):
    with sqlite3.connect(db, timeout=60) as conn:
        trials = conn.execute("select trial_id, number, state from trials order by number").fetchall()
        values = dict(conn.execute("select trial_id, value from trial_values").fetchall())
        attrs = {}
        for trial_id, key, value in conn.execute("select trial_id, key, value_json from trial_user_attributes"):
            attrs.setdefault(trial_id, {})[key] = json.loads(value)
    return [{"number": n, "state": s, "value": values.get(t), **attrs.get(t, {})} for t, n, s in trials]


def _start(script: str, mode: str, db: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, script, mode, db], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _kill_when(process: subprocess.Popen, db: str, complete: int, timeout: float = 120) -> list[dict]:
    """SIGKILL the process once ``complete`` trials are COMPLETE; the store as it was at that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()[-2000:]
        if os.path.exists(db):
            try:
                if sum(r["state"] == "COMPLETE" for r in _rows(db)) >= complete:
                    break
            except sqlite3.OperationalError:  # tables not created yet
                pass
        time.sleep(0.05)
    else:
        pytest.fail(f"no {complete} complete trials within {timeout}s")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["status", "crash", "--storage", db])  # the command line reads the store while it is written
    assert code == 0 and printed.getvalue().startswith("crash: "), printed.getvalue()
    process.send_signal(signal.SIGKILL)
    process.wait()
    return _rows(db)


def test_sigkill_mid_run_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    script, db = str(tmp_path / "crash_run.py"), str(tmp_path / "crash.db")
    with open(script, "w") as f:
        f.write(SCRIPT.format(max_trials=MAX_TRIALS))
    snapshots = [_kill_when(_start(script, "run", db), db, 2)]
    snapshots.append(_kill_when(_start(script, "resume", db), db, 6))
    sys.path.insert(0, str(tmp_path))
    try:
        import crash_run
    finally:
        sys.path.remove(str(tmp_path))
    crash_run.experiment(db).resume()
    final = {r["number"]: r for r in _rows(db)}

    for snapshot in snapshots:
        for before in snapshot:
            after = final[before["number"]]
            if before["state"] == "COMPLETE":  # finished before a kill: kept as it was
                assert (after["state"], after["value"], after["sample"]) == ("COMPLETE", before["value"],
                                                                              before["sample"])
            if before["state"] == "RUNNING":  # running at a kill: failed as interrupted, its sample re-queued
                assert after["state"] == "FAIL" and after["interrupted"] is True
                copies = [r for r in final.values() if r.get("requeued_from") == before["number"]]
                assert len(copies) == 1 and copies[0]["sample"] == before["sample"]
    assert any(r["state"] == "RUNNING" for s in snapshots for r in s), "a kill should catch a trial running"
    complete = [r for r in final.values() if r["state"] == "COMPLETE"]
    assert len(complete) == MAX_TRIALS
    keys = [json.dumps(r["sample"], sort_keys=True) for r in complete]
    assert len(set(keys)) == len(keys), "a sample was trained to completion twice"
    assert {r["state"] for r in final.values()} <= {"COMPLETE", "FAIL"}
    assert all(r.get("interrupted") for r in final.values() if r["state"] == "FAIL")
