"""The package layout holds: every "must not" row of DESIGN.md's table, public faces between
stages (a stage reaches another only through its package's ``__all__``), no underscore name
crossing a module, no import loop between the runtime's parts, and one import package."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = {"retiarii_ir": "retiarii_ir", "codegen": "retiarii_ir.codegen", "optimizer": "retiarii_ir.optimizer",
           "strategies": "retiarii_ir.strategies", "runtime": "retiarii_ir.runtime"}
STAGES = ("retiarii_ir.space", "retiarii_ir.codegen", "retiarii_ir.optimizer", "retiarii_ir.strategies",
          "retiarii_ir.runtime")
OLD_NAMES = ("codegen", "optimizer", "strategies", "runtime")
GRAPH_REWRITES = {"inline", "replace_op", "insert_on_edge", "replace_all_uses", "remove_node", "add_node", "reorder"}


def _module_of(path: str) -> str:
    """``runtime/cli/main.py`` -> ``retiarii_ir.runtime.cli.main``."""
    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    parts = FOLDERS[parts[0]].split(".") + parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files(folder: str) -> list[str]:
    found = []
    for base, dirs, files in os.walk(os.path.join(ROOT, folder)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [os.path.join(base, f) for f in files if f.endswith(".py")]
    return sorted(found)


PACKAGE_FILES = [f for folder in FOLDERS for f in _files(folder)]


def _stage(module: str) -> str:
    """The stage a module belongs to (``core`` for the IR core, None outside the project)."""
    if module == "retiarii_ir.nn":
        return "retiarii_ir.space"
    for stage in STAGES:
        if module == stage or module.startswith(stage + "."):
            return stage
    return "core" if module == "retiarii_ir" or module.startswith("retiarii_ir.") else None


def _imports(path: str) -> list[tuple[str, list[str], ast.AST]]:
    """Every import in a file, anywhere in it: (absolute module, names taken from it, node)."""
    module = _module_of(path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            found.append((target, [a.name for a in node.names], node))
    return found


def _imported_modules(path: str) -> set[str]:
    out = set()
    for module, names, _ in _imports(path):
        out.add(module)
        out |= {f"{module}.{name}" for name in names}
    return out


def _in(stage_folder: str) -> list[str]:
    return [f for f in PACKAGE_FILES if os.path.relpath(f, ROOT).startswith(stage_folder + os.sep)]


CORE = [f for f in _in("retiarii_ir") if not os.path.relpath(f, ROOT).startswith(os.path.join("retiarii_ir", "space"))
        and os.path.basename(f) not in ("__init__.py", "nn.py")]  # the package face and the nn alias load space/


def _reaching(files: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{os.path.relpath(f, ROOT)} imports {m}" for f in files for m in sorted(_imported_modules(f))
            if any(m == x or m.startswith(x + ".") for x in forbidden)]


# ---------------------------------------------------------------------- DESIGN.md's "must not" rows
def test_the_ir_core_imports_no_stage_and_not_its_own_space_package():
    assert _reaching(CORE, ("retiarii_ir.space", "retiarii_ir.nn", "retiarii_ir.codegen", "retiarii_ir.optimizer",
                            "retiarii_ir.strategies", "retiarii_ir.runtime")) == []


def test_the_space_package_needs_no_later_stage():
    assert _reaching(_in(os.path.join("retiarii_ir", "space")), ("retiarii_ir.codegen", "retiarii_ir.optimizer",
                                                                 "retiarii_ir.strategies", "retiarii_ir.runtime")) == []


def test_codegen_knows_nothing_of_strategies_or_trials():
    assert _reaching(_in("codegen"), ("retiarii_ir.strategies", "retiarii_ir.optimizer", "retiarii_ir.runtime",
                                      "retiarii_ir.space", "retiarii_ir.nn")) == []


def test_the_optimizer_runs_and_times_nothing():
    assert _reaching(_in("optimizer"), ("retiarii_ir.runtime", "retiarii_ir.strategies", "time", "timeit")) == []
    calls = [f"{os.path.relpath(f, ROOT)}:{node.lineno}" for f in _in("optimizer")
             for node in ast.walk(ast.parse(open(f).read()))
             if isinstance(node, ast.Attribute) and node.attr in ("synchronize", "perf_counter", "monotonic")]
    assert calls == []


def test_strategies_use_only_the_spaces_public_face():
    import retiarii_ir.space as space

    for path in _in("strategies"):
        for module, names, node in _imports(path):
            if _stage(module) == "retiarii_ir.space":
                assert module == "retiarii_ir.space", f"{path}:{node.lineno} reaches into {module}"
                assert set(names) <= set(space.__all__), f"{path}:{node.lineno} takes {names}"
        dunder_reads = [n.lineno for n in ast.walk(ast.parse(open(path).read()))
                        if isinstance(n, ast.Attribute) and n.attr == "__dict__"]
        assert dunder_reads == [], f"{path} reads a module's __dict__ at lines {dunder_reads}"


def test_the_runtime_rewrites_no_graph():
    assert _reaching(_in("runtime"), ("retiarii_ir.rewrite",)) == []
    calls = [f"{os.path.relpath(f, ROOT)}:{node.lineno} .{node.func.attr}()" for f in _in("runtime")
             for node in ast.walk(ast.parse(open(f).read()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in GRAPH_REWRITES]
    assert calls == []


# ---------------------------------------------------------------------- public faces
def test_no_module_takes_an_underscore_name_from_another():
    taken = [f"{os.path.relpath(f, ROOT)}:{node.lineno} {module} {names}" for f in PACKAGE_FILES
             for module, names, node in _imports(f) if _stage(module)
             and (any(n.startswith("_") for n in names) or any(p.startswith("_") for p in module.split(".")))]
    assert taken == []


def test_a_stage_reaches_another_only_through_its_package_all():
    reaches = []
    for path in PACKAGE_FILES:
        own = _stage(_module_of(path))
        for module, names, node in _imports(path):
            other = _stage(module)
            if other in (None, "core", own):
                continue
            face = importlib.import_module(module)
            public = getattr(face, "__all__", None)
            if not hasattr(face, "__path__") or public is None or not set(names) <= set(public):
                reaches.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {module} {names}")
    assert reaches == []


@pytest.mark.parametrize("package", [
    "retiarii_ir", "retiarii_ir.space", "retiarii_ir.space.hub", "retiarii_ir.codegen", "retiarii_ir.optimizer",
    "retiarii_ir.strategies", "retiarii_ir.strategies.oneshot", "retiarii_ir.runtime", "retiarii_ir.runtime.training",
    "retiarii_ir.runtime.experiments", "retiarii_ir.runtime.cli"])
def test_every_stage_states_its_public_names_and_each_exists(package):
    face = importlib.import_module(package)
    assert face.__all__ and all(hasattr(face, name) for name in face.__all__)


# ---------------------------------------------------------------------- runtime's three parts
def test_the_runtimes_parts_depend_one_way():
    """training <- experiments <- cli: no part imports one that comes after it."""
    assert _reaching(_in(os.path.join("runtime", "training")), ("retiarii_ir.runtime.experiments",
                                                                "retiarii_ir.runtime.cli")) == []
    assert _reaching(_in(os.path.join("runtime", "experiments")), ("retiarii_ir.runtime.cli",)) == []


def test_no_import_loop_among_the_command_line_modules():
    files = _in(os.path.join("runtime", "cli"))
    edges = {_module_of(f): {m for m in _imported_modules(f) if m.startswith("retiarii_ir.runtime.cli.")}
             for f in files}

    def reaches(start: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == origin or (nxt not in seen and (seen.add(nxt) or reaches(nxt, seen))):
                return True
        return False

    for origin in edges:
        assert not reaches(origin, set()), f"{origin} imports itself through others"


# ---------------------------------------------------------------------- one import package
def test_one_top_level_import_package_and_the_command_inside_it():
    project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    packages = project["tool"]["setuptools"]["packages"]
    assert {p.split(".")[0] for p in packages} == {"retiarii_ir"}
    assert project["project"]["scripts"]["retiarii"].startswith("retiarii_ir.")


def test_no_code_imports_the_stages_by_their_folder_names():
    """Folder names are the repository's layout, not import names: ``import codegen`` from the
    repository's root would load a second copy of it."""
    files = PACKAGE_FILES + _files("tests") + _files("benchmarks")
    old = [f"{os.path.relpath(f, ROOT)}:{node.lineno} {module}" for f in files
           for module, _, node in _imports_anywhere(f) if module.split(".")[0] in OLD_NAMES]
    assert old == []


def _imports_anywhere(path: str):
    """Absolute imports of a file outside the package (tests, benchmarks)."""
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, [], node) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield node.module or "", [], node


def test_import_retiarii_ir_nn_as_nn_works_in_a_fresh_interpreter(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import retiarii_ir.nn as nn; print(nn.LayerChoice.__name__, "
                                                   "nn.Conv2d.__name__)"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["LayerChoice", "Conv2d"], result.stderr[-2000:]


def test_tracing_serialising_and_generating_code_load_nothing_of_the_space_package(tmp_path):
    script = (
        "import sys, torch, retiarii_ir as ir\n"
        "from retiarii_ir import codegen, graph, serialize, tracer, interpreter, validate, targets, rewrite\n"
        "model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
        "g = ir.trace(model, torch.randn(2, 3, 8, 8))\n"
        "same = ir.Graph.from_json(g.to_json())\n"
        "same.validate(); codegen.to_source(same); ir.build_module(same)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('retiarii_ir.space') or m == 'retiarii_ir.nn')\n"
        "print(loaded)\n"
        "from retiarii_ir import nn\n"
        "print(nn.__name__, 'retiarii_ir.space' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["[]", "retiarii_ir.space.nn True"]


@pytest.mark.parametrize("importer, imported", [
    ("retiarii_ir/serialize.py", "retiarii_ir.analysis"),
    ("codegen/literals.py", "retiarii_ir.codegen.constructors"),
])
def test_the_named_import_cycles_stay_broken(importer, imported):
    assert not {m for m in _imported_modules(os.path.join(ROOT, importer)) if m.startswith(imported)}


def test_every_error_a_user_can_meet_is_an_ir_error():
    from retiarii_ir import errors, optimizer, strategies
    from retiarii_ir.runtime import cli, experiments, training
    from retiarii_ir.space import ShapeMismatchError
    from retiarii_ir.strategies.oneshot import OneShotError

    named = [errors.StrategyError, errors.SpaceExhausted, errors.NodeExecutionError, errors.InvalidSampleError,
             ShapeMismatchError, strategies.StrategyError, strategies.SpaceExhausted, cli.UsageError,
             experiments.ExperimentError, experiments.StoreError, training.DataError, optimizer.PlanError,
             optimizer.StateError, OneShotError]
    assert all(issubclass(cls, errors.IRError) for cls in named)
    assert strategies.StrategyError is errors.StrategyError and strategies.SpaceExhausted is errors.SpaceExhausted
