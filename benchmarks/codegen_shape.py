"""Does generated code have the model's own shape? For each model: the classes and the lines of
``forward`` in the generated file, against the model's own source, and the parts written flat.

    python benchmarks/codegen_shape.py             # every corpus model, resnet18, the demo's winner,
                                                   # a sample of each hub space, the transformers tier
    python benchmarks/codegen_shape.py resnet18    # the rows whose name contains a word

Classes: the distinct classes of the model's own code in its module tree (torch's not counted),
against the classes of the generated file. Forward lines: the statements of every class's
``forward`` (and of the methods of the same class it calls, such as ``_forward_impl``), without
docstrings, comments or blank lines. Flat: the parts the generated code writes out in the
parent, each with its one-line reason in the file.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import retiarii_ir as ir  # noqa: E402
from retiarii_ir import codegen  # noqa: E402


@dataclass(frozen=True)
class Row:
    name: str
    own_classes: int
    classes: int
    own_lines: int
    lines: int
    flat: int


def body_lines(function: ast.FunctionDef, source_lines: list[str]) -> int:
    """Statements of a function's body as lines: no docstring, comment or blank line."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    lines = source_lines[body[0].lineno - 1:body[-1].end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def generated_shape(source: str) -> tuple[int, int, int]:
    """(classes, forward lines, flat parts) of a generated file."""
    tree, lines = ast.parse(source), source.splitlines()
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    forwards = [f for c in classes for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "forward"]
    forward_lines = sum(body_lines(f, lines) for f in forwards)
    flat = sum(1 for f in forwards for line in lines[f.lineno - 1:f.end_lineno] if line.strip().startswith("#"))
    return len(classes), forward_lines, flat


def _methods_called(cls: type, function: ast.FunctionDef) -> list[str]:
    names = []
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
            attribute = inspect.getattr_static(cls, node.func.attr, None)
            if inspect.isfunction(attribute) and node.func.attr != "forward":
                names.append(node.func.attr)
    return names


def own_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(classes, forward lines) of the model's own code."""
    classes = list(dict.fromkeys(type(m) for m in model.modules() if not type(m).__module__.startswith("torch.")))
    total = 0
    for cls in classes:
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        tree, lines = ast.parse(source), source.splitlines()
        methods = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
        if "forward" not in methods:
            continue
        counted = ["forward", *_methods_called(cls, methods["forward"])]
        total += sum(body_lines(methods[name], lines) for name in dict.fromkeys(counted) if name in methods)
    return len(classes), total


def row(name: str, model: torch.nn.Module, graph: ir.Graph) -> Row:
    own_classes, own_lines = own_shape(model)
    classes, lines, flat = generated_shape(codegen.to_source(graph))
    return Row(name, own_classes, classes, own_lines, lines, flat)


# ---------------------------------------------------------------------- the models
Case = Callable[[], tuple[torch.nn.Module, ir.Graph, tuple, dict]]  # model, graph, example args and kwargs


def _traced(build: Callable[[], torch.nn.Module], args: tuple, kwargs: dict | None = None) -> Case:
    def make():
        torch.manual_seed(0)
        model = build().eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model, ir.trace(model, args, kwargs or {}), args, kwargs or {}
    return make


def _space_winner(build: Callable[[], torch.nn.Module], example: torch.Tensor, sample_seed: int = 0) -> Case:
    """A frozen sample of a space (the shape of any winner) and the plain module it stands for."""
    def make():
        torch.manual_seed(0)
        space = ir.trace_space(build(), example)
        sample = space.random_sample(sample_seed)
        with space.fixed_arch(sample):
            fixed = build().eval()
        return fixed, space.freeze(sample), (example,), {}
    return make


def demo_winner_sample() -> dict:
    """The demo's largest architecture: widest, separable convolution, both extra blocks."""
    return {"width": 32, "op": "sepconv", "depth": 2}


def demo_winner() -> tuple[torch.nn.Module, ir.Graph]:
    """The demo's space (on its pretrained extractor) frozen at one architecture."""
    from retiarii_ir.space.hub import PretrainedDigitsSpace

    torch.manual_seed(0)
    space = ir.trace_space(PretrainedDigitsSpace(), torch.randn(4, 1, 8, 8))
    sample = space.search_space.validate(demo_winner_sample())
    with space.fixed_arch(sample):
        fixed = PretrainedDigitsSpace().eval()
    return fixed, space.freeze(sample)


def cases() -> Iterator[tuple[str, Case]]:
    from retiarii_ir.runtime.models import resnet18
    from retiarii_ir.space.hub import DartsSpace, DigitsSpace, MobileNetV3Space, NasBench201
    from tests.corpus import CORPUS

    yield "resnet18 (width 8)", _traced(lambda: resnet18(num_classes=10, width=8), (torch.randn(2, 3, 32, 32),))
    yield "demo winner", lambda: (*demo_winner(), (torch.randn(4, 1, 8, 8),), {})
    images = lambda size, channels=3: torch.randn(2, channels, size, size)  # noqa: E731
    for name, build, example in [("DartsSpace", DartsSpace, images(8)), ("MobileNetV3Space", MobileNetV3Space, images(16)),
                                 ("NasBench201", NasBench201, images(8)), ("DigitsSpace", DigitsSpace, images(8, 1))]:
        yield f"{name} sample", _space_winner(build, example)
    for name in sorted(CORPUS):
        case = CORPUS[name]
        yield name, _traced(case.build, case.example_args(), case.example_kwargs())
    from benchmarks import model_zoo

    for entry in model_zoo.models():
        yield f"transformers {entry.name}", _traced(entry.build, entry.inputs())


def table(rows: list[Row]) -> str:
    lines = ["| model | classes: generated / own | forward lines: generated / own | written flat |",
             "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.classes} / {r.own_classes} | {r.lines} / {r.own_lines} | {r.flat} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("words", nargs="*", help="only the models whose name contains one of these")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name, make in cases():
        if options.words and not any(w.lower() in name.lower() for w in options.words):
            continue
        rows.append(row(name, *make()[:2]))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
