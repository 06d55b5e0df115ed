"""What runs a job wherever an executor puts it: JSON in, JSON out.

A job is a group of trials (their samples) plus the specs to rebuild the space and the
evaluator; the worker freezes each sample, trains the group (merged, for the built-in
evaluator with ``cross_model``), writes each trial's intermediate metrics to the store as
they come, saves its weights and graph and returns metrics, source and timings. A trial that
fails fails alone: its reason is returned and the others go on.

A job line is data. What it may import, which store it writes and where its files go come from
the ``WorkerContext`` the experiment gives the executor when it starts (for a pool worker, on
its command line), never from the line itself; the line's specs are checked against it."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from retiarii_ir.errors import first_line

from retiarii_ir.runtime.experiments.evaluators import Evaluator, FunctionEvaluator, reporting
from retiarii_ir.runtime.errors import ConfigError
from retiarii_ir.runtime.references import Trust
from retiarii_ir.runtime.experiments.space_spec import SpaceSpec
from retiarii_ir.runtime.experiments.store import Store

_STORES: dict[str, Store] = {}
MAX_JOB_TRIALS = 4096
_JOB_FIELDS = {"space", "evaluator", "cross_model", "passes", "model_space", "device", "frozen_weights", "trials",
               "threads"}


@dataclass(frozen=True)
class WorkerContext:
    """What an experiment lets its workers do: the store they write, the folder their files go
    to, and the code they may import."""

    store: str
    artifacts: str
    trust: Trust

    def to_json(self) -> dict:
        return {"store": self.store, "artifacts": self.artifacts, "trust": self.trust.to_json()}

    @classmethod
    def from_json(cls, raw: Any) -> "WorkerContext":
        if (not isinstance(raw, dict) or set(raw) != {"store", "artifacts", "trust"}
                or not isinstance(raw["store"], str) or not isinstance(raw["artifacts"], str)
                or not os.path.isabs(raw["artifacts"])):
            raise ConfigError(f"malformed worker context {str(raw)[:200]}")
        return cls(raw["store"], raw["artifacts"], Trust.from_json(raw["trust"]))


def _store(url: str) -> Store:
    if url not in _STORES:
        _STORES[url] = Store(url)
    return _STORES[url]


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error)}"


def trial_folder(artifacts: str, number: int) -> str:
    """Where a trial's files live: derived from the artifacts folder and the trial's number only."""
    return os.path.join(artifacts, f"trial-{number:05d}")


def _save(context: WorkerContext, number: int, state: dict[str, torch.Tensor], graph, trial_id: int) -> str:
    """The trial's weights, graph and picture, each written whole (never half a file), inside the
    artifacts folder: a link planted there cannot send a write elsewhere. The picture is also
    the trial's artifact in the store, so the dashboard shows it."""
    folder = trial_folder(context.artifacts, number)
    os.makedirs(folder, exist_ok=True)
    root = os.path.realpath(context.artifacts)
    if os.path.commonpath([os.path.realpath(folder), root]) != root:
        raise ConfigError(f"{folder} leads outside the experiment's artifacts folder; nothing written")
    _write_whole(os.path.join(folder, "graph.json"), lambda f: f.write(graph.to_json().encode()))
    path = os.path.join(folder, "weights.pt")
    _write_whole(path, lambda f: torch.save({key: value.cpu() for key, value in state.items()}, f))
    from retiarii_ir.runtime.experiments.pictures import record_trial_picture

    record_trial_picture(_store(context.store), trial_id, graph, folder, context.artifacts)
    return path


def _write_whole(path: str, write) -> None:
    """A new file beside ``path`` (created, never opened through a link), then renamed onto it."""
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".writing-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _parse_job(job_text: str) -> dict:
    """The job line's fields, each of the expected type (a crafted line fails here)."""
    try:
        job = json.loads(job_text)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"a job line is JSON: {first_line(e)}") from None
    if not isinstance(job, dict) or set(job) - _JOB_FIELDS or not {"space", "evaluator", "trials"} <= set(job):
        raise ConfigError(f"malformed job: expected the fields {sorted(_JOB_FIELDS)}")
    trials = job["trials"]
    if not isinstance(trials, list) or not 0 < len(trials) <= MAX_JOB_TRIALS or not all(
            isinstance(t, dict) and set(t) == {"number", "trial_id", "sample"} and type(t["number"]) is int
            and t["number"] >= 0 and type(t["trial_id"]) is int and isinstance(t["sample"], dict) for t in trials):
        raise ConfigError("malformed job: trials must be [{number, trial_id, sample}, ...]")
    if not isinstance(job.get("passes", []), list) or not all(isinstance(p, str) for p in job.get("passes", [])):
        raise ConfigError("malformed job: passes must be a list of names")
    if not isinstance(job.get("device", "cpu"), str) or not isinstance(job.get("cross_model", False), bool):
        raise ConfigError("malformed job: device is a name and cross_model a boolean")
    threads = job.get("threads")
    if threads is not None and (type(threads) is not int or not 0 < threads <= (os.cpu_count() or 1)):
        raise ConfigError(f"malformed job: threads must be 1 to {os.cpu_count()}")
    return job


def run_job(job_text: str, context: WorkerContext, on_start=None) -> str:
    """Train the job's trials; returns ``{"trials": [{number, status, metric, error, ...}]}``, or
    ``{"error": reason}`` for a job that cannot be read. ``on_start()`` is called once the space
    is built, just before the first trial runs (an executor starts the job's timeout there, so
    building the space does not count)."""
    try:
        job = _parse_job(job_text)
    except ConfigError as e:
        return json.dumps({"error": str(e)})
    if threads := job.get("threads"):
        torch.set_num_threads(threads)
    results: dict[int, dict[str, Any]] = {}
    graphs = {}
    try:
        evaluator = Evaluator.from_dict(job["evaluator"])
        space = SpaceSpec.from_dict(job["space"]).build(context.trust)
        if space.search_space.to_json() != job.get("model_space"):
            raise RuntimeError("the model space built here differs from the experiment's "
                               "(did its code change since the experiment started?)")
        if job.get("frozen_weights") is not None and space.frozen_fingerprint() != job["frozen_weights"]:
            raise RuntimeError("the frozen (pretrained) weights built here differ from the experiment's "
                               "(did the file they are loaded from change since the experiment started?)")
    except Exception as e:  # noqa: BLE001 - nothing can run: every trial fails with the reason
        return json.dumps({"trials": [{"number": t["number"], "status": "failed", "error": _reason(e)}
                                      for t in job["trials"]]})
    labels = set(space.search_space.choices)
    for t in job["trials"]:
        try:
            graphs[t["number"]] = space.freeze({k: v for k, v in t["sample"].items() if k in labels})
        except Exception as e:  # noqa: BLE001 - a sample that does not build fails alone
            results[t["number"]] = {"number": t["number"], "status": "failed", "error": _reason(e)}
    runnable = [t for t in job["trials"] if t["number"] in graphs]
    _store(context.store)  # opened before the clock starts
    if on_start is not None:
        on_start()
    frozen = {number: space.frozen_state(graph) for number, graph in graphs.items()}
    if isinstance(evaluator, FunctionEvaluator):
        for t in runnable:
            results[t["number"]] = _run_function(context, evaluator, t, graphs[t["number"]], frozen[t["number"]])
    elif runnable:
        try:
            results.update(_run_training(job, context, evaluator, runnable, graphs, frozen))
        except Exception as e:  # noqa: BLE001 - the data, its loader or the group broke: each trial says why
            tail = traceback.format_exc(limit=-3)
            for t in runnable:
                results[t["number"]] = {"number": t["number"], "status": "failed", "error": _reason(e),
                                        "traceback": tail}
    return json.dumps({"trials": [results[t["number"]] for t in job["trials"]]})


def _source(graph) -> str:
    from retiarii_ir import codegen

    return codegen.to_source(graph, class_name="Model")


def _starting_state(trial, frozen: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fresh weights from the trial's seed, with the space's frozen (pretrained) ones put in."""
    from retiarii_ir.optimizer import initial_state

    return {**initial_state(trial), **frozen}


def _run_training(job: dict, context: WorkerContext, evaluator, trials: list[dict], graphs: dict,
                  frozen: dict) -> dict[int, dict]:
    from retiarii_ir.optimizer import Trial

    from retiarii_ir.runtime.training.trainer import train_trials

    store = _store(context.store)
    ids = {f"trial{t['number']}": t for t in trials}
    specs = []
    for t in trials:
        data, train = evaluator.train_spec(t["sample"])
        trial = Trial(f"trial{t['number']}", graphs[t["number"]], data, train)
        if kept := frozen[t["number"]]:  # trials that hold the same frozen weights compute them once when merged
            trial = Trial(trial.name, trial.graph, data, train, frozen=tuple(kept),
                          initial_state=_starting_state(trial, kept))
        specs.append(trial)

    def record(name: str, epoch: int, metrics: dict[str, float]) -> bool:
        try:
            store.report(ids[name]["trial_id"], epoch, metrics["metric"])
        except Exception:  # noqa: BLE001 - a missed intermediate point must not cost the trial
            pass
        return False

    merged = job.get("cross_model", False)
    passes = tuple(job.get("passes", ())) if merged else ()
    trained = train_trials(specs, passes, job.get("device", "cpu"), independent=not merged, trust=context.trust,
                           should_stop=record)
    out = {}
    for t, result in zip(trials, trained):
        entry = {"number": t["number"], "status": "failed", "train_seconds": result.seconds,
                 "trained_as": result.trained_as + (f"; operator batching {result.batching}" if result.batching else "")}
        metric = result.metric
        if result.status == "succeeded" and metric is not None and math.isfinite(metric):
            try:
                graph = graphs[t["number"]]
                entry.update(status="succeeded", metric=metric,
                             checkpoint=_save(context, t["number"], result.state, graph, t["trial_id"]),
                             source=_source(graph))
            except Exception as e:  # noqa: BLE001
                entry["error"] = _reason(e)
        else:
            entry["error"] = result.error or f"no finite metric (status {result.status})"
        out[t["number"]] = entry
    return out


def _run_function(context: WorkerContext, evaluator: FunctionEvaluator, t: dict, graph, frozen: dict) -> dict:
    from retiarii_ir import codegen

    store = _store(context.store)
    steps = [0]

    def report(value: float) -> None:
        try:
            store.report(t["trial_id"], steps[0], value)
        except Exception:  # noqa: BLE001 - a missed intermediate point must not cost the trial
            pass
        steps[0] += 1

    entry: dict[str, Any] = {"number": t["number"], "status": "failed", "trained_as": "alone"}
    start = time.perf_counter()
    try:
        fn = evaluator.function(context.trust)
        torch.manual_seed(0)
        model = codegen.load(graph, class_name="Model", formatted=False)()
        if frozen:  # the space's pretrained, frozen weights, as the user's own model had them
            model.load_state_dict(frozen, strict=False)
            parameters = dict(model.named_parameters())
            for key in frozen:
                if key in parameters:  # a tied weight is listed under its first name only
                    parameters[key].requires_grad_(False)
        with reporting(report):
            metric = fn(model, **evaluator.resolve(t["sample"]))
        metric = float(metric) if metric is not None else float("nan")
        if not math.isfinite(metric):
            entry["error"] = f"the evaluator returned {metric}"
        else:
            entry.update(status="succeeded", metric=metric,
                         checkpoint=_save(context, t["number"], model.state_dict(), graph, t["trial_id"]),
                         source=_source(graph))
    except Exception as e:  # noqa: BLE001 - the user's function failed: that trial fails, with the reason
        entry["error"] = _reason(e)
        entry["traceback"] = traceback.format_exc(limit=-3)
    entry["train_seconds"] = time.perf_counter() - start
    return entry
