"""Jobs as Ray tasks (extra ``[ray]``): on the cluster at ``address`` (``ray.init(address=...)``),
or on a local cluster this executor starts and stops itself. Ray does the scheduling; we only
submit, wait and cancel. Tasks are never retried by Ray (the experiment decides retries), a
crashed worker fails its job with Ray's reason, and a job past its timeout is cancelled. The
timeout starts when a task reports (through a small Ray queue) that its trials began, so waiting
for a worker and building the space do not count.

Workers import the space factory and evaluator by name: on a multi-machine cluster, the code
must be installed on every node and the store must be a URL they all reach (PostgreSQL, MySQL)."""

from __future__ import annotations

import json
import os
import time

from retiarii_ir.errors import first_line

from retiarii_ir.runtime.experiments.executors import Executor, JobOutcome, importable_paths
from retiarii_ir.runtime.errors import ConfigError
from retiarii_ir.runtime.experiments.worker import WorkerContext


class Ray(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_job: float = 1) -> None:
        if workers is not None and (type(workers) is not int or workers < 1):
            raise ConfigError(f"Ray needs workers >= 1, got {workers!r}")
        self.address, self._asked, self.cpus_per_job = address, workers, cpus_per_job
        self.workers = workers or 1
        self._started = False
        self._refs: dict = {}  # ObjectRef -> (job id, deadline once started)
        self._timeouts: dict[int, float | None] = {}
        self._remote = None
        self._context = "{}"

    def start(self, context: WorkerContext) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("the Ray executor needs ray: pip install -e '.[ray]'") from None
        self._context = json.dumps(context.to_json())
        runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(importable_paths())}}
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=False)
                else:
                    ray.init(num_cpus=self._asked or os.cpu_count() or 1, include_dashboard=False,
                             runtime_env=runtime_env, log_to_driver=False)
            except Exception as e:  # noqa: BLE001 - an unreachable cluster or a failed start: one line
                raise ConfigError(f"cannot start Ray{f' at {self.address}' if self.address else ''}: "
                                  f"{type(e).__name__}: {first_line(e)}") from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_job)
        self.workers = self._asked or max(1, cpus)
        from ray.util.queue import Queue

        self._started_queue = Queue(actor_options={"num_cpus": 0})
        self._remote = ray.remote(num_cpus=self.cpus_per_job, max_retries=0)(_run_reporting_start)

    def submit(self, job_id: int, job_text: str, timeout: float | None) -> None:
        ref = self._remote.remote(job_text, self._context, job_id, self._started_queue, self.cpus_per_job)
        self._refs[ref] = (job_id, None)
        self._timeouts[job_id] = timeout

    def _note_starts(self) -> None:
        started = self._started_queue.get_nowait_batch(self._started_queue.qsize()) if self._started_queue.qsize() else []
        by_job = {job_id: ref for ref, (job_id, _) in self._refs.items()}
        for job_id in started:
            timeout = self._timeouts.get(job_id)
            if job_id in by_job and timeout:
                self._refs[by_job[job_id]] = (job_id, time.monotonic() + timeout)

    def poll(self, wait_s: float) -> list[JobOutcome]:
        import ray

        if not self._refs:
            time.sleep(min(wait_s, 0.05))
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=wait_s)
        self._note_starts()
        ended = []
        for ref in ready:
            job_id, _ = self._refs.pop(ref)
            try:
                ended.append(JobOutcome(job_id, result=ray.get(ref)))
            except ray.exceptions.RayError as e:
                reason = first_line(e)
                if isinstance(e, ray.exceptions.WorkerCrashedError):
                    reason = "its Ray worker process died (killed, or out of memory)"
                ended.append(JobOutcome(job_id, error=f"Ray task failed: {type(e).__name__}: {reason}"))
        now = time.monotonic()
        for ref, (job_id, deadline) in list(self._refs.items()):
            if deadline is not None and now > deadline:
                ray.cancel(ref, force=True)
                del self._refs[ref]
                ended.append(JobOutcome(job_id, error="timed out: its Ray task was cancelled"))
        return ended

    def close(self, abort: bool = False) -> None:
        import ray

        for ref in self._refs:
            ray.cancel(ref, force=True)
        self._refs.clear()
        self._started_queue = None
        if self._started:
            ray.shutdown()
            self._started = False

    def describe(self) -> str:
        return f"ray ({self.address or 'local cluster'}, {self.workers} workers)"


def _run_reporting_start(job_text: str, context: str, job_id: int, started_queue, cpus: float) -> str:
    """The Ray task: run the job with torch threads for its CPUs (fewer on a busy node), telling
    the driver when its trials begin."""
    import torch

    from retiarii_ir.runtime.lifetime import fit_threads
    from retiarii_ir.runtime.experiments.worker import WorkerContext, run_job

    torch.set_num_threads(fit_threads(max(1, int(cpus))))
    return run_job(job_text, WorkerContext.from_json(json.loads(context)), on_start=lambda: started_queue.put(job_id))
