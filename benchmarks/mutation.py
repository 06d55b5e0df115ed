"""Mutation score of the core modules, one row per module (a report, not a gate).

    pip install -e ".[test,mutation]"
    python benchmarks/mutation.py                       # every module below
    python benchmarks/mutation.py serialize graph       # some of them
    python benchmarks/mutation.py --survivors out.md    # also write each surviving mutant's diff

Each module runs mutmut in its own copy of the repository (under the temp dir, so nothing
is written into the working tree), against the test files that exercise it: mutmut runs,
for each mutant, only the tests that call the mutated function, fastest first, and stops at
the first failure; a mutant that survives pays for all of them. So the optimizer leaves out
the three real-space cases of its each-pass test (13 of its 22 seconds, and nearly every
mutant calls them); the digits space and small models of each layer kind stand in for them.
Statements that only raise an error are not mutated: their message text is not behaviour
the tests pin. mutmut 3 leaves functions with decorators (other than a lone
``@staticmethod`` or ``@classmethod``) alone.
Score = killed / (killed + survived + timeouts + no tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["retiarii_ir"]
# The copy is laid out as the package installs (codegen/ as retiarii_ir/codegen/...), so the tests
# import the mutated files rather than the repository's through the editable install.
INSTALLED = {"codegen": "retiarii_ir/codegen", "optimizer": "retiarii_ir/optimizer",
             "strategies": "retiarii_ir/strategies", "runtime": "retiarii_ir/runtime"}


def installed(path: str) -> str:
    """A repository path as it lies in the installed layout."""
    top, _, rest = path.partition("/")
    return f"{INSTALLED[top]}/{rest}" if top in INSTALLED else path

MODULES: dict[str, tuple[list[str], list[str]]] = {
    # name: (files to mutate, test files that exercise them)
    "serialize": (["retiarii_ir/serialize.py"], ["tests/test_ir_json.py", "tests/test_ir_graph.py",
                                                 "tests/test_json_robustness.py", "tests/test_trust.py"]),
    "graph": (["retiarii_ir/graph.py"], ["tests/test_ir_graph.py", "tests/test_ir_json.py"]),
    "freeze": (["retiarii_ir/space/model_space.py", "retiarii_ir/space/choice_mutators.py",
                "retiarii_ir/space/mutator.py", "retiarii_ir/space/fixed.py"],
               ["tests/test_space_api.py", "tests/test_space_freeze.py", "tests/test_mutator.py"]),
    "strategies/base": (["strategies/base.py"], ["tests/test_strategies.py"]),
    "codegen/source": (["codegen/source.py"], ["tests/test_codegen_golden.py", "tests/test_codegen_features.py"]),
    "optimizer": (["optimizer/merge.py", "optimizer/cse.py", "optimizer/matching.py", "optimizer/batching.py"],
                  ["tests/test_optimizer_plan.py", "tests/test_optimizer_layers.py", "tests/test_optimizer_sharing.py",
                   *(arg for space in ("darts", "mobilenetv3", "nasbench201") for arg in (
                       "--deselect",
                       f"tests/test_optimizer_plan.py::test_each_pass_and_all_together_match_every_trial_alone[{space}]"))]),
}

STATUS = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not run"}
DIFFS = ("import json, sys\nfrom mutmut.mutation.diff_apply import get_diff_for_mutant\n"
         "print(json.dumps({m: get_diff_for_mutant(m, path=p) for m, p in json.load(sys.stdin)}))")
DO_NOT_MUTATE = [r"^\s*raise \w", r"^\s*warnings\.warn\("]


def config(mutate: list[str], tests: list[str]) -> str:
    quoted = lambda items: "[" + ", ".join(json.dumps(i) for i in items) + "]"  # noqa: E731
    return (f"\n[tool.mutmut]\nsource_paths = {quoted(PACKAGES)}\nonly_mutate = {quoted(mutate)}\n"
            f"do_not_mutate_patterns = {quoted(DO_NOT_MUTATE)}\n"
            f"pytest_add_cli_args_test_selection = {quoted(tests)}\n"
            f"pytest_add_cli_args = {quoted(['-p', 'no:cacheprovider', '-q'])}\n")


def copy_repository(into: Path) -> None:
    """The tracked and untracked-but-not-ignored files: what a fresh clone plus local edits holds."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = into / installed(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run_module(name: str, workdir: Path, children: int) -> tuple[Counter, list[tuple[str, str]], float]:
    """Counts by status, the survivors (mutant name, diff) and the seconds taken."""
    mutate, tests = MODULES[name]
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    copy_repository(workdir)
    mutate = [installed(path) for path in mutate]
    with open(workdir / "pyproject.toml", "a") as f:
        f.write(config(mutate, tests))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    mutmut = [sys.executable, "-c", "from mutmut.__main__ import cli; cli()"]
    start = time.monotonic()
    done = subprocess.run([*mutmut, "run", "--max-children", str(children)], cwd=workdir, env=env,
                          capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"mutmut failed for {name} (exit {done.returncode})")
    counts: Counter = Counter()
    alive: list[tuple[str, str, str]] = []  # mutant, its file, status
    for path in mutate:
        meta = json.loads((workdir / "mutants" / (path + ".meta")).read_text())
        for mutant, code in meta["exit_code_by_key"].items():
            status = STATUS.get(code, "suspicious")
            counts[status] += 1
            if status in ("survived", "no tests", "timeout"):
                alive.append((mutant, path, status))
    diffs = json.loads(subprocess.run(
        [sys.executable, "-c", DIFFS], input=json.dumps([(m, p) for m, p, _ in alive]), cwd=workdir, env=env,
        capture_output=True, text=True, check=True).stdout)
    return counts, [(f"{p}:{changed_line(workdir / p, diffs[m])} {m} ({status})", diffs[m])
                    for m, p, status in alive], seconds


def changed_line(source: Path, diff: str) -> int | str:
    """Line number, in the original file, of the first line a mutant changes."""
    removed = next((line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")), None)
    lines = source.read_text().splitlines()
    matches = [i + 1 for i, line in enumerate(lines) if removed is not None and line.strip() == removed.strip()]
    return matches[0] if len(matches) == 1 else "?"


def score(counts: Counter) -> float:
    judged = counts["killed"] + counts["survived"] + counts["timeout"] + counts["no tests"]
    return counts["killed"] / judged if judged else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "retiarii-ir-mutation")
    parser.add_argument("--survivors", type=Path, help="write every surviving mutant's diff to this file")
    args = parser.parse_args()
    try:
        import mutmut  # noqa: F401
    except ImportError:
        parser.error("mutation testing needs mutmut: pip install -e '.[mutation]'")
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown modules {unknown}; choose from {list(MODULES)}")
    args.modules = args.modules or list(MODULES)

    print("| module | mutants | killed | survived | timeout | no tests | score | minutes |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    report = []
    total = time.monotonic()
    for name in args.modules:
        counts, survivors, seconds = run_module(name, args.workdir / name.replace("/", "_"), args.children)
        report += [f"## {name}: {mutant}\n\n```diff\n{diff.strip()}\n```\n" for mutant, diff in survivors]
        print(f"| {name} | {sum(counts.values())} | {counts['killed']} | {counts['survived']} | {counts['timeout']} "
              f"| {counts['no tests']} | {score(counts):.1%} | {seconds / 60:.1f} |", flush=True)
        if args.survivors:  # after each module, so a stopped run keeps what it measured
            args.survivors.write_text("# Surviving mutants\n\n" + "\n".join(report))
    print(f"\ntotal: {(time.monotonic() - total) / 60:.1f} min, {args.children} mutants at a time")


if __name__ == "__main__":
    main()
