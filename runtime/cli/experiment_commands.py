"""``retiarii run / resume / status / top / export / plot / dashboard``: experiments from the
command line. Every error about the input is one line with exit code 2."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from .registry import UsageError, command
from retiarii_ir.runtime.experiments.store import DEFAULT_STORAGE

_SETTINGS = ("strategy", "strategy_options", "max_trials", "max_duration", "concurrency", "cross_model",
             "name", "storage", "executor", "seed", "optimize_mode", "retries", "trial_timeout", "passes",
             "artifacts", "device")


def load_config(path: str, storage: str | None = None, name: str | None = None):
    """The Experiment a config file defines: ``experiment = Experiment(...)``, or ``space``,
    ``evaluator`` and optionally ``strategy``, ``max_trials``, ... as top-level names."""
    from retiarii_ir.runtime.experiments.experiment import Experiment, check_name
    from retiarii_ir.runtime.errors import ConfigError
    from retiarii_ir.runtime.references import load_file_module

    if not os.path.isfile(path):
        raise ConfigError(f"no such config file: {path}")
    module = load_file_module(path)
    experiment = getattr(module, "experiment", None)
    if experiment is None:
        if not hasattr(module, "space") or not hasattr(module, "evaluator"):
            raise ConfigError(f"{path} defines neither `experiment = Experiment(...)` nor `space` and `evaluator`")
        settings = {key: getattr(module, key) for key in _SETTINGS if hasattr(module, key)}
        if "max_trials" not in settings and "max_duration" not in settings:
            settings["max_trials"] = 10
        experiment = Experiment(module.space, module.evaluator, **settings)
    elif not isinstance(experiment, Experiment):
        raise ConfigError(f"{path}: `experiment` is a {type(experiment).__name__}, not an Experiment")
    experiment.config_file = os.path.abspath(path)
    if storage:
        experiment.storage = storage
    if name:
        experiment.name, experiment.named = check_name(name), True
    return experiment


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None,
                   help=f"the experiment store: a file (default {DEFAULT_STORAGE}) or a database URL")


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment name")
    _storage_arg(p)


def _open(args):
    from retiarii_ir.runtime.experiments.experiment import check_name
    from retiarii_ir.runtime.experiments.store import Store

    store = Store(args.storage or DEFAULT_STORAGE, create=False)
    return store, store.study_id(check_name(args.experiment))


def _print_top(store, study_id, k: int) -> None:
    from retiarii_ir.runtime.experiments.leaderboard import format_top, top

    records = top(store, study_id, k)
    print(format_top(records) if records else "no finished trial yet")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a Python file defining the experiment (space, evaluator, strategy)")
    _storage_arg(p)
    p.add_argument("--name", help="experiment name (default: the config's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("run", "Run an experiment defined in a Python config file; records every trial in the store.", _run_args)
def run_command(args: argparse.Namespace) -> int:
    experiment = load_config(args.config, args.storage, args.name)
    if args.no_progress:
        experiment.progress = False
    return _run(experiment, "run")


def _run(experiment, how: str) -> int:
    """Run or resume; exit code 1 when every trial failed, with the reason most of them gave."""
    from retiarii_ir.runtime.experiments.store import Store

    print(f"experiment {experiment.name!r} in {Store(experiment.storage).url} ({experiment.executor.describe()})")
    state = getattr(experiment, how)()
    store = Store(experiment.storage, create=False)
    _print_top(store, store.study_id(experiment.name), 5)
    if state.exhausted:
        print(f"the space has no untried architecture left: {state.done + state.failed} trials in all, "
              f"fewer than the budget")
    if state.done == 0 and state.failed:
        reason, count = state.most_common_failure()
        print(f"retiarii {how}: every trial failed ({state.failed}); the most common reason ({count} of "
              f"{state.failed}): {reason}", file=sys.stderr)
        return 1
    print(f"export the best: retiarii export {experiment.name} --rank 1 --out best"
          + (f" --storage {experiment.storage}" if experiment.storage != DEFAULT_STORAGE else ""))
    return 0


def _resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the Python file the experiment was defined in (it runs again; the store only "
                                  "records what it defined)")
    _storage_arg(p)
    p.add_argument("--name", help="experiment name (default: the config's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("resume", "Resume a stopped experiment from its config file: finished trials are kept, interrupted ones "
                   "run again.", _resume_args)
def resume_command(args: argparse.Namespace) -> int:
    if not args.config.endswith(".py") and not os.path.exists(args.config):
        raise UsageError("config", f"resume runs the experiment's config file again: retiarii resume CONFIG.py "
                                   f"[--name NAME] ({args.config!r} is not a .py file)")
    experiment = load_config(args.config, args.storage, args.name)
    if not experiment.named:
        raise UsageError("--name", f"{args.config} names no experiment; give the one to resume with --name "
                                   f"(retiarii status lists them)")
    if args.no_progress:
        experiment.progress = False
    return _run(experiment, "resume")


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", help="experiment name (default: every experiment in the store)")
    _storage_arg(p)


@command("status", "Where an experiment stands: trials finished, running, failed, the best so far.", _status_args)
def status_command(args: argparse.Namespace) -> int:
    from retiarii_ir.runtime.experiments.leaderboard import format_status, status
    from retiarii_ir.runtime.experiments.store import Store

    store = Store(args.storage or DEFAULT_STORAGE, create=False)
    names = [args.experiment] if args.experiment else store.experiments()
    if not names:
        print(f"no experiment in {store.url}")
    for name in names:
        print(format_status(name, status(store, store.study_id(name))))
    return 0


def _top_args(p: argparse.ArgumentParser) -> None:
    _experiment_args(p)
    p.add_argument("-k", type=int, default=5, help="how many (default 5)")


@command("top", "The leaderboard: the k best finished trials.", _top_args)
def top_command(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise UsageError("-k", f"must be >= 1, got {args.k}")
    store, study_id = _open(args)
    _print_top(store, study_id, args.k)
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    _experiment_args(p)
    p.add_argument("--rank", type=int, default=1, help="1 = the best trial (default)")
    p.add_argument("--out", required=True, help="folder for model.py, model.pt, model.onnx")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    p.add_argument("--artifacts", help="the experiment's artifacts folder, where its definition named one "
                                       "(default: beside the store, STORE-artifacts/EXPERIMENT)")
    p.add_argument("--trust", action="append", default=[], metavar="PACKAGE",
                   help="a package whose code the store may name (the data loader for the validation split, "
                        "functions the model calls); nothing else is imported. Repeat for several")


@command("export", "Export a finished trial as standalone model.py + weights + model.onnx.", _export_args)
def export_command(args: argparse.Namespace) -> int:
    from .commands import check_output_folder
    from retiarii_ir.runtime.experiments.export import export
    from retiarii_ir.runtime.references import Trust

    out = check_output_folder(args.out, "--out")
    trust = Trust.of(packages=args.trust)
    store, _ = _open(args)
    paths = export(store, args.experiment, args.rank, out, onnx=not args.no_onnx,
                   artifacts=os.path.abspath(args.artifacts) if args.artifacts else None, trust=trust)
    for kind, path in paths.items():
        print(f"{kind:>10}: {path}")
    if "validation" in paths:
        print(f"re-check the metric with only torch: cd {args.out} && python model.py")
    return 0


def _plot_args(p: argparse.ArgumentParser) -> None:
    _experiment_args(p)
    p.add_argument("--out", help="PNG file (default: EXPERIMENT.png)")


@command("plot", "Plot metric vs trial and vs time (best so far), and which choices win, as a PNG.", _plot_args)
def plot_command(args: argparse.Namespace) -> int:
    from .commands import check_output_file
    from retiarii_ir.runtime.experiments.plot import plot_experiment

    out = check_output_file(args.out or f"{args.experiment}.png", "--out")
    store, _ = _open(args)
    plot_experiment(store, args.experiment, out)
    print(f"wrote {out}")
    return 0


def _trial_pictures(store, name: str, artifacts: str | None):
    """The artifact store holding each trial's architecture picture, which the dashboard shows
    on the trial's page (None when the experiment has no pictures yet). Like export, it reads
    only the folder beside the store or the one named on the command line, never a path the
    store itself names."""
    from optuna.artifacts import FileSystemArtifactStore

    from retiarii_ir.runtime.experiments.export import default_artifacts
    from retiarii_ir.runtime.experiments.pictures import dashboard_artifacts

    folder = dashboard_artifacts(os.path.abspath(artifacts) if artifacts else default_artifacts(store.url, name))
    return FileSystemArtifactStore(folder) if os.path.isdir(folder) else None


def _dashboard_args(p: argparse.ArgumentParser) -> None:
    _experiment_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--artifacts", help="the experiment's artifacts folder, where its definition named one "
                                       "(default: beside the store, STORE-artifacts/EXPERIMENT); the dashboard "
                                       "shows each trial's architecture picture from it")


@command("dashboard", "Serve the live web dashboard (optuna-dashboard) of an experiment's store.", _dashboard_args)
def dashboard_command(args: argparse.Namespace) -> int:
    try:
        import optuna_dashboard
    except ImportError:
        raise UsageError(None, "the dashboard needs optuna-dashboard: pip install -e '.[dashboard]'") from None
    if not 0 < args.port < 65536:
        raise UsageError("--port", f"must be 1-65535, got {args.port}")
    store, study_id = _open(args)
    print(f"dashboard of {store.url}: http://{args.host}:{args.port}/dashboard/studies/{study_id} (Ctrl-C stops it)",
          flush=True)
    try:
        optuna_dashboard.run_server(store.storage, host=args.host, port=args.port,
                                    artifact_store=_trial_pictures(store, args.experiment, args.artifacts))
    except OSError as e:  # an address that does not resolve, a port in use
        raise UsageError("--host" if isinstance(e, socket.gaierror) else "--port",
                         f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    return 0
