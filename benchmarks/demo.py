"""``retiarii demo`` with the cross-model optimizer on and off, measured side by side.

    python benchmarks/demo.py                 # 2 alternating runs per mode, the full demo
    python benchmarks/demo.py --repeats 3 --quick
    python benchmarks/demo.py --device cuda

Each run is the user's command in a fresh process and a fresh folder: merged (the default:
shared data and frozen extractor, no operator batching), ``--batch`` (merged with operator
batching too) and ``--independent`` (one proposal after another). It prints the median search and end-to-end seconds per mode, their
ratio to independent, and whether every trial got the same accuracy and the same winner.
Every run uses the same number of torch threads (see ``THREADS``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = {"merged": [], "batched": ["--batch"], "independent": ["--independent"]}


def _default_threads() -> str:
    import torch

    return str(torch.get_num_threads())


# Every run gets one thread count (torch's default unless OMP_NUM_THREADS is set): the demo would
# otherwise fit its threads to the load it sees, and another count sums in another order.
THREADS = os.environ.get("OMP_NUM_THREADS") or _default_threads()


def run_once(mode: str, folder: str, extra: list[str]) -> dict:
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, mode)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": THREADS}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "retiarii_ir.runtime.cli", "demo", *MODES[mode], *extra, "--out", out],
                          cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{mode} demo failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    search = float(re.search(r"search took ([\d.]+)s", done.stdout).group(1))
    db = os.path.join(out, "experiment.db")
    return {"total": seconds, "search": search, "metrics": trial_metrics(db), "samples": trial_samples(db)}


def trial_metrics(path: str) -> dict[int, float]:
    import sqlite3

    with sqlite3.connect(path) as db:
        rows = db.execute("select t.number, v.value from trials t join trial_values v on v.trial_id = t.trial_id")
        return dict(rows.fetchall())


def trial_samples(path: str) -> dict[int, str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        rows = db.execute("select t.number, a.value_json from trials t join trial_user_attributes a "
                          "on a.trial_id = t.trial_id where a.key = 'sample'")
        return dict(rows.fetchall())


def compare(run: dict, base: dict) -> str:
    """Accuracy differences of the trials that trained the same sample in both runs. Once one
    accuracy differs, evolution can propose other samples from then on: those are counted apart."""
    same = [n for n, sample in run["samples"].items() if base["samples"].get(n) == sample]
    diffs = [abs(run["metrics"][n] - base["metrics"][n]) for n in same]
    text = "all equal" if max(diffs, default=0) == 0 else f"max difference {max(diffs):.4f}"
    if len(same) < len(run["samples"]):
        text += f" ({len(same)} trials; the other {len(run['samples']) - len(same)} trained other samples)"
    return text


def winner(metrics: dict[int, float]) -> tuple[int, float]:
    number = max(metrics, key=lambda n: (metrics[n], -n))  # the leaderboard's order: metric, then trial
    return number, metrics[number]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per mode; medians are printed")
    parser.add_argument("--modes", default="merged,independent", help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    modes = args.modes.split(",")
    extra = (["--quick"] if args.quick else []) + ["--device", args.device]
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for mode in modes:
                runs[mode].append(run_once(mode, os.path.join(folder, str(repeat)), extra))
                print(f"  {mode} run {repeat + 1}: search {runs[mode][-1]['search']:.1f} s", file=sys.stderr)
    base = runs.get("independent")
    print(f"retiarii demo{' --quick' if args.quick else ''} on {args.device}, median of {args.repeats} "
          f"alternating runs (load average {load:.1f} before, {os.getloadavg()[0]:.1f} after)\n")
    print("| mode | search s | total s | speed-up vs independent: search | end to end | best (trial) "
          "| accuracies as independent |")
    print("|---|---:|---:|---:|---:|---|---|")
    for mode in modes:
        search = statistics.median(r["search"] for r in runs[mode])
        total = statistics.median(r["total"] for r in runs[mode])
        number, best = winner(runs[mode][0]["metrics"])
        if base and mode != "independent":
            speedup = (f"{statistics.median(r['search'] for r in base) / search:.2f}x | "
                       f"{statistics.median(r['total'] for r in base) / total:.2f}x")
            same = compare(runs[mode][0], base[0])
            same += "" if winner(base[0]["metrics"]) == (number, best) else ", another winner"
        else:
            speedup, same = "- | -", "-"
        print(f"| {mode} | {search:.1f} | {total:.1f} | {speedup} | {best:.4f} ({number}) | {same} |")


if __name__ == "__main__":
    main()
