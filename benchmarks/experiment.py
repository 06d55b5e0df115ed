"""Wall time of one experiment (the same samples, the same seeds) run different ways: the
cross-model optimizer on vs off, and in-process vs a process pool vs Ray.

    python benchmarks/experiment.py                      # 16 trials, 4 modes, a few minutes on 2 cores
    python benchmarks/experiment.py --trials 8 --modes merged,independent

Each mode runs in its own fresh process; the time is ``Experiment.run()`` from start to the
last result, so it includes starting worker processes (pool) or a local cluster (Ray), the
store's writes and each trial's generated source and checkpoint. Random search with a fixed
seed proposes the same samples in every mode, and the passes are the exact ones (dedup, CSE).
The table gives, per mode, the largest difference of any sample's accuracy from the baseline's:
0 where the torch thread count is the same (in-process, 2 threads); the pool and Ray workers run
1 thread each, which sums convolutions in another order, and 2 epochs of Adam can grow that
rounding into a different prediction on a few validation images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = {
    "merged": "in-process, cross-model on",
    "independent": "in-process, cross-model off",
    "pool": "process pool (2 workers x 1 thread), cross-model on",
    "ray": "Ray local cluster (2 workers x 1 CPU), cross-model on",
}


def run_one(mode: str, folder: str, trials: int, epochs: int, concurrency: int) -> dict:
    import torch

    from retiarii_ir.runtime import Classification, Experiment, InProcess, ProcessPool, SpaceSpec

    torch.set_num_threads(2)
    if mode == "pool":
        executor = ProcessPool(2, threads=1)
    elif mode == "ray":
        from retiarii_ir.runtime import Ray

        executor = Ray(workers=2)
    else:
        executor = InProcess()
    experiment = Experiment(SpaceSpec("retiarii_ir.space.hub.digits:DigitsSpace", inputs=[(4, 1, 8, 8)]),
                            Classification("digits", epochs=epochs, optimizer="adam", lr=1e-2, batch_size=64),
                            "random", max_trials=trials, concurrency=concurrency, executor=executor,
                            cross_model=mode != "independent", storage=os.path.join(folder, f"{mode}.db"),
                            name=mode, progress=False, seed=0)
    experiment.space.build()  # tracing the space is the same for every mode: not timed
    start = time.perf_counter()
    experiment.run()
    seconds = time.perf_counter() - start
    metrics = {json.dumps(r.sample, sort_keys=True): r.metric for r in experiment.top(trials)}
    return {"seconds": seconds, "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.folder, args.trials, args.epochs, args.concurrency)))
        return
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    print(f"DigitsSpace, random search (seed 0), {args.trials} trials, {args.concurrency} in flight, "
          f"{args.epochs} epochs each; load average before: {os.getloadavg()[0]:.1f}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in modes:
            child = subprocess.run([sys.executable, __file__, "--one", mode, "--folder", folder,
                                    "--trials", str(args.trials), "--epochs", str(args.epochs),
                                    "--concurrency", str(args.concurrency)],
                                   capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if child.returncode != 0:
                print(f"{mode}: failed\n{child.stderr[-2000:]}", file=sys.stderr)
                continue
            results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    if not results:
        sys.exit(1)
    base = results.get("independent") or next(iter(results.values()))
    print(f"\n| mode | wall s | vs in-process, cross-model off | largest accuracy difference from it |")
    print("|---|---|---|---|")
    for mode, result in results.items():
        if set(result["metrics"]) != set(base["metrics"]):
            differs = "other samples"
        else:
            differs = f"{max(abs(result['metrics'][k] - base['metrics'][k]) for k in base['metrics']):.4f}"
        print(f"| {MODES[mode]} | {result['seconds']:.1f} | {base['seconds'] / result['seconds']:.2f}x | {differs} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
