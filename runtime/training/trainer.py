"""The batching trainer: K trials trained as one merged module, each with its own loss,
optimizer, hyperparameters, gradient clipping and metrics, and results equal to training
each alone.

Each trial's parameters are its own tensors, or its rows of a tensor a fused layer stacks for
K trials; ``runtime/optimizers.py`` steps each row exactly as ``torch.optim`` steps it alone,
one set of kernels for the whole group, per-trial hyperparameters included. A trial whose
loss stops being finite, or that is stopped early, leaves the group and the rest are
re-planned without it. A group that fails as a whole is split and retried, down to single
trials: a merge never costs a trial.

    results = train_trials(trials)                    # merged: dedup and CSE, bit-exact
    results = train_trials(trials, PASSES)            # merged, with operator batching where it pays
    results = train_trials(trials, independent=True)  # one after another, for comparison
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retiarii_ir import build_module, codegen
from retiarii_ir.errors import IRError, first_line
from retiarii_ir.optimizer import EXACT_PASSES, DataSpec, Plan, Trial, initial_state, plan

from .autotune import batched_step_key, fastest_seconds, fusing_pays
from .decisions import decide
from .data import DataError, open_source, steps_per_epoch
from .optimizers import GroupOptimizer

StopRule = Callable[[str, int, dict[str, float]], bool]


@dataclass
class TrialResult:
    """What training one trial gave, whichever way it was trained."""

    name: str
    status: str = "running"  # "succeeded", "failed" or "stopped"
    losses: list[float] = field(default_factory=list)  # one per step
    metrics: list[dict[str, float]] = field(default_factory=list)  # one per epoch
    error: str | None = None
    state: dict[str, torch.Tensor] | None = None  # final weights, the trial's own keys
    seconds: float = 0.0
    trained_as: str = ""  # "alone", or "merged with K" (and how it fell back)
    batching: str = ""  # in a group asked to batch: "kept", "off" or "none" (nothing to batch), and why

    @property
    def metric(self) -> float | None:
        """The last epoch's validation metric (accuracy, or negative MSE)."""
        return self.metrics[-1]["metric"] if self.metrics else None


# ---------------------------------------------------------------------- pieces
def build_merged_module(graph, device: torch.device | str = "cpu") -> nn.Module:
    """The graph as generated PyTorch code (fast), or through the interpreter if no code can be
    generated for it (e.g. a user's own layer). Its initial weights are overwritten by the
    trials' own, so building it leaves the global random stream (dropout's) untouched."""
    with torch.random.fork_rng(devices=[]):
        try:
            module = codegen.load(graph, formatted=False)()
        except IRError:
            module = build_module(graph)
    return module.to(device)


def loss_of(config, output: torch.Tensor, target: torch.Tensor, user_loss: Callable | None = None) -> torch.Tensor:
    """The trial's loss on one batch: a built-in one, or the user's ``loss(output, target)``."""
    if user_loss is not None:
        value = user_loss(output, target)
        if not (isinstance(value, torch.Tensor) and value.dim() == 0):
            raise IRError(f"the loss {config.loss} returned {type(value).__name__}"
                          f"{list(value.shape) if isinstance(value, torch.Tensor) else ''}, not a scalar tensor")
        return value
    if config.loss == "cross_entropy":
        return F.cross_entropy(output, target)
    return F.mse_loss(output.squeeze(-1) if output.dim() > target.dim() else output, target.to(output.dtype))


def metric_of(config, task: str | None, prediction: torch.Tensor, target: torch.Tensor,
              user_metric: Callable | None = None) -> float:
    """The validation metric: the user's ``metric(outputs, targets)``, else accuracy for
    classification and negative MSE for regression (as the data set says, or the loss)."""
    if user_metric is not None:
        value = user_metric(prediction, target)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise IRError(f"the metric {config.metric} returned {type(value).__name__}, not a number") from None
        return value
    if config.metric:
        name = config.metric
    elif task:
        name = "accuracy" if task == "classification" else "neg_mse"
    elif config.loss in ("cross_entropy", "mse"):
        name = "accuracy" if config.loss == "cross_entropy" else "neg_mse"
    else:
        name = "neg_mse" if target.is_floating_point() else "accuracy"
    if name == "accuracy":
        return (prediction.argmax(1) == target).float().mean().item()
    return -loss_of(config.__class__(loss="mse"), prediction, target).item()


@torch.no_grad()
def _validate(module: nn.Module, group: Plan, active: list[int], device, sources: dict,
              functions: "_UserFunctions") -> dict[int, dict[str, float]]:
    """Each active trial's validation metric. The validation split of each distinct data spec is
    read once; trials may read different splits: a trial whose split is used up is fed its first
    batch again and those outputs are dropped."""
    module.eval()
    specs = {k: group.slots[k].trial.data for k in active}
    streams = {spec: sources[spec].validation(device) for spec in set(specs.values())}
    firsts: dict = {}
    outputs: dict[int, list[torch.Tensor]] = {k: [] for k in active}
    targets: dict[int, list[torch.Tensor]] = {k: [] for k in active}
    try:
        while True:
            current, live = {}, set()
            for spec, stream in streams.items():
                batch = next(stream, None)
                if batch is not None:
                    firsts.setdefault(spec, batch)
                    current[spec] = batch
                    live.add(spec)
                else:
                    current[spec] = firsts[spec]
            if not live:
                break
            out = module(*_inputs_per_trial(group, {k: current[spec][0] for k, spec in specs.items()}))
            for k, spec in specs.items():
                if spec in live:
                    outputs[k].append(out[k])
                    targets[k].append(current[spec][1])
    finally:
        for stream in streams.values():
            stream.close()
    results = {}
    for k in active:
        config = group.slots[k].trial.train
        results[k] = {"metric": metric_of(config, sources[specs[k]].task, torch.cat(outputs[k]), torch.cat(targets[k]),
                                          functions.metric(config))}
    group.train_mode(module)
    return results


class _UserFunctions:
    """The user's loss and metric functions named by the trials' configs, resolved once."""

    def __init__(self, trust) -> None:
        self.trust = trust
        self._resolved: dict[str, Callable] = {}

    def _get(self, reference: str | None) -> Callable | None:
        if reference is None or ":" not in reference:
            return None
        if reference not in self._resolved:
            from ..references import resolve

            self._resolved[reference] = resolve(reference, self.trust)
        return self._resolved[reference]

    def loss(self, config) -> Callable | None:
        return self._get(config.loss)

    def metric(self, config) -> Callable | None:
        return self._get(config.metric)


# Batching is kept only when its timed step is clearly faster: its kernels round differently
# from training alone and hold K trials' activations at once, which a win within timing noise
# does not pay for.
BATCHING_MARGIN = 0.9
_STEP_LABELS = {"kept": "batched", "kept, every layer fused": "batched (every layer fused)", "off": "unbatched"}

# ---------------------------------------------------------------------- one merged group
class _GroupRun:
    """Trains the trials of one plan in lock step, re-planning when one leaves."""

    def __init__(self, trials: list[Trial], passes, device, on_step, should_stop, results, autotune=True,
                 trust=None, packages: tuple[str, ...] = (), plans: list[Plan] | None = None) -> None:
        self.passes, self.device, self.autotune = tuple(passes), torch.device(device), autotune
        self.on_step, self.should_stop = on_step, should_stop
        self.results = results
        self.trust, self.functions = trust, _UserFunctions(trust)
        self.packages = packages  # what the merged graph may build beyond what its trials' graphs trust
        self.plans = plans if plans is not None else []  # every plan trained with, in order
        self.sources: dict = {}  # a source per distinct data spec (and per trial where batches are not shared)
        self._first_batches: dict = {}  # the first batch per data spec, for timing steps
        self.states = {t.name: initial_state(t, packages) for t in trials}
        self.optimizer_states: dict[str, list[dict]] = {}
        self.trials = list(trials)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def source(self, key) -> Any:
        """The batches of ``key``: a data spec, or (trial name, spec) for a trial reading its own."""
        if key not in self.sources:
            self.sources[key] = open_source(key if isinstance(key, DataSpec) else key[1], self.trust)
        return self.sources[key]

    def close(self) -> None:
        """Shut every loader (and its worker processes) down."""
        sources, self.sources = self.sources, {}
        for source in sources.values():
            source.close()

    def _build(self) -> None:
        self.plan, self.module = self._choose()
        self.plans.append(self.plan)
        self._load(self.plan, self.module)
        tensors = [self.plan.trial_parameters(self.module, k) for k in range(len(self.trials))]
        self.optimizers = GroupOptimizer([t.train for t in self.trials], tensors, self._steps() * self.trials[0].train.epochs)
        for k, trial in enumerate(self.trials):
            if trial.name in self.optimizer_states:
                self.optimizers.load_state(k, self.optimizer_states[trial.name])

    def _load(self, group: Plan, module: nn.Module) -> None:
        """Every trial's current weights and buffers into ``module``; frozen ones stop training."""
        group.train_mode(module)
        named = dict(module.named_parameters())
        for k, trial in enumerate(self.trials):
            group.load_trial_state(module, k, self.states[trial.name])
            for key in trial.frozen:
                ref = group.slots[k].state.get(key)
                param = named.get(ref.key) if ref else None
                if param is not None:
                    param.requires_grad_(False)

    def _choose(self) -> tuple[Plan, nn.Module]:
        """The plan with the passes asked for. With autotune, operator batching is chosen by
        timing training steps (forward, backward, optimizer) of the candidates on this device:
        batched with the convolutions ``fusing_pays`` picks, batched with every matched layer
        fused, and unbatched. Batching stays only where its faster form is clearly faster
        (``BATCHING_MARGIN``): fused kernels save launches, but where a step is bound by
        arithmetic (a small CPU), the joins and splits around them can cost more. The choice
        is remembered (``decisions``): identical runs choose alike, and time it once."""
        fuse = fusing_pays(self.device) if self.autotune else None
        if not (self.autotune and "batch" in self.passes and len(self.trials) > 1):
            return self._planned(self.passes, fuse)
        unbatched = tuple(p for p in self.passes if p != "batch")
        plans = {"kept": lambda: self._planned(self.passes, fuse), "kept, every layer fused":
                 lambda: self._planned(self.passes, None), "off": lambda: self._planned(unbatched, None)}
        measured: dict[str, tuple[Plan, nn.Module]] = {}

        def measure() -> tuple[str, str]:
            measured["kept"] = plans["kept"]()
            every = plans["kept, every layer fused"]()
            if len(every[0].batched) != len(measured["kept"][0].batched):  # some convolutions timed slower fused
                measured["kept, every layer fused"] = every
            if not any(group.batched for group, _ in measured.values()):
                return "none", "nothing to batch"
            measured["off"] = plans["off"]()
            seconds, failed = self._time_candidates(measured)
            batched = {name: s for name, s in seconds.items() if name != "off"}
            if not batched:
                return "off", f"the batched step failed ({failed})"
            best = min(batched, key=batched.get)
            keep = batched[best] < BATCHING_MARGIN * seconds["off"]
            times = ", ".join(f"{seconds[n] * 1e3:.1f} ms {_STEP_LABELS[n]}" for n in measured if n in seconds)
            return best if keep else "off", f"a step took {times}"

        key = batched_step_key(self.trials, self.passes, self.packages)
        choice, how = decide("batched_step", key, str(self.device), measure, choices=tuple(plans) + ("none",))
        verdict = choice.split(",")[0]
        for trial in self.trials:
            self.results[trial.name].batching = f"{verdict}: {how}" + (" (every matched layer fused)"
                                                                        if choice == "kept, every layer fused" else "")
        choice = "kept" if choice == "none" else choice
        return measured[choice] if choice in measured else plans[choice]()

    def _time_candidates(self, candidates: dict[str, tuple[Plan, nn.Module]],
                         rounds: int = 3) -> tuple[dict[str, float], str]:
        """Median over ``rounds`` of each candidate's fastest step, the candidates taking turns
        within each round, so a change of load on the machine falls on all of them alike. A
        batched candidate whose step fails is dropped (with the reason)."""
        times: dict[str, list[float]] = {name: [] for name in candidates}
        failed = ""
        for round_ in range(rounds):
            names = list(times) if round_ % 2 == 0 else list(reversed(times))
            for name in names:
                try:
                    times[name].append(self._step_seconds(*candidates[name], repeats=2))
                except Exception as error:  # noqa: BLE001 - a fused kernel that fails costs the batching, not the merge
                    if name == "off":
                        raise
                    failed = f"{type(error).__name__}: {first_line(error)}"
                    del times[name]
        return {name: sorted(values)[len(values) // 2] for name, values in times.items()}, failed

    def _planned(self, passes: tuple[str, ...], fuse) -> tuple[Plan, nn.Module]:
        chosen = plan(self.trials, passes, fuse=fuse, trust=self.packages)
        return chosen, build_merged_module(chosen.graph, self.device)

    def _step_seconds(self, group: Plan, module: nn.Module, repeats: int = 3) -> float:
        """The fastest of a few training steps (forward, backward, optimizer) on the first batch.
        Nothing it changes is kept: ``_load`` puts the weights and buffers back before training,
        the optimizer used here is thrown away, and the global random stream is restored."""
        self._load(group, module)
        first = self._first_batches
        for spec in {t.data for t in self.trials} - set(first):
            stream = self.source(spec).epoch(0, self.device)
            first[spec] = next(stream)
            stream.close()
        inputs = _inputs_per_trial(group, {k: first[t.data][0] for k, t in enumerate(self.trials)})
        optimizers = GroupOptimizer([t.train for t in self.trials],
                                    [group.trial_parameters(module, k) for k in range(len(self.trials))])

        def step() -> None:
            outputs = module(*inputs)
            optimizers.zero_grad()
            sum(loss_of(t.train, outputs[k], first[t.data][1], self.functions.loss(t.train))
                for k, t in enumerate(self.trials)).backward()
            optimizers.step()

        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return fastest_seconds(step, self.device, repeats)

    def _leave(self, names: set[str]) -> None:
        """Keep the others' weights and optimizer state; plan again without ``names``."""
        for k, trial in enumerate(self.trials):
            self.states[trial.name] = self.plan.trial_state(self.module, k)
            self.optimizer_states[trial.name] = self.optimizers.state_of(k)
        self.trials = [t for t in self.trials if t.name not in names]
        if self.trials:
            self._build()

    def run(self) -> None:
        config = self.trials[0].train
        start = time.perf_counter()
        label = f"merged with {len(self.trials)}" if len(self.trials) > 1 else "alone"
        for trial in self.trials:
            self.results[trial.name].trained_as = label
        for epoch in range(config.epochs):
            if not self.trials:  # every trial has left (stopped or failed)
                return
            streams = {}
            try:
                for step in range(self._steps()):
                    if not self.trials:
                        return
                    self._step(epoch, step, streams)
            finally:
                for stream in streams.values():
                    if hasattr(stream, "close"):
                        stream.close()  # an epoch cut short by max_steps stops its loader's workers
            self._end_epoch(epoch)
        for k, trial in enumerate(self.trials):
            result = self.results[trial.name]
            result.status = "succeeded"
            result.state = self.plan.trial_state(self.module, k)
        elapsed = time.perf_counter() - start
        for trial in self.trials:
            self.results[trial.name].seconds = elapsed

    def _steps(self) -> int:
        config = self.trials[0].train
        per_epoch = self.source(self.trials[0].data).steps_per_epoch()
        return min(per_epoch, config.max_steps) if config.max_steps else per_epoch

    def _step(self, epoch: int, step: int, streams: dict) -> None:
        x_of, y_of = {}, {}
        for k, trial in enumerate(self.trials):
            key = trial.data if "dedup" in self.passes else (trial.name, trial.data)
            if key not in streams:
                streams[key] = self.source(key).epoch(epoch, self.device)
            if (key, step) not in streams:  # each distinct data spec read once per step
                streams[(key, step)] = next(streams[key])
            x_of[k], y_of[k] = streams[(key, step)]
        outputs = self.module(*_inputs_per_trial(self.plan, x_of))
        every_loss = [loss_of(trial.train, outputs[k], y_of[k], self.functions.loss(trial.train))
                      for k, trial in enumerate(self.trials)]
        values = _values_of(every_loss)
        losses, failed = [], {}
        for trial, loss, value in zip(self.trials, every_loss, values):
            if not math.isfinite(value):
                failed[trial.name] = f"loss became {value} at epoch {epoch} step {step}"
                continue
            self.results[trial.name].losses.append(value)
            losses.append(loss)
        self.optimizers.zero_grad()
        if losses:
            torch.stack(losses).sum().backward()
        for k, trial in enumerate(self.trials):
            if trial.name in failed:  # a fused kernel may still have given its weights (zero or NaN) gradients
                self.optimizers.drop_gradients(k)
            elif trial.train.grad_clip:
                self.optimizers.clip_grad_norm(k, trial.train.grad_clip)
        self.optimizers.step(epoch * self._steps() + step)  # tensors without gradients are left as they are
        if self.on_step:
            self.on_step(epoch, step, {t.name: self.results[t.name].losses[-1] for t in self.trials
                                       if t.name not in failed})
        if failed:
            for name, reason in failed.items():
                self.results[name].status, self.results[name].error = "failed", reason
            self._leave(set(failed))

    def _end_epoch(self, epoch: int) -> None:
        if not self.trials:
            return
        for spec in {t.data for t in self.trials}:
            self.source(spec)  # validation reads each distinct spec once, whether or not training shared it
        metrics = _validate(self.module, self.plan, list(range(len(self.trials))), self.device, self.sources,
                            self.functions)
        stopped = set()
        for k, trial in enumerate(self.trials):
            self.results[trial.name].metrics.append(metrics[k])
            if self.should_stop and self.should_stop(trial.name, epoch, metrics[k]):
                self.results[trial.name].status = "stopped"
                self.results[trial.name].state = self.plan.trial_state(self.module, k)
                stopped.add(trial.name)
        if stopped:
            self._leave(stopped)


def _values_of(losses: list[torch.Tensor]) -> list[float]:
    """The losses as Python floats, read from the device in one transfer where their dtypes agree."""
    if len({loss.dtype for loss in losses}) == 1:
        return torch.stack([loss.detach() for loss in losses]).tolist()
    return [loss.item() for loss in losses]


def _inputs_per_trial(group: Plan, x_of: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    by_name: dict[str, torch.Tensor] = {}
    for k, slot in enumerate(group.slots):
        by_name.setdefault(slot.inputs[0], x_of[k])
    return [by_name[name] for name in group.inputs]


# ---------------------------------------------------------------------- entry points
def lockstep_key(trial: Trial, trust=None) -> tuple:
    """Trials with equal keys take the same number of steps and epochs on batches of one size:
    they can share a group. (Trials whose batches differ in size share no batch and no fused
    kernel, so merging them would gain nothing and their fused layers would fail.)"""
    config = trial.train
    per_epoch = steps_per_epoch(trial.data, trust)
    return (min(per_epoch, config.max_steps) if config.max_steps else per_epoch, config.epochs, trial.data.batch_size)


def train_trials(trials: list[Trial], passes=EXACT_PASSES, device: torch.device | str = "cpu", *,
                 independent: bool = False, max_group: int | None = None,
                 memory_budget: int | None = None, on_step=None, should_stop: StopRule | None = None,
                 progress: bool = False, autotune: bool = True, trust=None) -> "TrainingResults":
    """Train every trial; results in the order given, and ``.plans``, the plans trained with.

    The default passes (``EXACT_PASSES``: input dedup and common-subgraph elimination) give each
    trial the results it gets alone, bit for bit; ``passes=PASSES`` adds operator batching
    (faster where it pays, which is timed; its kernels round differently).

    Trials that can run in lock step are merged (``independent=True`` trains each alone);
    ``max_group`` and ``memory_budget`` (bytes, estimated) cap a merged group's size. A
    trial whose data cannot be read fails with the reason; the others go on. ``trust``: a list
    of packages whose layers the merged model may build (beyond each traced model's own, which
    its graph trusts already); or a ``runtime.references.Trust``, which also says what references
    read from data (a factory, a loss) may import."""
    reference_trust, packages = _split_trust(trust)
    results = {t.name: TrialResult(t.name) for t in trials}
    plans: list[Plan] = []
    if len(results) != len(trials):
        raise IRError("trial names must be unique")
    groups: dict[tuple, list[Trial]] = {}
    for trial in trials:
        try:
            key = lockstep_key(trial, reference_trust)
        except IRError as error:  # its data cannot even be counted: it fails alone
            results[trial.name].status, results[trial.name].error = "failed", f"{type(error).__name__}: {error}"
            continue
        groups.setdefault(key, []).append(trial)
    for members in groups.values():
        for chunk in _chunks(members, 1 if independent else max_group, memory_budget, packages):
            _train_with_fallback(chunk, passes if not independent else (), device, on_step, should_stop,
                                 results, progress, autotune, reference_trust, packages, plans)
    return TrainingResults([results[t.name] for t in trials], plans)


class TrainingResults(list):
    """The trials' results, in the order given, and ``plans``: every plan a group trained with
    (a group re-planned after a trial left, or split after a failure, adds its new plans)."""

    def __init__(self, results: list[TrialResult], plans: list[Plan]) -> None:
        super().__init__(results)
        self.plans = plans


def _split_trust(trust) -> tuple[Any, tuple[str, ...]]:
    """(the references' trust, the packages planning may build from) out of ``trust``."""
    from ..references import Trust

    if trust is None:
        return None, ()
    if isinstance(trust, Trust):
        return trust, tuple(sorted(trust.packages))
    if isinstance(trust, str) or not all(isinstance(p, str) for p in trust):
        raise IRError(f"trust is a list of package names (or a Trust), got {str(trust)[:80]!r}")
    return None, tuple(trust)


def _chunks(members: list[Trial], size: int | None, budget: int | None, packages=()) -> list[list[Trial]]:
    size = size or len(members)
    if budget is not None:
        per_trial = max(estimate_training_bytes(t, packages) for t in members)
        size = max(1, min(size, budget // max(per_trial, 1)))
    return [members[i:i + size] for i in range(0, len(members), size)]


def estimate_training_bytes(trial: Trial, trust: tuple[str, ...] = ()) -> int:
    """Weights, gradients, optimizer state and the activations of one batch, roughly."""
    from retiarii_ir import TensorType
    from retiarii_ir.types import concrete_dim

    weights = sum(v.numel() * v.element_size() for v in build_module(trial.graph, trust, device="meta").state_dict().values())
    activations = 0
    for node in trial.graph.nodes:
        if isinstance(node.type, TensorType):
            activations += math.prod(concrete_dim(d, trial.data.batch_size) for d in node.type.shape) * 4
    return 4 * weights + 2 * activations


def _as_data_error(error: Exception, run: "_GroupRun | None") -> Exception:
    """A loader worker's death reported by torch wherever the main process was (its signal
    handler raises a RuntimeError naming the worker's pid), as the data error of its pipeline."""
    from .pipeline import reported_worker_pids

    pids = reported_worker_pids(error)
    if not pids or run is None:
        return error
    for source in run.sources.values():
        if hasattr(source, "owns_worker") and any(source.owns_worker(pid) for pid in pids):
            return source.error(f"the data loader failed: {first_line(error)}")
    return error


def _train_with_fallback(trials: list[Trial], passes, device, on_step, should_stop, results, progress,
                         autotune: bool = True, trust=None, packages: tuple[str, ...] = (),
                         plans: list[Plan] | None = None) -> None:
    """Train ``trials`` merged; if the group fails as a whole, halves, down to single trials. A
    data error fails the trials that read that data, and the others train again without them."""
    names = ", ".join(t.name for t in trials)
    if progress:
        print(f"training {len(trials)} trial(s) {'merged' if len(trials) > 1 else 'alone'}: {names}",
              file=sys.stderr, flush=True)
    run = None
    try:
        run = _GroupRun(trials, passes, device, on_step, should_stop, results, autotune, trust, packages, plans)
        run.run()
        return
    except Exception as error:  # noqa: BLE001 - any failure of the group: retry smaller, lose nothing
        error = _as_data_error(error, run)
        reason = f"{type(error).__name__}: {first_line(error)}"
        readers = [t for t in trials if isinstance(error, DataError) and (
            error.spec == t.data if error.spec is not None else error.source == t.data.dataset)]
    finally:
        if run is not None:
            run.close()
    if readers:
        for trial in readers:
            results[trial.name] = TrialResult(trial.name, status="failed", error=reason)
        rest = [t for t in trials if t not in readers]
        for trial in rest:
            results[trial.name] = TrialResult(trial.name)  # start again from the trial's seed
        if rest:
            _train_with_fallback(rest, passes, device, on_step, should_stop, results, progress, autotune, trust,
                                 packages, plans)
        return
    if len(trials) == 1:
        result = results[trials[0].name]
        result.status, result.error = "failed", reason
        return
    for trial in trials:
        results[trial.name] = TrialResult(trial.name)  # start again from the trial's seed
    half = len(trials) // 2
    for part in (trials[:half], trials[half:]):
        _train_with_fallback(part, passes, device, on_step, should_stop, results, progress, autotune, trust,
                             packages, plans)
        for trial in part:
            results[trial.name].trained_as += f" (group of {len(trials)} failed: {reason})"
