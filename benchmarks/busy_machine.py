"""``retiarii demo --quick`` on a quiet machine and on one whose every core a busy loop keeps
busy, timed end to end as a user runs it (a fresh process each time), side by side.

    python benchmarks/busy_machine.py                 # quiet, then busy (one busy loop per core)
    python benchmarks/busy_machine.py --pinned        # also busy with torch's default threads forced
                                                      # (OMP_NUM_THREADS=cores), as before the demo
                                                      # sized its threads to the free cores

The busy loops start 3 s before the demo, so the machine is busy when it looks."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def _demo(env: dict) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "retiarii_ir.runtime.cli", "demo", "--quick", "--out", folder],
                             env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"the demo failed:\n{run.stderr[-3000:]}")
    note = next((line for line in run.stdout.splitlines() if line.startswith("note:")), "")
    return seconds, note


def _busy(env: dict, hogs: int) -> tuple[float, str]:
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    try:
        time.sleep(3)
        return _demo(env)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pinned", action="store_true", help="also time the busy run with torch's default threads")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         env.get("PYTHONPATH", "")])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cores} cores, load average {load:.2f} before the quiet run")
    quiet, _ = _demo(env)
    print(f"quiet:                          {quiet:6.1f} s")
    busy, note = _busy(env, cores)
    print(f"busy ({cores} busy loops):           {busy:6.1f} s  = {busy / quiet:.2f}x quiet   ({note or 'no note'})")
    if args.pinned:
        pinned, _ = _busy({**env, "OMP_NUM_THREADS": str(cores)}, cores)
        print(f"busy, OMP_NUM_THREADS={cores} forced: {pinned:6.1f} s  = {pinned / quiet:.2f}x quiet")


if __name__ == "__main__":
    main()
