"""A user's folder holding their own ``optimizer.py``, ``runtime.py``, ``codegen.py`` and
``strategies.py`` (some of the most common file names in ML repositories): the library must not
be shadowed by them, nor shadow them. Run as ``python tests/user_files_check.py [FOLDER]`` (``.ci/run``
does, with the installed ``retiarii`` command), and by ``tests/test_user_files.py``.

In the folder it runs a script that imports the library, traces a space, trains two trials
merged and exports the winner as standalone code, then ``retiarii demo --quick``."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

USER_FILES = {
    name: f'"""The user\'s own {name}.py."""\nOWNER = "user"\nPASSES = "not the library\'s"\n'
    for name in ("optimizer", "runtime", "codegen", "strategies")
}

SCRIPT = '''
import importlib.util, sys
import torch
import optimizer, runtime, codegen as my_codegen, strategies       # the user's own files, beside this script
import retiarii_ir as ir
import retiarii_ir.nn as nn
from retiarii_ir import codegen
from retiarii_ir.optimizer import DataSpec, TrainConfig, Trial
from retiarii_ir.runtime.training import train_trials
from retiarii_ir.space.hub import DigitsSpace

assert {m.OWNER for m in (optimizer, runtime, my_codegen, strategies)} == {"user"}
assert nn.LayerChoice.__module__.startswith("retiarii_ir.")
space = ir.trace_space(DigitsSpace(), torch.randn(2, 1, 8, 8))
samples = [space.random_sample(seed=s) for s in (0, 1)]
trials = [Trial(f"t{i}", space.freeze(s), DataSpec("digits", batch_size=64), TrainConfig(epochs=1, max_steps=4))
          for i, s in enumerate(samples)]
results = train_trials(trials, ("dedup", "cse"))
assert all(r.status == "succeeded" for r in results), [r.error for r in results]
assert results[0].trained_as.startswith("merged"), results[0].trained_as
best = max(range(2), key=lambda i: results[i].metric)
codegen.write_module(trials[best].graph, "best_model.py", class_name="Best")
spec = importlib.util.spec_from_file_location("best_model", "best_model.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.Best()
model.load_state_dict(results[best].state, strict=True)
print("winner", samples[best], "accuracy", results[best].metric)
'''


def _retiarii() -> list[str]:
    """The installed command beside this interpreter (as a user runs it); where this interpreter
    has none, its own ``python -m`` form, never a ``retiarii`` of another Python found on PATH
    (whose install may point at a checkout that is gone)."""
    beside = os.path.join(os.path.dirname(sys.executable), "retiarii")
    return [beside] if os.path.exists(beside) else [sys.executable, "-m", "retiarii_ir.runtime.cli"]


def check(folder: str) -> list[str]:
    """Run both in ``folder``; returns what each printed last (raises on a failure)."""
    for name, text in USER_FILES.items():
        with open(os.path.join(folder, f"{name}.py"), "w", encoding="utf-8") as f:
            f.write(text)
    with open(os.path.join(folder, "train.py"), "w", encoding="utf-8") as f:
        f.write(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user's shell has it
    env.setdefault("OMP_NUM_THREADS", "1")
    lines = []
    for argv in ([sys.executable, "train.py"], [*_retiarii(), "demo", "--quick", "--out", "demo"]):
        done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed in a folder holding the user's optimizer.py, runtime.py, "
                               f"codegen.py and strategies.py:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        lines.append(done.stdout.strip().splitlines()[-1])
    return lines


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="user-files-")
    os.makedirs(target, exist_ok=True)
    for line in check(target):
        print(line)
    print(f"the library ran beside the user's optimizer.py, runtime.py, codegen.py and strategies.py in {target}")
