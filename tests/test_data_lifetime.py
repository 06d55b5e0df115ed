"""No loader worker outlives its group: after kill -9 or Ctrl-C of the experiment, or a trial
past its timeout, every process the experiment started is gone within 5 seconds (checked with
ps). Workers build their loaders from the data set's reference."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """
from retiarii_ir.runtime import Classification, ProcessPool, SpaceSpec

space = SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)])
evaluator = Classification("tests.data_fixtures:slow_shapes", data_kwargs={{"delay": {delay}}}, num_workers=2,
                           batch_size=16, epochs={epochs})
{executor}
max_trials = 2
concurrency = 2
name = "loaders"
{extra}
"""


def _tree() -> dict[int, list[int]]:
    listing = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,stat="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for pid, ppid, stat in (line.split() for line in listing.splitlines()):
        if not stat.startswith("Z"):
            children.setdefault(int(ppid), []).append(int(pid))
    return children


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _tree(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    listing = subprocess.run(["ps", "-e", "-o", "pid=,stat="], capture_output=True, text=True).stdout
    live = {int(pid) for pid, stat in (line.split() for line in listing.splitlines()) if not stat.startswith("Z")}
    return pids & live


def _start(folder, config: str) -> subprocess.Popen:
    (folder / "search.py").write_text(config)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    # Ctrl-C as at a terminal: a suite started in the background (`pytest &` in a script) hands its
    # children an ignored SIGINT, and the run would rightly go on through it
    return subprocess.Popen([sys.executable, "-m", "retiarii_ir.runtime.cli", "run", "search.py", "--no-progress"],
                            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_loaders(driver: subprocess.Popen, count: int, timeout: float = 120) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            pytest.fail(f"the experiment ended first: {driver.stderr.read()[-2000:]}")
        found = _descendants(driver.pid)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    pytest.fail(f"no {count} processes under the experiment within {timeout}s")


def _gone_within(pids: set[int], seconds: float = 5) -> set[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


def test_kill_9_of_the_experiment_takes_its_pool_worker_and_their_loader_workers(tmp_path):
    driver = _start(tmp_path, CONFIG.format(delay=0.05, executor="executor = ProcessPool(1, threads=1)", extra="", epochs=3))
    ours = _wait_for_loaders(driver, 3)  # the pool worker and its 2 loader workers
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert _gone_within(ours) == set()


def test_ctrl_c_of_the_experiment_stops_the_loader_workers_of_its_own_process(tmp_path):
    # a run far longer than the test, so the Ctrl-C lands while it trains
    driver = _start(tmp_path, CONFIG.format(delay=0.05, executor="", extra="", epochs=200))
    try:
        ours = _wait_for_loaders(driver, 2)  # in-process: the loader workers are the experiment's children
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=60)
        assert driver.returncode == 130, (out[-2000:], err[-2000:])
        assert _gone_within(ours) == set()
    finally:
        driver.kill()  # a run that went on through the Ctrl-C must not outlive the test


def test_a_trial_past_its_timeout_takes_its_loader_workers_with_it(tmp_path):
    driver = _start(tmp_path, CONFIG.format(delay=1.0, executor="executor = ProcessPool(1, threads=1)",
                                            extra="trial_timeout = 15\nconcurrency = 1", epochs=3))  # a batch takes 8 s
    ours = _wait_for_loaders(driver, 3)
    out, err = driver.communicate(timeout=300)
    assert _gone_within(ours) == set()
    with sqlite3.connect(tmp_path / "retiarii.db") as db:
        reasons = [r for (r,) in db.execute("select value_json from trial_user_attributes where key = 'failure'")]
    assert reasons and all("timed out" in r for r in reasons), (reasons, err[-2000:])
