"""Operations as a user meets them: no worker outlives a killed experiment, one driver per
experiment, a failing data loader is the trials' stored reason and a non-zero exit, a closed pipe
ends quietly, and torch's threads fit the cores other work leaves free."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from retiarii_ir.runtime.experiments.driver_lock import DriverLock, ExperimentBusyError
from retiarii_ir.runtime.lifetime import busy_cores, fit_threads, owned_cores
from retiarii_ir.runtime.experiments.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """
from retiarii_ir import nn
from retiarii_ir.runtime import FunctionEvaluator, ProcessPool, SpaceSpec

space = SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)])
evaluator = FunctionEvaluator("tests.experiment_fixtures:slow_count",
                              delay=nn.ValueChoice([{delays}], label="delay"))
strategy = "random"
max_trials = {max_trials}
concurrency = 2
name = "ops"
{executor}
"""


def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}


def _start(folder, *argv, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "retiarii_ir.runtime.cli", *argv], cwd=folder, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _states(folder) -> list[tuple[str, str]]:
    try:
        with sqlite3.connect(folder / "retiarii.db", timeout=60) as db:
            rows = db.execute("select t.state, a.value_json from trials t join trial_user_attributes a "
                              "on a.trial_id = t.trial_id and a.key = 'sample'").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    return rows


def _wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended ({process.returncode}) before {what}: {process.stdout.read()[-2000:]}"
                        f"{process.stderr.read()[-2000:]}")
        if value := condition():
            return value
        time.sleep(0.1)
    pytest.fail(f"no {what} within {timeout}s")


def _ours(marker: str) -> list[str]:
    """Every live process whose command line names ``marker`` (this test's folder)."""
    listing = subprocess.run(["ps", "-e", "-ww", "-o", "stat=,args="], capture_output=True, text=True).stdout
    rows = [line.strip().split(None, 1) for line in listing.splitlines()]
    return [args for stat, args in (r for r in rows if len(r) == 2) if marker in args and not stat.startswith("Z")]


def test_kill_9_of_run_leaves_no_worker_of_ours_within_5_seconds(tmp_path):
    folder = tmp_path / "killed-run"
    folder.mkdir()
    config = CONFIG.format(delays="20.0, 21.0", max_trials=4, executor="executor = ProcessPool(2, threads=1)")
    (folder / "search.py").write_text(config.replace("slow_count", "announced_sleep"))
    driver = _start(folder, "run", "search.py", "--no-progress")
    _wait_for(lambda: len(list(folder.glob("started-*"))) == 2, 120, "two workers in a trial", driver)
    assert len(_ours(str(folder))) == 2
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 5
    while _ours(str(folder)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ours(str(folder)) == []
    assert "BrokenPipeError" not in driver.stderr.read()


def test_a_second_resume_is_refused_while_the_first_runs_and_no_sample_trains_twice(tmp_path):
    folder = tmp_path / "twice"
    folder.mkdir()
    (folder / "search.py").write_text(CONFIG.format(delays="1.0, 1.01, 1.02, 1.03, 1.04, 1.05", max_trials=6,
                                                    executor=""))
    first = _start(folder, "run", "search.py", "--no-progress")
    _wait_for(lambda: sum(s == "COMPLETE" for s, _ in _states(folder)) >= 1, 120, "a finished trial", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    status = subprocess.run([sys.executable, "-m", "retiarii_ir.runtime.cli", "status", "ops"], cwd=folder, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert f"running (its driver (process {first.pid} on " in status.stdout and "is gone" in status.stdout
    resumed = _start(folder, "resume", "search.py", "--no-progress")

    def holds_the_lock():
        with sqlite3.connect(folder / "retiarii.db", timeout=60) as db:
            try:
                return db.execute("select pid from retiarii_driver_lock").fetchone() == (resumed.pid,)
            except sqlite3.OperationalError:
                return False

    _wait_for(holds_the_lock, 120, "the first resume holding the experiment", resumed)
    second = _start(folder, "resume", "search.py", "--no-progress")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    assert err.strip().splitlines() == [err.strip()] and "is already running (process" in err
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    complete = [sample for state, sample in _states(folder) if state == "COMPLETE"]
    assert len(complete) == 6 and len(set(complete)) == 6, "a sample was trained to completion twice"


def test_a_data_loader_that_raises_is_each_trials_reason_and_the_run_exits_1(tmp_path):
    (tmp_path / "search.py").write_text(
        "from retiarii_ir.runtime import Classification, ProcessPool, SpaceSpec\n"
        "space = SpaceSpec('tests.experiment_fixtures:TinySpace', inputs=[(2, 1, 8, 8)])\n"
        "evaluator = Classification('tests.experiment_fixtures:broken_data', epochs=1, max_steps=1)\n"
        "executor = ProcessPool(1, threads=1)\n"
        "max_trials = 2\nname = 'nodata'\n")
    run = _start(tmp_path, "run", "search.py", "--no-progress")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 1, err
    reason = (f"DataError: tests.experiment_fixtures:broken_data raised FileNotFoundError: no such folder: "
              f"/data/images (the loader of this data set)")
    assert err.strip().splitlines()[-1] == (f"retiarii run: every trial failed (2); the most common reason "
                                            f"(2 of 2): {reason}")
    with sqlite3.connect(tmp_path / "retiarii.db") as db:
        stored = [json.loads(v) for (v,) in db.execute("select value_json from trial_user_attributes "
                                                       "where key = 'failure'")]
    assert stored == [reason, reason]


def test_a_closed_pipe_ends_the_command_quietly():
    trace = subprocess.Popen([sys.executable, "-m", "retiarii_ir.runtime.cli", "trace", "retiarii_ir.runtime.models:resnet18",
                              "--input-shape", "1,3,32,32"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    trace.stdout.close()  # as `| head -1` does once it has its line
    err = trace.stderr.read()
    assert trace.wait(timeout=300) == 141 and "Traceback" not in err and "Error" not in err, err


# ---------------------------------------------------------------------- threads
def _hogs(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_threads_leave_out_the_cores_other_processes_keep_busy():
    cores = owned_cores()
    hogs = _hogs(cores)
    try:
        time.sleep(0.5)
        assert busy_cores() >= cores - 0.5
        assert fit_threads() == 1
        assert fit_threads(1) == 1
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    time.sleep(0.3)
    assert fit_threads() >= min(cores, 2) - 1  # another test's work may hold a core


# ---------------------------------------------------------------------- the driver lock
@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "lock.db"))


def _holder(store, **values):
    import sqlalchemy as sa

    lock = DriverLock(store, "x")
    with store.storage.engine.begin() as conn:
        conn.execute(sa.update(lock._table()).where(lock._table().c.experiment == "x").values(**values))


def test_a_lock_held_by_a_live_driver_is_refused_and_released_at_the_end(store):
    with DriverLock(store, "x"):
        with pytest.raises(ExperimentBusyError, match=rf"'x' is already running \(process {os.getpid()} on"):
            DriverLock(store, "x").__enter__()
        with DriverLock(store, "y"):  # another experiment in the same store
            pass
    with DriverLock(store, "x"):
        pass


def test_a_lock_of_a_dead_process_here_is_taken_over_at_once(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    first = DriverLock(store, "x").__enter__()
    first._stop.set()  # the driver is gone without a word
    _holder(store, pid=dead.pid)
    with DriverLock(store, "x"):
        pass


def test_a_lock_from_another_machine_waits_for_its_heartbeat_to_expire(store):
    from retiarii_ir.runtime.experiments import driver_lock

    first = DriverLock(store, "x").__enter__()
    first._stop.set()
    _holder(store, host="elsewhere", pid=1)
    with pytest.raises(ExperimentBusyError, match="on elsewhere"):
        DriverLock(store, "x").__enter__()
    _holder(store, heartbeat=time.time() - driver_lock.EXPIRY - 1)
    with DriverLock(store, "x") as taken:
        time.sleep(driver_lock.INTERVAL * 1.5)
        assert not taken.lost
        _holder(store, owner="someone-else")  # a driver that stalls past EXPIRY learns it lost the lock
        time.sleep(driver_lock.INTERVAL * 1.5)
        assert taken.lost


@pytest.mark.parametrize("values", [dict(heartbeat="abc", host="elsewhere"), dict(heartbeat=1e300, host="elsewhere"),
                                    dict(pid=99999999999999999), dict(pid="abc"), dict(owner=5, heartbeat=0)])
def test_a_lock_row_a_stranger_garbled_is_taken_over(store, values):
    import sqlalchemy as sa

    first = DriverLock(store, "x").__enter__()
    first._stop.set()
    table = first._table()
    with store.storage.engine.begin() as conn:  # as raw SQL writes it, past the column types
        for column, value in values.items():
            conn.execute(sa.text(f"update {table.name} set {column} = :v"), {"v": value})
    with DriverLock(store, "x"):
        pass


def test_a_lock_table_of_another_shape_is_one_error(tmp_path):
    import sqlalchemy as sa

    from retiarii_ir.runtime.errors import ExperimentError

    store = Store(str(tmp_path / "odd.db"))
    with store.storage.engine.begin() as conn:
        conn.execute(sa.text("create table retiarii_driver_lock (something int)"))
    with pytest.raises(ExperimentError, match="retiarii_driver_lock is not one retiarii made"):
        DriverLock(store, "x").__enter__()


def test_a_journal_store_is_locked_by_the_operating_system(tmp_path):
    store = Store(str(tmp_path / "runs.log"))
    with DriverLock(store, "x"):
        with pytest.raises(ExperimentBusyError, match="already running"):
            DriverLock(store, "x").__enter__()
    with DriverLock(store, "x"):
        pass



@pytest.mark.parametrize("argv, words", [
    (["status", "--storage", "pipe.log"], "is not a regular file"),
    (["run", "config.txt"], "config.txt is not a Python file (.py)"),
    (["trace", "retiarii_ir.runtime.models:resnet18", "--input-shape", "99999999999999999999"], "over the limit"),
    (["trace", "retiarii_ir.runtime.models:resnet18", "--input-shape", "1,3,8,8", "--out", "dangling.json"],
     "is a link to"),
    (["codegen", "tests.experiment_fixtures:TinySpace", "--input-shape", "2,1,8,8", "--input-shape", "2,1,8,8",
      "--out", "m.py"], "TinySpace takes 1 inputs (x) but 2 were given"),
])
def test_hostile_arguments_are_one_line_and_exit_code_2(tmp_path, capsys, argv, words):
    from retiarii_ir.runtime.cli import main

    os.mkfifo(tmp_path / "pipe.log")
    (tmp_path / "config.txt").write_text("x = 1\n")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere" / "x.json")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(argv)
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
