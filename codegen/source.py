"""Graph → standalone PyTorch source (a Jinja template), written to a file or loaded as a class."""

from __future__ import annotations

import hashlib
import linecache
import os
import types
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
from torch import nn

from retiarii_ir.errors import GraphValidationError, IRError, SchemaError
from retiarii_ir.graph import Graph
from retiarii_ir.interpreter import check_buildable

from .errors import CodegenError
from .bodies import Layout
from .classes import ClassWriter
from .expressions import output_expression
from .forward import Forward, write_forward
from .hierarchy import Hierarchy, constant_members
from .imports import Imports
from .literals import literal
from .names import RESERVED, NameTable, check_name

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Parameter:
    name: str
    has_default: bool
    default: str = ""


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=False,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["pyrepr"] = _string_literal
    return env


def _string_literal(value: object) -> str:
    if type(value) is not str:
        raise CodegenError(f"expected a name, got {value!r}")
    return repr(value)


def _check_structure(graph: Graph) -> None:
    if not isinstance(graph, Graph):
        raise CodegenError(f"expected a retiarii_ir.Graph, got {type(graph).__name__}")
    try:
        graph.validate(check_types=False)
    except (GraphValidationError, SchemaError) as e:
        raise CodegenError(f"cannot generate code for graph {graph.name!r}: {e}") from None


def _check_buildable(graph: Graph) -> None:
    """The generated class would build: the check ``build_module`` makes (after codegen's own,
    which name the offending member), so code generated from untrusted JSON never fails inside
    torch's constructors or allocates past the limit."""
    try:
        check_buildable(graph)
    except IRError as e:
        raise CodegenError(f"cannot generate code for graph {graph.name!r}: {e}") from None


def to_source(graph: Graph, class_name: str | None = None, formatted: bool = True) -> str:
    """Python source of one module class for ``graph``; the same graph always gives the same text.
    ``formatted=False`` skips black (most of the time spent) for code no one will read."""
    _check_structure(graph)
    graph_name = check_name(graph.name, "graph name")
    for node in graph.nodes:
        check_name(node.name, "node name")
    module_scope = NameTable(RESERVED)
    root_name = module_scope.claim(check_name(class_name or graph_name, "class name"), "class name")
    hierarchy = Hierarchy(graph)
    imports = Imports(graph, module_scope)
    layout = Layout(graph, hierarchy)
    classes = ClassWriter(hierarchy, layout, module_scope, imports)
    root_members = classes.members(hierarchy.tree)
    constants, constant_names = constant_members(graph, {m.name for m in root_members})

    local = NameTable(imports.names)
    parameters, inputs = [], []
    for node in graph.inputs:
        name = local.claim(check_name(node.target, f"input {node.name!r}"), "input name", avoid_builtins=False)
        inputs.append((node, name))
        default = literal(node.args[0], _no_nodes, f"default of input {node.target!r}") if node.args else ""
        parameters.append(Parameter(name, bool(node.args), default))
    _check_defaults(parameters)
    items = layout.items("", [n for n in graph.nodes if n.op not in ("input", "output")])
    forward = write_forward(items, "", hierarchy, inputs, lambda ref: output_expression(graph.output, ref),
                            graph.output.inputs, local, imports, lambda key: f"self.{constant_names[key]}",
                            chain_names=False)
    forward.parameters = [f"{p.name}={p.default}" if p.has_default else p.name for p in parameters]
    _check_buildable(graph)

    text = _environment().get_template("module.py.j2").render(
        title=f"{root_name}: a standalone PyTorch module.",
        graph_name=graph_name,
        imports=[f"import {name}" for name in ["torch", *sorted(forward.imports | classes.forward_imports)]]
        + imports.lines + imports.bindings,
        needs=" and ".join(["torch", *graph.trust]) if imports.lines else "only torch",
        classes=classes.classes,
        root=_Root(root_name, root_members + constants, f"The {graph_name} network.", forward),
        shared=hierarchy.shared)
    return _format(text, formatted)


@dataclass(frozen=True)
class _Root:
    name: str
    members: list
    doc: str
    forward: Forward


def _no_nodes(node) -> str:
    raise CodegenError(f"an input default refers to node {node.name!r}")


def _check_defaults(parameters: list[Parameter]) -> None:
    seen_default = False
    for p in parameters:
        if seen_default and not p.has_default:
            raise CodegenError(f"input {p.name!r} has no default but follows an input that has one")
        seen_default |= p.has_default


def _format(text: str, formatted: bool = True) -> str:
    """Black-formatted when black is installed (deterministic either way); always valid Python."""
    try:
        compile(text, "<generated>", "exec")
    except SyntaxError as e:  # a bug here, never the user's: say where
        raise CodegenError(f"generated source does not parse (line {e.lineno}): {e.msg}") from None
    return _black(text) if formatted else text


@lru_cache(maxsize=64)
def _black(text: str) -> str:
    """Black is a pure function of the text and most of the emit time: remember recent results."""
    try:
        import black
    except ImportError:
        return text
    # Naming the target version spares black its per-file feature detection (twice as fast).
    return black.format_str(text, mode=black.Mode(target_versions={black.TargetVersion.PY310}))


def write_module(graph: Graph, path: str | os.PathLike, class_name: str | None = None) -> Path:
    """Write ``graph`` as a standalone ``.py`` file; returns the path written."""
    source = to_source(graph, class_name)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source, encoding="utf-8")
    return target


def load(graph: Graph, class_name: str | None = None, formatted: bool = True) -> type[nn.Module]:
    """The generated class itself, compiled from the source ``to_source`` gives (inspectable)."""
    source = to_source(graph, class_name, formatted)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    module_name = f"retiarii_generated_{digest}"
    filename = f"<retiarii-generated {graph.name} {digest}>"
    module = types.ModuleType(module_name)
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - source built from a validated graph
    classes = [v for v in module.__dict__.values() if isinstance(v, type) and issubclass(v, nn.Module)
               and v.__module__ == module_name]
    return classes[-1]  # the root class is defined last
