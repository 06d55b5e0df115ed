"""The worked example's search (``docs/examples/images``: PNG digits decoded, cropped, flipped and
normalised in DataLoader workers) run as a user runs it, ``retiarii run search.py``, merged and
with ``cross_model = False``, each in a fresh process and a fresh folder, side by side: the time
of each, and whether both trained the same trials to the same accuracies.

    python benchmarks/images_experiment.py            # the example's settings: 8 trials, 4 in flight
    python benchmarks/images_experiment.py --trials 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "docs", "examples", "images")


def run(folder: str, cross_model: bool, trials: int) -> tuple[float, dict[str, float]]:
    """Seconds of ``retiarii run`` (PNG folder already written) and each trial's accuracy by sample."""
    for name in ("pngdata.py", "search.py"):
        shutil.copy(os.path.join(EXAMPLE, name), folder)
    with open(os.path.join(folder, "search.py"), "a") as f:
        f.write(f"\nmax_trials = {trials}\ncross_model = {cross_model}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", "import pngdata; pngdata.make()"], cwd=folder, env=env, check=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "retiarii_ir.runtime.cli", "run", "search.py", "--no-progress"],
                          cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the search failed:\n{done.stderr[-3000:]}")
    with sqlite3.connect(os.path.join(folder, "retiarii.db")) as db:
        rows = db.execute("select a.value_json, v.value from trials t join trial_user_attributes a on "
                          "a.trial_id = t.trial_id and a.key = 'sample' join trial_values v on v.trial_id = t.trial_id")
        return seconds, {sample: value for sample, value in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    options = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for mode, merged in (("merged", True), ("cross_model=False", False)):
            folder = os.path.join(tmp, mode.split("=")[0])
            os.makedirs(folder)
            results[mode] = run(folder, merged, options.trials)
            print(f"  {mode}: {results[mode][0]:.1f} s", file=sys.stderr, flush=True)
    (merged_s, merged), (alone_s, alone) = results["merged"], results["cross_model=False"]
    same_trials = set(merged) == set(alone)
    differences = [abs(merged[s] - alone[s]) for s in merged if s in alone]
    print(f"retiarii run search.py (docs/examples/images), {options.trials} trials, 4 in flight, 2 loader workers; "
          f"load average {load:.1f} before\n")
    print("| run | seconds | vs cross_model=False |")
    print("|---|---:|---:|")
    print(f"| merged (the default) | {merged_s:.1f} | {alone_s / merged_s:.2f}x |")
    print(f"| cross_model=False | {alone_s:.1f} | - |")
    print(f"\nthe same trials: {'yes' if same_trials else 'NO'}; largest accuracy difference "
          f"{max(differences):.4f} over {len(differences)} trials")
    for sample in sorted(merged, key=lambda s: -merged[s]):
        print(f"  {json.loads(sample)}: {merged[sample]:.4f} merged, {alone.get(sample, float('nan')):.4f} alone")


if __name__ == "__main__":
    main()
