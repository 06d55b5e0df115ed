"""``retiarii demo``: neural architecture search end to end on real data (scikit-learn's
digits), as an experiment: a feature extractor pretrained once and frozen, a model space on
top of it in plain PyTorch → typed IR → a strategy explores it, training several candidates
at a time as one merged model (which computes the frozen extractor once for all of them),
every trial recorded in the store → leaderboard → the winner as a standalone PyTorch file
and ONNX, and a plot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from retiarii_ir.optimizer import EXACT_PASSES
from retiarii_ir.space.hub import digits_features

from .registry import UsageError


def pretrain_features(data, path: str, epochs: int = 2, seed: int = 0) -> float:
    """Train the extractor under a linear classifier (Adam) on the training images and save
    its weights to ``path``; returns the classifier's validation accuracy."""
    train_x, train_y, val_x, val_y = data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(digits_features(), torch.nn.Flatten(), torch.nn.Linear(128 * 4 * 4, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(epochs):
            for batch in torch.randperm(len(train_x)).split(64):
                optimizer.zero_grad()
                F.cross_entropy(model(train_x[batch]), train_y[batch]).backward()
                optimizer.step()
    torch.save(model[0].state_dict(), path)
    with torch.no_grad():
        return (model(val_x).argmax(1) == val_y).float().mean().item()


def load_digits_tensors(seed: int = 0):
    """Digits as (train_x, train_y, val_x, val_y) tensors, images scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UsageError(None, "the demo needs scikit-learn: pip install -e '.[demo]'") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(x))
    return x[order[:split]], y[order[:split]], x[order[split:]], y[order[split:]]


_CHECK_STANDALONE = """
import sys, torch
sys.path = [p for p in sys.path if p not in ("", ".")]
import importlib.util
spec = importlib.util.spec_from_file_location("best_model", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
model = module.{cls}()
model.load_state_dict(torch.load(sys.argv[2], weights_only=True), strict=True)
data = torch.load(sys.argv[3], weights_only=True)
model.eval()
with torch.no_grad():
    print((model(data["x"]).argmax(1) == data["y"]).float().mean().item())
print("imported:", sorted(m for m in sys.modules if m.startswith(("retiarii_ir", "codegen", "runtime"))))
"""


# Operator batching adds in another order than training alone. SGD with momentum and a cosine
# schedule keeps that rounding small to the end (Adam at a constant 1e-2 grew it into accuracy
# differences of several points). By default the demo merges without batching (``EXACT_PASSES``):
# its trials share the data and the frozen extractor, and get bit-identical results.
RECIPE = dict(epochs=5, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine", batch_size=64)
QUICK_RECIPE = dict(RECIPE, epochs=2, lr=0.1, batch_size=32)  # twice the steps per epoch, a larger step


def fit_demo_threads() -> str | None:
    """Torch threads for the cores other work leaves free (unless the user chose with
    OMP_NUM_THREADS); a line saying so when fewer than torch's default. On a busy machine the
    intra-op threads would wait on each other at every small operation of these small models."""
    from retiarii_ir.runtime.lifetime import busy_cores, fit_threads, owned_cores

    if "OMP_NUM_THREADS" in os.environ:
        return None
    threads = min(fit_threads(), torch.get_num_threads())
    if threads >= torch.get_num_threads():
        return None
    torch.set_num_threads(threads)
    return (f"note: this machine is busy ({busy_cores():.0f} of its {owned_cores()} cores run other work): "
            f"training with {threads} torch thread{'s' if threads > 1 else ''}")


def run_demo(quick: bool = False, out_dir: str = "retiarii-demo", merge: bool = True,
             passes: tuple[str, ...] = EXACT_PASSES, device: str = "cpu") -> int:
    """The experiment flow end to end: a recorded search, the leaderboard, the winner exported
    as standalone code + ONNX and re-checked in a fresh interpreter, and the plot."""
    from retiarii_ir.runtime.experiments.evaluators import Classification
    from retiarii_ir.runtime.experiments.experiment import Experiment, check_device
    from retiarii_ir.runtime.experiments.export import export
    from retiarii_ir.runtime.experiments.leaderboard import format_top, top
    from retiarii_ir.runtime.experiments.plot import MISSING_MATPLOTLIB, matplotlib_installed, plot_experiment
    from retiarii_ir.runtime.experiments.space_spec import SpaceSpec
    from retiarii_ir.runtime.experiments.store import Store

    device = check_device(device)  # before any work
    if note := fit_demo_threads():
        print(note)
    out_dir = os.path.abspath(out_dir)  # the standalone check runs inside it: no relative paths from here on
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UsageError("--out", f"cannot write {out_dir}: {e.strerror}") from None
    storage = os.path.join(out_dir, "experiment.db")
    features = os.path.join(out_dir, "features.pt")
    for old in (storage, os.path.join(out_dir, "experiment-artifacts"), features):  # the demo starts afresh each time
        if os.path.isdir(old):
            shutil.rmtree(old)
        elif os.path.exists(old):
            os.remove(old)
    data = load_digits_tensors()
    print(f"digits: {len(data[0])} training and {len(data[2])} validation images, 8x8")

    start = time.perf_counter()
    accuracy = pretrain_features(data, features, epochs=1 if quick else 2)
    print(f"\n0. pretrained a feature extractor (3 convolutions) in {time.perf_counter() - start:.1f}s: "
          f"{accuracy:.3f} validation accuracy under a linear classifier; saved to {features}")
    start = time.perf_counter()
    spec = SpaceSpec("retiarii_ir.space.hub.digits:PretrainedDigitsSpace", inputs=[(4, 1, 8, 8)],
                     kwargs={"features": features})
    space = spec.build()
    print(f"\n1. traced the model space in {time.perf_counter() - start:.2f}s: {space.size} architectures "
          f"on top of the frozen extractor")
    for label, values in space.choices().items():
        print(f"   {label:>6}: {values}")

    trials = 6 if quick else 16
    recipe = QUICK_RECIPE if quick else RECIPE
    epochs = recipe["epochs"]
    experiment = Experiment(spec, Classification("digits", **recipe),
                            "evolution", strategy_options={"population_size": 4, "sample_size": 2},
                            max_trials=trials, concurrency=4, cross_model=merge, passes=passes, storage=storage,
                            name="demo", seed=0, device=device)
    how = (f"trained together as one merged model that computes the frozen extractor once, passes {', '.join(passes)}"
           if merge else "trained one after another")
    how += f", on {device}" if device != "cpu" else ""
    print(f"\n2. regularized evolution, {trials} trials, 4 proposals in flight ({how}), {epochs} epoch(s) each;")
    print(f"   every trial recorded in {storage} (watch it: retiarii dashboard demo --storage {storage})")
    start = time.perf_counter()
    state = experiment.run()
    print(f"   search took {time.perf_counter() - start:.1f}s; {state.done} of {state.done + state.failed} "
          f"trials succeeded")
    store = Store(storage, create=False)
    study_id = store.study_id("demo")
    leaders = top(store, study_id, 5)
    if not leaders:
        print("   no trial succeeded; see the errors above", file=sys.stderr)
        return 1
    print(format_top(leaders).replace("\n", "\n   ").join(["   ", ""]))
    best = leaders[0]

    paths = export(store, "demo", 1, out_dir, stem="best_model")
    with open(os.path.join(out_dir, "best_sample.json"), "w") as f:
        json.dump(best.sample, f, indent=1)
    pictures = ", ".join(os.path.basename(paths[k]) for k in ("picture", "picture_png") if k in paths)
    print(f"\n3. exported the winner (trial {best.number}) as plain PyTorch and ONNX: {paths['model']} "
          f"(+ weights {os.path.basename(paths['weights'])}, {os.path.basename(paths['onnx'])}; its picture: {pictures})")

    same_threads = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same sums as training
    check = subprocess.run([sys.executable, "-I", "-B", "-c", _CHECK_STANDALONE.format(cls="Model"),
                            paths["model"], paths["weights"], paths["validation"]],
                           capture_output=True, text=True, cwd=out_dir, env=same_threads)
    if check.returncode != 0:
        print(check.stderr, file=sys.stderr)
        return 1
    standalone, imported = check.stdout.splitlines()[:2]
    print(f"4. fresh interpreter, only torch: accuracy {float(standalone):.3f} "
          f"(recorded {best.metric:.3f}); {imported}")
    plot_path = os.path.join(out_dir, "search.png")
    if matplotlib_installed():  # an optional extra: without it the demo's results still stand
        plot_experiment(store, "demo", plot_path)
        print(f"5. plot of the search: {plot_path}")
    else:
        print(f"5. no plot of the search ({MISSING_MATPLOTLIB})")
    print(f"\nnext: retiarii top demo --storage {storage}; the same flow from a config file: retiarii run CONFIG.py")
    return 0 if abs(float(standalone) - best.metric) < 1e-6 else 1
