"""The package layout holds: the IR core never loads the model-space package, the named import
cycles stay broken, and every error the project raises on purpose is an IRError."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "retiarii_ir")


def _imports(path: str) -> set[str]:
    """Every module a file imports, anywhere in it, as absolute names."""
    package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


CORE_FILES = sorted(f for f in os.listdir(CORE) if f.endswith(".py"))


@pytest.mark.parametrize("name", CORE_FILES)
def test_no_core_module_imports_the_space_package(name):
    imported = _imports(os.path.join(CORE, name))
    assert not {m for m in imported if m.startswith("retiarii_ir.space")} - (
        {"retiarii_ir.space"} if name == "__init__.py" else set())


def test_tracing_serialising_and_generating_code_load_nothing_of_the_space_package():
    script = (
        "import sys, torch, codegen, retiarii_ir as ir\n"
        "from retiarii_ir import graph, serialize, tracer, interpreter, validate, targets, rewrite\n"
        "model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
        "g = ir.trace(model, torch.randn(2, 3, 8, 8))\n"
        "same = ir.Graph.from_json(g.to_json())\n"
        "same.validate(); codegen.to_source(same); ir.build_module(same)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('retiarii_ir.space') or m == 'retiarii_ir.nn')\n"
        "print(loaded)\n"
        "from retiarii_ir import nn\n"
        "print(nn.__name__, 'retiarii_ir.space' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["[]", "retiarii_ir.space.nn True"]


@pytest.mark.parametrize("importer, imported", [
    ("retiarii_ir/serialize.py", "retiarii_ir.analysis"),
    ("codegen/literals.py", "codegen.constructors"),
])
def test_the_named_import_cycles_stay_broken(importer, imported):
    assert not {m for m in _imports(os.path.join(ROOT, importer)) if m.startswith(imported)}


def test_every_error_the_project_raises_on_purpose_is_an_ir_error():
    from retiarii_ir import errors
    from retiarii_ir.space import ShapeMismatchError
    from retiarii_ir import strategies

    named = [errors.StrategyError, errors.SpaceExhausted, errors.NodeExecutionError, errors.InvalidSampleError,
             ShapeMismatchError, strategies.StrategyError, strategies.SpaceExhausted]
    assert all(issubclass(cls, errors.IRError) for cls in named)
    assert strategies.StrategyError is errors.StrategyError and strategies.SpaceExhausted is errors.SpaceExhausted
