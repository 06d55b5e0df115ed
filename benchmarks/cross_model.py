"""Does training K trials merged pay? Throughput of ``train_trials(trials, PASSES)`` (all passes,
batching timed) over ``train_trials(trials, independent=True)`` for the same K trials, on six
workloads on scikit-learn's digits (``benchmarks/cross_model_models.py``); for the learning-rate
sweep also against K copies trained by hand with ``torch.func.stack_module_state`` + ``vmap``.

    python benchmarks/cross_model.py                       # K = 1..16, 6 workloads, ~10 min on 2 cores
    python benchmarks/cross_model.py --workloads c --ks 1,4 --steps 10 --repeats 1
    python benchmarks/cross_model.py --quick               # smoke run
    python benchmarks/cross_model.py --device cuda --workloads c,d --ks 1,8,16 --steps 20 --repeats 1

For each row, each mode (merged, independent, vmap) gets its own fresh process, forked from a
server that has only imported the code; the modes' runs alternate, and throughputs are the
median of ``--repeats``. Peak MB is the process's maxrss after its first run (nothing else has
run in it); "plan s" is plan() + code generation, autotuning included, as a fresh process pays
it: cold (the first run, with an empty cache of timed choices: a cache folder of the benchmark's
own) and warm (the later runs, which find the choices the first one stored). Throughput is trial-steps per second of steady training, from each
run's first step to its last: the first step, planning and building, and the end-of-epoch
validation are left out. Each row checks that merging changed nothing: the largest relative
difference of any trial's loss at the first step and at any step, merged vs alone, and of its
final validation accuracy: the drift batching's rounding causes. A row passes if the first
step's losses agree within rtol 1e-5 and every final accuracy within 0.5 points (the contract
of docs/optimizer.md); exact passes (dedup, CSE) give 0 on both.

"share" is the part of one trial's step (trained alone) that merging can save, timed in the
independent run's process right after it: for sharing workloads (a, b, e, f) the frozen part
that is computed once, over the mean step; for batching workloads (c, d) the model's forward and
backward over the step (all that fused kernels can touch; loss, optimizer step and the
trainer's bookkeeping stay per trial). For sharing workloads "bound" is Amdahl's
1 / (1 - share + share / K): the ratio if sharing were the only gain.
"""

from __future__ import annotations

import argparse
import contextlib
from concurrent.futures import ProcessPoolExecutor
import math
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch.nn.functional as F  # noqa: E402

from retiarii_ir import optimizer  # noqa: E402
from retiarii_ir.runtime.training.autotune import synchronize  # noqa: E402
import retiarii_ir.runtime.training.trainer as trainer  # noqa: E402
from benchmarks import cross_model_models as models  # noqa: E402
from retiarii_ir.runtime.training import data as rdata  # noqa: E402

# Batching's contract (docs/optimizer.md): fused kernels add in another order, so the first
# step's losses agree to float rounding, and final accuracies within half a point. Later steps'
# losses are printed, not judged: training amplifies rounding, alone as much as merged.
FIRST_STEP_TOLERANCE = 1e-5
METRIC_TOLERANCE = 0.005


# ---------------------------------------------------------------------- trials across processes
def save_trials(trials: list[optimizer.Trial], path: str) -> None:
    """Trials as their JSON plus initial weights (the JSON leaves weights out)."""
    torch.save([(t.to_json(), t.initial_state) for t in trials], path)


def load_trials(path: str) -> list[optimizer.Trial]:
    trials = []
    for text, state in torch.load(path, weights_only=True):
        trial = optimizer.Trial.from_json(text)
        trial.initial_state = state
        trials.append(trial)
    return trials


# ---------------------------------------------------------------------- timing helpers
class StepClock:
    """``on_step`` callback: when each step of each run ended, and for how many trials."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int, tuple[str, ...]]] = []

    def __call__(self, epoch: int, step: int, losses: dict[str, float]) -> None:
        self.calls.append((time.perf_counter(), step, tuple(losses)))

    def runs(self) -> list[list[tuple[float, int, tuple[str, ...]]]]:
        """Calls split where a new epoch loop starts (step 0)."""
        runs: list[list] = []
        for call in self.calls:
            if call[1] == 0 or not runs:
                runs.append([])
            runs[-1].append(call)
        return runs

    def steady(self) -> tuple[int, float]:
        """(trial-steps, seconds) from each run's first step to its last."""
        steps, seconds = 0, 0.0
        for run in self.runs():
            if len(run) > 1:
                steps += sum(len(names) for _, _, names in run[1:])
                seconds += run[-1][0] - run[0][0]
        return steps, seconds

    def step_seconds_of(self) -> dict[str, float]:
        """Independent runs: the median seconds of each trial's steady steps."""
        steps: dict[str, list[float]] = {}
        for run in self.runs():
            if len(run) > 1 and len(run[0][2]) == 1:
                steps.setdefault(run[0][2][0], []).extend(b[0] - a[0] for a, b in zip(run, run[1:]))
        return {name: statistics.median(v) for name, v in steps.items()}


def median_seconds(fn, budget: float = 0.5, at_least: int = 7, at_most: int = 50) -> float:
    fn()  # warm-up
    fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < at_least or len(times) < at_most and time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_mb(device: str = "cpu") -> float:
    """The process's peak memory: its maxrss on the CPU, the device allocator's peak on an accelerator."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------------- measurements (own processes)
def measure(job: dict) -> dict:
    """One run of ``job["mode"]`` ("merged", "independent" or "vmap") over the saved trials."""
    torch.set_num_threads(job["threads"])
    warnings.simplefilter("ignore")
    trials = load_trials(job["path"])
    for trial in trials:
        rdata.steps_per_epoch(trial.data)  # making the data set (reading a folder, or tensors) is not training
    device = job["device"]
    if device.startswith("cuda"):  # TF32 rounds each kernel its own way: compare in float32, as on the CPU
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    os.environ["RETIARII_CACHE_DIR"] = job["cache"]
    result = (train_vmap(trials, device) if job["mode"] == "vmap"
              else train_ours(trials, job["mode"] == "independent", device, job["autotune"]))
    result["peak_mb"] = peak_mb(device)  # before anything else runs here: the first run's is the training's own
    if job["mode"] == "independent":  # warm, and under the same load as the steps it is compared with
        result["part"] = measure_part(trials, job["workload"], device)
    return result


def train_ours(trials: list[optimizer.Trial], independent: bool, device: str, autotune: bool = True) -> dict:
    plan_seconds = [0.0]
    plans: list[optimizer.Plan] = []
    real_plan, real_build = trainer.plan, trainer.build_merged_module

    def timed_plan(*args, **kwargs):
        start = time.perf_counter()
        p = real_plan(*args, **kwargs)
        plan_seconds[0] += time.perf_counter() - start
        plans.append(p)
        return p

    def timed_build(*args, **kwargs):
        start = time.perf_counter()
        module = real_build(*args, **kwargs)
        plan_seconds[0] += time.perf_counter() - start
        return module

    builds = [0]
    real_group_build = trainer._GroupRun._build

    def counted_build(self):
        builds[0] += 1
        real_group_build(self)

    trainer.plan, trainer.build_merged_module, trainer._GroupRun._build = timed_plan, timed_build, counted_build
    clock = StepClock()
    try:
        results = trainer.train_trials(trials, optimizer.PASSES, device=device, independent=independent,
                                       on_step=clock, autotune=autotune)
    finally:
        trainer.plan, trainer.build_merged_module, trainer._GroupRun._build = real_plan, real_build, real_group_build
    steps, seconds = clock.steady()
    batching = sorted({r.batching.split(":")[0] for r in results if r.batching})  # "kept" / "off" (timed)
    first = plans[0] if plans else None
    batched_nodes = sum(b.width for b in first.batched) if first and not independent and "off" not in batching else 0
    return {
        "steps": steps, "seconds": seconds, "plan_seconds": plan_seconds[0],
        "losses": {r.name: r.losses for r in results}, "metrics": {r.name: r.metric for r in results},
        "problems": [f"{r.name}: {r.status} {r.error or ''} {r.trained_as}".strip() for r in results
                     if r.status != "succeeded" or "failed" in r.trained_as],
        "step_alone": clock.step_seconds_of() if independent else {},
        "shared_nodes": len(first.shared) if first and not independent else 0,
        "batched_nodes": batched_nodes, "batching": "/".join(batching) or "-",
        "total_nodes": sum(len(t.graph.nodes) for t in trials),
        "replans": builds[0] - 1 if not independent else 0,
    }


def measure_part(trials: list[optimizer.Trial], workload: str, device: str) -> dict[str, float]:
    """Seconds of the part of a trial's step that merging can save, per trial name (see the
    module docstring): the shared frozen part, each of the first 4 trials' forward+backward, or
    (a data workload) each trial's model step on a batch already in memory."""
    source = rdata.open_source(trials[0].data)
    try:
        x, y = next(source.epoch(0, device))
    finally:
        source.close()
    if models.WORKLOADS[workload].data:
        return {f"model:{t.name}": model_step_seconds(t, x, y, device) for t in trials[:4]}
    shared = models.WORKLOADS[workload].shared
    if shared is not None:  # grad mode on, as in training: its weights are frozen, so no graph is built
        module = shared(trials[0].initial_state).to(device)  # in the mode the trials run it

        def shared_forward() -> None:
            module(x)
            synchronize(device)

        return {"*": median_seconds(shared_forward)}
    parts = {}
    for trial in trials[:4]:
        module = trainer.build_merged_module(trial.graph, device)
        module.load_state_dict(trial.initial_state, strict=True)
        module.train()

        def forward_backward() -> None:
            module.zero_grad(set_to_none=True)
            trainer.loss_of(trial.train, module(x), y).backward()
            synchronize(device)

        parts[trial.name] = median_seconds(forward_backward)
    return parts


def loader_images_per_second(job: dict) -> dict[str, float]:
    """Images per second of the trainer's loader (seeded items, one loader for a merged group)
    and of a plain ``DataLoader`` loop over the same Dataset with the same settings; the two
    alternate ``job["repeats"]`` times, each over ``job["batches"]`` batches after a warm-up."""
    from torch.utils.data import DataLoader

    torch.set_num_threads(job["threads"])
    from retiarii_ir.runtime.references import resolve

    spec = models.png_spec()
    train, _ = resolve(spec.dataset)(**spec.factory_kwargs())  # the user's own Dataset, for the plain loop
    rates: dict[str, list[float]] = {"ours": [], "plain": []}

    def timed(batches) -> float:
        next(batches)  # warm-up: the workers start and fill their queues
        start = time.perf_counter()
        for _ in range(job["batches"]):
            next(batches)
        return job["batches"] * spec.batch_size / (time.perf_counter() - start)

    def ours() -> float:
        source = rdata.open_source(spec)
        try:
            return timed(source.epoch(0))
        finally:
            source.close()

    def plain() -> float:
        loader = DataLoader(train, batch_size=spec.batch_size, shuffle=True, num_workers=spec.num_workers,
                            drop_last=True, generator=torch.Generator().manual_seed(0),
                            multiprocessing_context="fork")  # as the trainer's loader starts its workers
        return timed(iter(loader))

    for repeat in range(job["repeats"]):  # alternating which goes first
        for mode, run in ((("ours", ours), ("plain", plain)) if repeat % 2 == 0 else (("plain", plain), ("ours", ours))):
            rates[mode].append(run())
    return {mode: statistics.median(values) for mode, values in rates.items()}


def model_step_seconds(trial: optimizer.Trial, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    """One training step of the trial's model alone (forward, backward, SGD) on a batch in memory."""
    module = trainer.build_merged_module(trial.graph, device)
    module.load_state_dict(trial.initial_state, strict=True)
    module.train()
    sgd = torch.optim.SGD(module.parameters(), lr=trial.train.lr, momentum=trial.train.momentum)

    def step() -> None:
        sgd.zero_grad(set_to_none=True)
        trainer.loss_of(trial.train, module(x), y).backward()
        sgd.step()
        synchronize(device)

    return median_seconds(step)


def share_of(part: dict[str, float], step_alone: dict[str, float]) -> float | None:
    """The part over the step of one trial alone (the mean over the row's trials for a shared part;
    for a data workload, 1 - model step over the whole step)."""
    if not step_alone:
        return None
    if any(key.startswith("model:") for key in part):
        names = [key[len("model:"):] for key in part]
        return max(0.0, 1 - sum(part[f"model:{n}"] for n in names) / sum(step_alone[n] for n in names))
    if "*" in part:
        return part["*"] / statistics.mean(step_alone.values())
    return sum(part.values()) / sum(step_alone[name] for name in part)


# ---------------------------------------------------------------------- the peer: torch.func.vmap
def train_vmap(trials: list[optimizer.Trial], device: str) -> dict:
    """K copies of the lr-sweep CNN trained by hand: stacked weights, a vmapped forward and loss,
    and SGD with momentum whose learning rate is a (K,) tensor broadcast over the stacked dim."""
    from torch.func import functional_call, stack_module_state

    start = time.perf_counter()
    copies = []
    for trial in trials:
        module = models.SmallCNN()
        module.load_state_dict(trial.initial_state, strict=True)
        copies.append(module.to(device))
    params, buffers = stack_module_state(copies)
    base = models.SmallCNN().to("meta")
    config = trials[0].train
    lr = torch.tensor([t.train.lr for t in trials], device=device)
    lr_of = {name: lr.view(-1, *[1] * (p.dim() - 1)) for name, p in params.items()}
    momentum = {name: None for name in params}

    def loss_of(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    batched_loss = torch.func.vmap(loss_of, in_dims=(0, 0, None, None))
    plan_seconds = time.perf_counter() - start

    losses: list[list[float]] = [[] for _ in trials]
    clock = StepClock()
    steps = min(rdata.steps_per_epoch(trials[0].data), config.max_steps or math.inf)
    names = tuple(t.name for t in trials)
    for epoch in range(config.epochs):
        for step, (x, y) in enumerate(rdata.batches(trials[0].data, epoch, device)):
            if step == steps:
                break
            for p in params.values():
                p.grad = None
            loss = batched_loss(params, buffers, x, y)
            loss.sum().backward()
            with torch.no_grad():
                for name, p in params.items():
                    if momentum[name] is None:
                        momentum[name] = p.grad.clone()
                    else:
                        momentum[name].mul_(config.momentum).add_(p.grad)
                    p.sub_(lr_of[name] * momentum[name])
            for k, value in enumerate(loss.tolist()):
                losses[k].append(value)
            clock(epoch, step, dict.fromkeys(names))
    trial_steps, seconds = clock.steady()
    val = rdata.dataset(trials[0].data.dataset)
    with torch.no_grad():
        val_x, val_y = val.val_x.to(device), val.val_y.to(device)
        predictions = torch.func.vmap(lambda p, b: functional_call(base, (p, b), (val_x,)))(params, buffers)
        accuracy = (predictions.argmax(-1) == val_y).float().mean(1).tolist()
    return {"steps": trial_steps, "seconds": seconds, "plan_seconds": plan_seconds,
            "losses": dict(zip(names, losses)), "metrics": dict(zip(names, accuracy)), "problems": [],
            "step_alone": {}, "shared_nodes": 0, "batched_nodes": 0, "batching": "-", "total_nodes": 0,
            "replans": 0}


# ---------------------------------------------------------------------- comparing and printing
def rel_loss_diffs(a: dict[str, list[float]], b: dict[str, list[float]]) -> tuple[float, float]:
    """(largest relative difference at the first step, largest at any step) over the trials."""
    first, worst = 0.0, 0.0
    for name, reference in b.items():
        other = a.get(name, [])
        if len(other) != len(reference) or not reference:
            return math.inf, math.inf
        diffs = [abs(u - v) / max(abs(v), 1e-8) for u, v in zip(other, reference)]
        first, worst = max(first, diffs[0]), max(worst, max(diffs))
    return first, worst


def max_metric_diff(a: dict[str, float | None], b: dict[str, float | None]) -> float:
    return max(abs(a[n] - b[n]) if a.get(n) is not None and b[n] is not None else math.inf for n in b)


def throughput(run: dict) -> float:
    return run["steps"] / run["seconds"] if run["seconds"] > 0 else math.nan


def median_of(runs: list[dict], key) -> float:
    return statistics.median(key(r) for r in runs)


def row_of(k_trials: int, runs: dict[str, list], sharing: bool) -> dict:
    merged, alone = runs["merged"], runs["independent"]
    m_tp, i_tp = median_of(merged, throughput), median_of(alone, throughput)
    shares = [share_of(run["part"], run["step_alone"]) for run in alone]
    share = statistics.median(shares) if shares and None not in shares else None
    first_diff, loss_diff = rel_loss_diffs(merged[0]["losses"], alone[0]["losses"])
    metric_diff = max_metric_diff(merged[0]["metrics"], alone[0]["metrics"])
    first = merged[0]
    bound = "-"
    if sharing and share is not None:
        bound = f"{1 / (1 - share + share / k_trials):.2f}x" if share < 1 else "?"
    row = {
        "K": str(k_trials),
        "merged steps/s": f"{m_tp:.1f}",
        "indep steps/s": f"{i_tp:.1f}",
        "ratio": f"{m_tp / i_tp:.2f}x",
        "share": "-" if share is None else f"{share:.0%}",
        "bound": bound,
        "peak MB merged": f"{merged[0]['peak_mb']:.0f}",
        "peak MB indep": f"{alone[0]['peak_mb']:.0f}",
        "plan s merged cold/warm": f"{merged[0]['plan_seconds']:.2f}/"
                                   + (f"{statistics.median(r['plan_seconds'] for r in merged[1:]):.2f}" if len(merged) > 1 else "-"),
        "plan s indep": f"{alone[0]['plan_seconds']:.2f}",
        "rel loss diff 1st/max": f"{first_diff:.0e}/{loss_diff:.0e}",
        "metric diff": f"{metric_diff:.3f}",
        "shared/batched nodes": f"{first['shared_nodes']}/{first['batched_nodes']} of {first['total_nodes']}",
        "batching (timed)": "/".join(sorted({r["batching"] for r in merged})),
    }
    if "vmap" in runs:
        v_tp = median_of(runs["vmap"], throughput)
        row["vmap steps/s"] = f"{v_tp:.1f}"
        row["ours/vmap"] = f"{m_tp / v_tp:.2f}x"
        row["vmap loss diff 1st/max"] = "{:.0e}/{:.0e}".format(*rel_loss_diffs(runs["vmap"][0]["losses"],
                                                                             alone[0]["losses"]))
    problems = sorted({p for mode in ("merged", "independent", "vmap") for r in runs.get(mode, ())
                       for p in r["problems"]})
    replans = max(r["replans"] for r in merged)
    row["_ok"] = first_diff <= FIRST_STEP_TOLERANCE and metric_diff <= METRIC_TOLERANCE and not problems
    row["_notes"] = problems + ([f"merged group re-planned {replans} time(s)"] if replans else [])
    if not row["_ok"] and not problems:
        row["_notes"].append("merged results differ from alone-trained ones beyond tolerance")
    return row


def print_table(title: str, rows: list[dict]) -> None:
    columns = [c for c in rows[0] if not c.startswith("_")]
    print(f"\n{title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")
    for row in rows:
        for note in row["_notes"]:
            print(f"  K={row['K']}: {note}")
    sys.stdout.flush()


def summary_cell(row: dict) -> str:
    """A row's ratio with what to judge it by: Amdahl's bound, or the vmap peer."""
    if row["bound"] not in ("-", "?"):
        return f"{row['ratio']} (bound {row['bound']})"
    return f"{row['ratio']} (ours/vmap {row['ours/vmap']})" if "ours/vmap" in row else row["ratio"]


# ---------------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(models.WORKLOADS),
                        help=f"comma-separated subset of {','.join(models.WORKLOADS)}")
    parser.add_argument("--ks", default="1,2,4,8,16", help="comma-separated numbers of trials")
    parser.add_argument("--steps", type=int, default=10, help="training steps per trial (batch 64)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs per mode; medians are printed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where present")
    parser.add_argument("--no-autotune", dest="autotune", action="store_false",
                        help="batch every matched layer, without timing first (checks batching's equivalence)")
    parser.add_argument("--quick", action="store_true", help="smoke run: K 1,2, 3 steps, 1 repeat")
    options = parser.parse_args(argv)
    if options.quick:
        if options.ks == parser.get_default("ks"):
            options.ks = "1,2"
        options.steps, options.repeats = 3, 1
    try:
        options.workloads = [w.strip() for w in options.workloads.split(",") if w.strip()]
        options.ks = [int(k) for k in options.ks.split(",")]
    except ValueError:
        parser.error("--ks takes comma-separated integers")
    unknown = set(options.workloads) - set(models.WORKLOADS)
    if unknown or not options.workloads:
        parser.error(f"--workloads: choose from {','.join(models.WORKLOADS)}")
    if not options.ks or min(options.ks) < 1:
        parser.error("--ks: numbers of trials must be >= 1")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {options.device}: no CUDA device here")
    if options.steps < 2 or options.repeats < 1 or options.threads < 1:
        parser.error("--steps must be >= 2 (the first step is warm-up), --repeats and --threads >= 1")
    return options


def measure_row(context, path: str, key: str, options) -> dict[str, list]:
    """Each mode in its own fresh process, the modes' runs alternating."""
    modes = ("merged", "independent") + (("vmap",) if key == "c" else ())
    runs: dict[str, list] = {mode: [] for mode in modes}
    with contextlib.ExitStack() as stack:  # not daemonic: a data workload's loader starts worker processes
        pools = {mode: stack.enter_context(ProcessPoolExecutor(1, mp_context=context)) for mode in modes}
        for repeat in range(options.repeats):
            for mode in modes if repeat % 2 == 0 else tuple(reversed(modes)):
                job = {"path": path, "mode": mode, "threads": options.threads, "workload": key,
                       "device": options.device, "autotune": options.autotune, "cache": options.cache}
                runs[mode].append(pools[mode].submit(measure, job).result())
    return runs


def main(argv=None) -> int:
    options = parse_args(argv)
    torch.set_num_threads(options.threads)
    warnings.simplefilter("ignore")
    context = multiprocessing.get_context("forkserver")
    # imports only (no computation before a fork); the last two are imported lazily by the
    # first torch.optim optimizer and the digits loader, seconds each that would count as nothing
    context.set_forkserver_preload(["benchmarks.cross_model", "torch._dynamo", "sklearn.datasets"])
    multiprocessing.forkserver.ensure_running()  # its imports overlap with building the first trials
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    cache = tempfile.TemporaryDirectory(prefix="retiarii-bench-cache-")  # cold at the start of each run
    options.cache = cache.name
    where = (f"on {torch.cuda.get_device_name(options.device)}" if options.device.startswith("cuda")
             else f"{options.threads} thread(s)")
    print(f"cross-model training: merged (all passes) vs independent, {options.steps} steps of batch "
          f"{models.BATCH} per trial, {where}, median of {options.repeats} alternating runs")
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in options.workloads:
            workload = models.WORKLOADS[key]
            rows = []
            for k_trials in options.ks:
                path = os.path.join(tmp, f"{key}_{k_trials}.pt")
                save_trials(workload.trials(k_trials, options.steps), path)
                if not summary and not rows and options.device == "cpu":
                    with context.Pool(1) as pool:
                        baseline = pool.apply(peak_mb)
                    print(f"each mode runs in its own fresh process; peak MB is its maxrss (a process that has "
                          f"only imported the code: {baseline:.0f} MB)")
                elif not summary and not rows:
                    print("each mode runs in its own fresh process; peak MB is the device allocator's peak")
                rows.append(row_of(k_trials, measure_row(context, path, key, options), workload.sharing))
                print(f"  ({key}) K={k_trials} done, {time.perf_counter() - started:.0f} s", file=sys.stderr,
                      flush=True)
            print_table(f"({key}) {workload.title}", rows)
            summary.append((key, rows))
            if workload.data:
                with ProcessPoolExecutor(1, mp_context=context) as pool:
                    repeats = max(5, options.repeats)
                    rate = pool.submit(loader_images_per_second, {"threads": options.threads, "batches": 40,
                                                                  "repeats": repeats}).result()
                print(f"  the trainer's loader: {rate['ours']:.0f} images/s; a plain DataLoader loop over the same "
                      f"Dataset, same settings: {rate['plain']:.0f} images/s ({rate['ours'] / rate['plain']:.2f}x; "
                      f"median of {repeats} alternating runs of 40 batches)")
    differ = [r for _, rows in summary for r in rows if not r["_ok"]]
    largest = ", ".join(f"({key}) {summary_cell(rows[-1])}" for key, rows in summary)
    print(f"\nsummary: merged/independent throughput at K={options.ks[-1]}: {largest}; "
          + ("every row's losses and accuracies equal alone-trained ones within tolerance"
             if not differ else "rows that DIFFER from alone-trained results or had failures: "
             + ", ".join(f"({key}) K={r['K']}" for key, rows in summary for r in rows if not r["_ok"]))
          + f"; {time.perf_counter() - started:.0f} s, load average {load_before:.1f} before and "
          f"{os.getloadavg()[0]:.1f} after (other processes on the CPUs make timings noisy)")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
