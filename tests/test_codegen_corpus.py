"""Generated source for every corpus model: same outputs as the original with its own weights,
byte-identical on every run, black-formatted, and importable where only torch exists."""

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap

import black
import pytest
import torch

from retiarii_ir import codegen
import retiarii_ir as ir
from tests.corpus import CORPUS
from tests.helpers import max_abs_diff

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sources(traced):
    """Each case's generated source, emitted once."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = codegen.to_source(traced(name)[3])
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_generated_module_matches_the_original(name, traced):
    model, args, kwargs, graph = traced(name)
    generated = codegen.load(graph)().eval()
    generated.load_state_dict(model.state_dict(), strict=True)
    assert list(generated.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        expected = model(*args, **kwargs)
        assert max_abs_diff(generated(*args, **kwargs), expected) <= 1e-5
        assert max_abs_diff(generated(*args, **kwargs), ir.run_graph(graph, model, *args, **kwargs)) <= 1e-5


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_source_is_deterministic_formatted_and_plain_torch(name, traced, sources):
    graph = traced(name)[3]
    source = sources(name)
    assert codegen.to_source(ir.Graph.from_json(graph.to_json())) == source, "JSON round trip changes the code"
    compile(source, f"{name}.py", "exec")
    assert black.format_str(source, mode=black.Mode()) == source, "emitted source is not black-formatted"
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert set(imports) <= {"import torch", "import math", "import operator"}, imports


PROJECT_PACKAGES = ("retiarii_ir", "codegen", "runtime", "optimizer", "strategies", "tests")


def without_project_paths(paths: list, root: str) -> list:
    """``paths`` less the repository root and its source packages, compared as real paths:
    a virtualenv inside the repository (or a sibling such as ``repo-venv``) holds torch."""
    import os

    hidden = {os.path.realpath(os.path.join(root, name)) for name in ("", *PROJECT_PACKAGES)}
    return [p for p in paths if p and os.path.realpath(p) not in hidden]


def test_torch_only_path_keeps_environments_inside_and_beside_the_repository(tmp_path):
    root = tmp_path / "repo"
    inside = root / ".venv" / "lib" / "python3" / "site-packages"
    beside = tmp_path / "repo-venv" / "lib" / "site-packages"
    for folder in (root / "retiarii_ir", inside, beside):
        folder.mkdir(parents=True)
    paths = [str(root), f"{root}/", str(root / "retiarii_ir"), "", str(inside), str(beside), "/usr/lib/python3"]
    assert without_project_paths(paths, str(root)) == [str(inside), str(beside), "/usr/lib/python3"]


def run_in_torch_only_interpreter(directory, cases: dict) -> dict:
    """Import each generated source in a fresh ``python -I`` that cannot import this project.

    ``cases`` maps a name to (source, state_dict, args, kwargs); returns each name's outputs.
    """
    manifest = {}
    for name, (source, state_dict, args, kwargs) in cases.items():
        path = directory / f"{name}.py"
        path.write_text(source)
        torch.save(state_dict, directory / f"{name}.weights.pt")
        torch.save({"args": list(args), "kwargs": kwargs}, directory / f"{name}.inputs.pt")
        root_class = re.findall(r"^class (\w+)\(", source, flags=re.MULTILINE)[-1]
        manifest[name] = {"file": str(path), "class": root_class}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    preamble = f"PROJECT_PACKAGES = {PROJECT_PACKAGES!r}\n" + inspect.getsource(without_project_paths)
    script = preamble + textwrap.dedent(f"""
        import importlib.abc, importlib.util, json, sys
        FORBIDDEN = set(PROJECT_PACKAGES)

        class Forbid(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in FORBIDDEN:
                    raise ImportError(name + " is not available in a torch-only interpreter")
                return None

        sys.meta_path.insert(0, Forbid())
        sys.path = without_project_paths(sys.path, {ROOT!r})
        import torch
        torch.set_num_threads(1)
        directory = {str(directory)!r}
        for name, entry in json.load(open(directory + "/manifest.json")).items():
            spec = importlib.util.spec_from_file_location("generated_" + name, entry["file"])
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            model = getattr(module, entry["class"])().eval()
            model.load_state_dict(torch.load(directory + "/" + name + ".weights.pt", weights_only=True), strict=True)
            inputs = torch.load(directory + "/" + name + ".inputs.pt", weights_only=True)
            with torch.no_grad():
                out = model(*inputs["args"], **inputs["kwargs"])
            torch.save(out, directory + "/" + name + ".out.pt")
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
        assert not leaked, leaked
        print("ran", len(json.load(open(directory + "/manifest.json"))))
    """)
    result = subprocess.run([sys.executable, "-I", "-c", script], check=False, cwd=directory, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ran {len(cases)}" in result.stdout
    return {name: torch.load(directory / f"{name}.out.pt", weights_only=True) for name in cases}


def test_generated_files_run_in_a_fresh_interpreter_with_only_torch(traced, sources, tmp_path):
    """Write every corpus module to disk and import it where this project cannot be imported."""
    cases = {}
    for name in sorted(CORPUS):
        model, args, kwargs, _ = traced(name)
        cases[name] = (sources(name), model.state_dict(), args, kwargs)
    outputs = run_in_torch_only_interpreter(tmp_path, cases)
    for name in sorted(CORPUS):
        model, args, kwargs, _ = traced(name)
        with torch.no_grad():
            assert max_abs_diff(outputs[name], model(*args, **kwargs)) <= 1e-5, name


@pytest.mark.parametrize("name", ["resnet_basic", "vit", "lstm"])
def test_training_step_gives_the_same_gradients(name, traced):
    """Train mode (batch statistics, dropout with the same seed): same loss, same gradients."""
    model, args, kwargs, graph = traced(name)
    original = CORPUS[name].build()
    original.load_state_dict(model.state_dict())
    generated = codegen.load(graph)()
    generated.load_state_dict(model.state_dict(), strict=True)
    grads = []
    for module in (original.train(), generated.train()):
        torch.manual_seed(1)
        loss = sum(t.float().pow(2).mean() for t in torch.utils._pytree.tree_leaves(module(*args, **kwargs)))
        loss.backward()
        grads.append({k: p.grad for k, p in module.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert max(max_abs_diff(grads[0][k], grads[1][k]) for k in grads[0]) <= 1e-5
