"""Where jobs run, behind one interface: ``submit(job_id, job_text, timeout)`` then ``poll``.

- ``InProcess()``: in this process, one job at a time (the simplest to debug).
- ``ProcessPool(workers)``: long-lived worker processes started fresh (``runtime.pool_worker``:
  nothing of the caller's ``__main__`` is re-run or pickled); jobs
  and results travel as JSON lines. A worker that dies (killed, out of memory) fails its
  job with the reason (the last line it wrote to stderr) and is replaced; a job past its
  timeout has its worker killed; workers die with the process that started them.
- ``Ray(address=None)`` (``runtime.ray_executor``, extra ``[ray]``): Ray tasks on a cluster.

The experiment decides what a failed job means (retry, split, fail its trials)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from retiarii_ir.errors import first_line

from retiarii_ir.runtime.errors import ConfigError
from retiarii_ir.runtime.experiments.worker import WorkerContext


@dataclass
class JobOutcome:
    """A job that ended: its result (JSON text), or why it produced none."""

    job_id: int
    result: str | None = None
    error: str | None = None


class Executor:
    """Runs jobs; ``workers`` of them at once."""

    name = "executor"
    workers = 1

    def start(self, context: WorkerContext) -> None:
        """Called once before the first job: what the jobs may import, which store they write,
        where their files go."""

    def submit(self, job_id: int, job_text: str, timeout: float | None) -> None:
        raise NotImplementedError

    def poll(self, wait_s: float) -> list[JobOutcome]:
        """Jobs that ended, waiting up to ``wait_s`` seconds for the first."""
        raise NotImplementedError

    def close(self, abort: bool = False) -> None:
        """Stop every worker this executor started; ``abort`` (the experiment was interrupted or
        failed) stops them at once rather than letting a job in progress finish."""

    def describe(self) -> str:
        return self.name


class InProcess(Executor):
    """Jobs run in this process, one at a time. With a timeout a job runs in a thread and is
    abandoned (failed, left to finish in the background) when it overruns: a thread cannot be
    killed, so prefer ``ProcessPool`` for code that may hang."""

    name = "in-process"

    def __init__(self) -> None:
        self._queue: deque[tuple[int, str, float | None]] = deque()
        self._context: WorkerContext | None = None

    def start(self, context: WorkerContext) -> None:
        self._context = context

    def submit(self, job_id: int, job_text: str, timeout: float | None) -> None:
        self._queue.append((job_id, job_text, timeout))

    def poll(self, wait_s: float) -> list[JobOutcome]:
        from retiarii_ir.runtime.experiments.worker import run_job

        if not self._queue:
            time.sleep(min(wait_s, 0.05))
            return []
        job_id, job_text, timeout = self._queue.popleft()
        box: dict[str, str] = {}

        def work() -> None:
            try:
                box["result"] = run_job(job_text, self._context)
            except Exception as e:  # noqa: BLE001 - the job as a whole broke: its trials fail, the experiment goes on
                box["error"] = f"the job failed: {type(e).__name__}: {first_line(e)}"

        if timeout is None:
            work()
        else:
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            thread.join(timeout)
            if not box:
                return [JobOutcome(job_id, error=f"timed out after {timeout:g}s (its thread was abandoned)")]
        return [JobOutcome(job_id, result=box.get("result"), error=box.get("error"))]


def describe_exit(code: int | None) -> str:
    """A worker's exit status in words: ``killed by SIGKILL`` rather than ``-9``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ", by a user or the out-of-memory killer" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


# ``python -m`` would put the current folder first on the worker's import path, where a file a
# stranger left (``optimizer.py``) would shadow ours; the worker imports what the driver imports.
_START_WORKER = "import sys; del sys.path[0]; from retiarii_ir.runtime.experiments.pool_worker import main; main()"


class _Worker:
    """One worker process and the job it holds."""

    def __init__(self, env: dict, threads: int, context: WorkerContext, outcomes: queue.Queue, index: int) -> None:
        self.index = index
        self.process = subprocess.Popen(
            [sys.executable, "-c", _START_WORKER, str(threads), json.dumps(context.to_json())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
            errors="replace", start_new_session=True)
        self.job: tuple[int, float | None] | None = None  # (job id, deadline)
        self.timeout: float | None = None
        self.ready = False  # imports done: a job's timeout starts when the worker can run it
        self.last_error = ""  # its last line on stderr: the reason, when it dies
        self._outcomes = outcomes
        self._stderr_done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._relay_stderr, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._outcomes.put((self, line))
        self._stderr_done.wait(5)  # its last words are read before anyone asks why it ended
        self._outcomes.put((self, None))  # end of output: the process is gone

    def _relay_stderr(self) -> None:
        """What the user's code prints still reaches the terminal; the last line is kept."""
        try:
            for line in self.process.stderr:
                sys.stderr.write(line)
                if line.strip():
                    self.last_error = line.strip()[:500]
        except (OSError, ValueError):
            pass
        finally:
            self._stderr_done.set()

    def death_reason(self, code: int | None) -> str:
        said = f": {self.last_error}" if self.last_error and (code or 0) > 0 else ""
        return f"{describe_exit(code)}{said}"

    def send(self, job_id: int, job_text: str, timeout: float | None) -> None:
        self.job = (job_id, None)  # the deadline starts when the worker says the trials started
        self.timeout = timeout
        self.process.stdin.write(job_text + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class ProcessPool(Executor):
    """``workers`` processes, each running one job at a time with ``threads`` torch threads
    (default: the machine's cores shared out among the workers)."""

    name = "process pool"

    def __init__(self, workers: int = 2, threads: int | None = None) -> None:
        if type(workers) is not int or workers < 1:
            raise ConfigError(f"ProcessPool needs workers >= 1, got {workers!r}")
        if threads is not None and (type(threads) is not int or threads < 1):
            raise ConfigError(f"ProcessPool needs threads >= 1, got {threads!r}")
        self.workers = workers
        self._asked_threads = threads
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self._pending: deque[tuple[int, str, float | None]] = deque()
        self._outcomes: queue.Queue = queue.Queue()
        self._pool: list[_Worker] = []
        self._env = dict(os.environ)
        self._context: WorkerContext | None = None
        self._count = 0

    def start(self, context: WorkerContext) -> None:
        from retiarii_ir.runtime.lifetime import fit_threads

        self._context = context
        self._env = {**os.environ, "PYTHONPATH": os.pathsep.join(importable_paths())}
        if self._asked_threads is None:  # the cores free now, shared out among the workers
            self.threads = max(1, fit_threads() // self.workers)

    def _spawn(self) -> _Worker:
        self._count += 1
        return _Worker(self._env, self.threads, self._context, self._outcomes, self._count)

    def submit(self, job_id: int, job_text: str, timeout: float | None) -> None:
        if "\n" in job_text:
            job_text = json.dumps(json.loads(job_text))
        self._pending.append((job_id, job_text, timeout))

    def _dispatch(self) -> None:
        while self._pending:
            idle = next((w for w in self._pool if w.ready and w.job is None and w.process.poll() is None), None)
            if idle is None:
                if len(self._pool) < self.workers:
                    self._pool.append(self._spawn())
                    continue
                return
            idle.send(*self._pending.popleft())

    def poll(self, wait_s: float) -> list[JobOutcome]:
        self._dispatch()
        ended: list[JobOutcome] = []
        deadline = time.monotonic() + wait_s
        while not ended:
            try:
                worker, line = self._outcomes.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                worker, line = None, None
            if worker is not None:
                ended.extend(self._handle(worker, line))
            ended.extend(self._check_deadlines())
            if ended or time.monotonic() >= deadline:
                break
        self._dispatch()
        return ended

    def _handle(self, worker: _Worker, line: str | None) -> list[JobOutcome]:
        if line == "ready\n":
            worker.ready = True
            self._dispatch()
            return []
        if line == "started\n":
            if worker.job is not None and worker.timeout:
                worker.job = (worker.job[0], time.monotonic() + worker.timeout)
            return []
        if line is not None:  # a result
            if worker.job is None:
                return []
            job_id = worker.job[0]
            worker.job = None
            return [JobOutcome(job_id, result=line)]
        if worker not in self._pool:  # killed on purpose (timeout): already reported
            return []
        code = worker.process.wait()
        self._pool.remove(worker)
        if not worker.ready and self._pending:  # it could not even start: a job fails, so this cannot loop
            job_id = self._pending.popleft()[0]
            return [JobOutcome(job_id, error=f"worker process failed to start ({worker.death_reason(code)})")]
        if worker.job is None:
            return []
        return [JobOutcome(worker.job[0], error=f"worker process died ({worker.death_reason(code)})")]

    def _check_deadlines(self) -> list[JobOutcome]:
        ended = []
        now = time.monotonic()
        for worker in list(self._pool):
            if worker.job and worker.job[1] is not None and now > worker.job[1]:
                job_id = worker.job[0]
                self._pool.remove(worker)
                worker.kill()
                ended.append(JobOutcome(job_id, error="timed out: its worker process was killed"))
        return ended

    def close(self, abort: bool = False) -> None:
        if abort:  # its loader workers die with it (parent-death signal)
            for worker in self._pool:
                worker.kill()
            self._pool.clear()
            return
        for worker in self._pool:
            try:
                worker.process.stdin.close()  # a clean end: the worker leaves its loop
            except OSError:
                pass
        for worker in self._pool:
            try:
                worker.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
        self._pool.clear()

    def describe(self) -> str:
        return f"process pool ({self.workers} workers x {self.threads} threads)"


def importable_paths() -> list[str]:
    """This process's import path for a worker: what the driver imports, the worker imports
    (an empty entry, the current folder of ``python -c``, only where the driver has it)."""
    paths = []
    for p in sys.path:
        p = os.getcwd() if p == "" else p
        if os.path.isdir(p) and p not in paths:
            paths.append(p)
    return paths


def executor_named(name: str, workers: int | None = None, address: str | None = None) -> Executor:
    """``in-process``, ``pool`` or ``ray`` -> an executor (for configs and the command line)."""
    if name in ("in-process", "inprocess", "local"):
        return InProcess()
    if name in ("pool", "process-pool", "processes"):
        return ProcessPool(workers or 2)
    if name == "ray":
        from retiarii_ir.runtime.experiments.ray_executor import Ray

        return Ray(address=address, workers=workers)
    raise ConfigError(f"unknown executor {name!r}; use in-process, pool or ray")
