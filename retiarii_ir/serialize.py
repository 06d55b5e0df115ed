"""Exact, versioned JSON for graphs; loading validates every name before anything runs.

Every value has one encoding: JSON scalars stand for themselves, everything else is a
one-key object (``{"$node": name}``, ``{"$tuple": [...]}``, ``{"$float": "inf"}``...).
``graph_from_json`` never imports or calls anything: it checks names against the
identifier rules and the allow-list in ``targets`` and builds plain objects.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from typing import Any, Iterable, Iterator

import torch

from . import limits
from .errors import IRError, SchemaError, first_line
from .graph import AttributeSpec, Graph
from .module_spec import FunctionRef, ModuleSpec
from .node import OP_KINDS, Node
from .targets import (BUILT_MODULE_MEMBERS, MODULE_MEMBERS, check_attribute_path, check_call, check_identifier,
                      check_method, check_method_call, check_qualname, resolve_function, resolve_module_class)
from .types import dtype_from_name, dtype_name, type_from_json, type_to_json

SCHEMA = "retiarii-ir/graph"
SCHEMA_VERSION = 1
_MEMORY_FORMATS = {str(f).removeprefix("torch."): f for f in
                   (torch.contiguous_format, torch.channels_last, torch.preserve_format,
                    torch.channels_last_3d)}
_LAYOUTS = {"strided": torch.strided, "sparse_coo": torch.sparse_coo}


# ---------------------------------------------------------------------- values
class HashRef:
    """Stands for a node reference while hashing (``analysis``): the referenced node's own hash."""

    def __init__(self, value: list) -> None:
        self.value = value


def encode_value(value: Any, refs_ok: bool = False) -> Any:
    """A graph value (argument or constructor argument) as JSON data."""

    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Node):
        return {"$node": value.name}
    if refs_ok and isinstance(value, HashRef):
        return {"$ref": value.value}
    if isinstance(value, torch.Size):
        return {"$size": list(value)}
    if isinstance(value, tuple):
        return {"$tuple": [encode_value(v, refs_ok) for v in value]}
    if isinstance(value, list):
        return [encode_value(v, refs_ok) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise SchemaError(f"dict constants need string keys, got {list(value)!r}")
        return {"$dict": {k: encode_value(v, refs_ok) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"$slice": [encode_value(p, refs_ok) for p in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"$ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"$dtype": dtype_name(value)}
    if isinstance(value, torch.device):
        return {"$device": str(value)}
    if isinstance(value, torch.memory_format):
        return {"$memory_format": str(value).removeprefix("torch.")}
    if isinstance(value, torch.layout):
        return {"$layout": str(value).removeprefix("torch.")}
    if isinstance(value, FunctionRef):
        return {"$function": value.path}
    if isinstance(value, ModuleSpec):
        kwargs = None if value.kwargs is None else {k: encode_value(v, refs_ok) for k, v in value.kwargs.items()}
        return {"$module": value.type, "kwargs": kwargs}
    raise SchemaError(f"cannot serialise constant of type {type(value).__name__}: {value!r}")


def decode_value(data: Any, nodes: dict[str, Node] | None, trust: Iterable[str] = ()) -> Any:
    """Inverse of ``encode_value``; node references resolve through ``nodes``."""
    if data is None or isinstance(data, (bool, int, str)):
        return data
    if isinstance(data, float):
        return data
    if isinstance(data, list):
        return [decode_value(v, nodes, trust) for v in data]
    if not isinstance(data, dict) or not data:
        raise SchemaError(f"unknown value encoding {data!r}")
    key = next(iter(data))
    body = data[key]
    if key == "$node":
        if nodes is None or not isinstance(body, str) or body not in nodes:
            raise SchemaError(f"reference to unknown or later node {body!r}")
        return nodes[body]
    if key == "$tuple":
        return tuple(decode_value(v, nodes, trust) for v in _list(body, key))
    if key == "$dict":
        if not isinstance(body, dict):
            raise SchemaError(f"$dict needs an object, got {body!r}")
        return {str(k): decode_value(v, nodes, trust) for k, v in body.items()}
    if key == "$slice":
        parts = _list(body, key)
        if len(parts) != 3:
            raise SchemaError(f"$slice needs 3 parts, got {body!r}")
        return slice(*(decode_value(p, nodes, trust) for p in parts))
    if key == "$float":
        if body not in ("inf", "-inf", "nan"):
            raise SchemaError(f"bad $float {body!r}")
        return float(body)
    if key == "$size":
        return torch.Size(_sizes(body, key))
    if key == "$ellipsis":
        return Ellipsis
    if key == "$dtype":
        try:
            return dtype_from_name(body)
        except ValueError:
            raise SchemaError(f"unknown dtype {body!r}") from None
    if key == "$device":
        return _device(body)
    if key == "$memory_format" and isinstance(body, str) and body in _MEMORY_FORMATS:
        return _MEMORY_FORMATS[body]
    if key == "$layout" and isinstance(body, str) and body in _LAYOUTS:
        return _LAYOUTS[body]
    if key == "$function":
        resolve_function(body, trust)  # validate only
        return FunctionRef(body)
    if key == "$module":
        resolve_module_class(body, trust)
        kwargs = data.get("kwargs")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise SchemaError(f"module kwargs must be an object, got {kwargs!r}")
        decoded = None if kwargs is None else {
            check_identifier(k, "keyword argument"): decode_value(v, None, trust) for k, v in kwargs.items()}
        for key, layers in (decoded or {}).items():
            if key.startswith("num_") and key.endswith("layers") and type(layers) is int \
                    and layers > limits.MAX_MODULE_LAYERS:
                raise SchemaError(f"module {body}: {key}={layers} is over the limit of {limits.MAX_MODULE_LAYERS}")
        return ModuleSpec(body, decoded)
    raise SchemaError(f"unknown value encoding {data!r}")


_DEVICE_TYPES = ("cpu", "cuda", "mps", "meta", "xpu")  # others make torch import their backend module


def _device(body: Any) -> torch.device:
    if not isinstance(body, str) or not body.replace(":", "").isalnum() or body.split(":")[0] not in _DEVICE_TYPES:
        raise SchemaError(f"bad device {body!r}; expected one of {_DEVICE_TYPES} with an optional :index")
    try:
        return torch.device(body)
    except RuntimeError:
        raise SchemaError(f"bad device {body!r}") from None


def _list(body: Any, key: str) -> list:
    if not isinstance(body, list):
        raise SchemaError(f"{key} needs a list, got {body!r}")
    return body


def _sizes(body: Any, key: str) -> list[int]:
    """A shape: a short list of non-negative integers that fit in 64 bits."""
    if not isinstance(body, list) or len(body) > 64 or not all(
            type(v) is int and 0 <= v < 2**63 for v in body):
        raise SchemaError(f"{key} needs a list of non-negative integers, got {_short(body)}")
    return body


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_depth(data: Any, limit: int, what: str = "graph JSON") -> None:
    """Refuse nesting deeper than ``limit`` before any recursive reader sees it."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > limit:
                raise SchemaError(f"{what} is nested more than {limit} levels deep")
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))


# ---------------------------------------------------------------------- tensors
def tensor_to_json(t: torch.Tensor) -> dict:
    t = t.detach().cpu().contiguous()
    raw = t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "data": base64.b64encode(raw).decode()}


def tensor_from_json(data: Any, name: str) -> torch.Tensor:
    if not isinstance(data, dict):
        raise SchemaError(f"constant {name!r} must be an object")
    try:
        dtype = dtype_from_name(data.get("dtype"))
    except ValueError:
        raise SchemaError(f"constant {name!r} has unknown dtype {_short(data.get('dtype'))}") from None
    shape = _sizes(data.get("shape"), f"constant {name!r} shape")
    if not isinstance(data.get("data", ""), str):
        raise SchemaError(f"constant {name!r} data must be a base64 string")
    try:
        raw = base64.b64decode(data.get("data", ""), validate=True)
    except ValueError:
        raise SchemaError(f"constant {name!r} has bad base64 data") from None
    count = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(raw) != count * itemsize:
        raise SchemaError(f"constant {name!r}: {len(raw)} bytes for shape {shape} of {dtype}")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype)
    return flat.reshape(shape).clone()


# ---------------------------------------------------------------------- graphs
def graph_to_dict(graph: Graph) -> dict:
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "name": graph.name,
        "nodes": [{
            "name": n.name, "op": n.op, "target": n.target,
            "args": [encode_value(a) for a in n.args],
            "kwargs": {k: encode_value(v) for k, v in n.kwargs.items()},
            "type": type_to_json(n.type), "scope": n.scope,
            **({"origin": [list(o) for o in n.meta["origin"]]} if n.meta.get("origin") else {}),
        } for n in graph.nodes],
        "modules": {k: encode_value(v) for k, v in graph.modules.items()},
        "attributes": {k: _attribute_to_json(a) for k, a in graph.attributes.items()},
        "aliases": dict(graph.aliases),
        "constants": {k: tensor_to_json(v) for k, v in graph.constants.items()},
        "module_types": dict(graph.module_types),
        "meta": _plain_meta(graph.meta),
    }


def _attribute_to_json(a: AttributeSpec) -> dict:
    data = {"kind": a.kind, "shape": list(a.shape), "dtype": a.dtype,
            "requires_grad": a.requires_grad, "persistent": a.persistent}
    if a.value is not None:
        data["value"] = tensor_to_json(a.value)
    return data


def _plain_meta(meta: dict) -> dict:
    out = {}
    for k, v in meta.items():
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def graph_to_json(graph: Graph, indent: int | None = None) -> str:
    return json.dumps(graph_to_dict(graph), indent=indent, allow_nan=False)


def graph_from_json(text: str | bytes, trust: Iterable[str] = ()) -> Graph:
    if not isinstance(text, (str, bytes, bytearray)):
        raise SchemaError(f"graph JSON must be text, got {type(text).__name__}")
    try:
        data = json.loads(text)
    except RecursionError:
        raise SchemaError(f"graph JSON is nested more than {limits.MAX_JSON_DEPTH} levels deep") from None
    except ValueError as e:  # includes JSONDecodeError, UnicodeDecodeError, integers over 4,300 digits
        raise SchemaError(f"not valid JSON: {first_line(e)}") from None
    return graph_from_dict(data, trust=trust)


def graph_from_dict(data: Any, trust: Iterable[str] = ()) -> Graph:
    """A Graph from parsed JSON; SchemaError naming the field for anything malformed."""
    trust = _trust_names(trust)
    if not isinstance(data, dict):
        raise SchemaError("a graph must be a JSON object")
    check_depth(data, limits.MAX_JSON_DEPTH)
    if data.get("schema") != SCHEMA:
        raise SchemaError(f"not a retiarii-ir graph: schema is {_short(data.get('schema'))}, expected {SCHEMA!r}")
    if data.get("version") != SCHEMA_VERSION:
        raise SchemaError(f"unsupported graph schema version {_short(data.get('version'))}; "
                          f"this release reads version {SCHEMA_VERSION}")
    graph = Graph(check_identifier(data.get("name"), "graph name"))
    graph.trust = trust
    for qualname, spec in _object(data, "modules").items():
        with _field(f"module {_short(qualname)}"):
            value = decode_value(spec, None, trust)
            if not isinstance(value, ModuleSpec):
                raise SchemaError("must be a $module entry")
            graph.modules[_state_path(qualname, "module name")] = value
    for qualname, attr in _object(data, "attributes").items():
        with _field(f"attribute {_short(qualname)}"):
            graph.attributes[_state_path(qualname, "attribute name")] = _attribute(qualname, attr)
    for alias, original in _object(data, "aliases").items():
        with _field(f"alias {_short(alias)}"):
            graph.aliases[_state_path(alias, "alias")] = _state_path(original, "aliased path")
            if _nested(alias, original) or _nested(original, alias):
                raise SchemaError(f"alias {alias!r} and {original!r} contain one another")
    for key, tensor in _object(data, "constants").items():
        with _field(f"constant {_short(key)}"):
            graph.constants[_state_path(check_identifier(key, "constant name"), "constant name")] = \
                tensor_from_json(tensor, key)
    for qualname, cls in _object(data, "module_types").items():
        with _field(f"module type of {_short(qualname)}"):
            graph.module_types[_state_path(qualname, "module name", root_ok=True)] = check_identifier(cls, "class name")
    meta = data.get("meta", {})
    graph.meta = meta if isinstance(meta, dict) else {}
    nodes = data.get("nodes")
    if not isinstance(nodes, list):
        raise SchemaError("'nodes' must be a list")
    for index, raw in enumerate(nodes):
        with _field(f"node #{index}"):
            _add_node(graph, raw, index, trust)
    return graph


def _trust_names(trust: Iterable[str]) -> tuple[str, ...]:
    if isinstance(trust, str):
        trust = (trust,)
    names = tuple(trust)
    for name in names:
        if not isinstance(name, str) or not all(check_identifier(p, "trusted package") for p in name.split(".")):
            raise SchemaError(f"trust= takes package names, got {name!r}")
    return names


# Names an nn.Module already uses for itself: a submodule or tensor under one of them
# could not be registered (PyTorch refuses) or would hide a method.
_MODULE_ATTRIBUTES = MODULE_MEMBERS | BUILT_MODULE_MEMBERS | {"training"}


def _state_path(qualname: Any, what: str, root_ok: bool = False) -> str:
    check_qualname(qualname, what)
    if qualname == "":
        if root_ok:
            return qualname
        raise SchemaError(f"{what} must not be empty")
    clash = next((p for p in qualname.split(".") if p in _MODULE_ATTRIBUTES), None)
    if clash is not None:
        raise SchemaError(f"{what} {qualname!r}: {clash!r} is an nn.Module attribute, not a free name")
    return qualname


def _nested(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer + ".")


@contextlib.contextmanager
def _field(where: str) -> Iterator[None]:
    """Name the field in every error raised while reading it, and turn what a library below
    raises on malformed data into the one project error."""
    try:
        yield
    except SchemaError as e:
        message = str(e)
        raise type(e)(message if message.startswith(("node ", where)) else f"{where}: {message}") from None
    except IRError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, OverflowError,
            RecursionError, MemoryError, IndexError) as e:
        raise SchemaError(f"{where}: malformed ({type(e).__name__}: {first_line(e)})") from None


def _object(data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SchemaError(f"{key!r} must be an object")
    return value


def _attribute(name: str, raw: Any) -> AttributeSpec:
    if not isinstance(raw, dict) or raw.get("kind") not in ("parameter", "buffer"):
        raise SchemaError(f"attribute {name!r} needs kind 'parameter' or 'buffer'")
    try:
        dtype_from_name(raw.get("dtype"))
    except ValueError:
        raise SchemaError(f"attribute {name!r} has unknown dtype {raw.get('dtype')!r}") from None
    shape = tuple(_sizes(raw.get("shape"), f"attribute {name!r} shape"))
    value = tensor_from_json(raw["value"], name) if raw.get("value") is not None else None
    if value is not None and (tuple(value.shape) != shape or dtype_name(value.dtype) != raw["dtype"]):
        raise SchemaError(f"attribute {name!r}: value does not match its shape {shape} and dtype {raw['dtype']}")
    return AttributeSpec(raw["kind"], shape, raw["dtype"], bool(raw.get("requires_grad", True)),
                         bool(raw.get("persistent", True)), value)


def _add_node(graph: Graph, raw: Any, index: int, trust: tuple[str, ...]) -> None:
    if not isinstance(raw, dict):
        raise SchemaError(f"node #{index} must be an object")
    name = check_identifier(raw.get("name"), f"node #{index} name")
    if name in graph:
        raise SchemaError(f"duplicate node name {name!r}")
    op = raw.get("op")
    if op not in OP_KINDS:
        raise SchemaError(f"node {name!r} has unknown op {op!r}; expected one of {OP_KINDS}")
    target = raw.get("target")
    _check_target(graph, name, op, target, trust, raw)
    args = raw.get("args", [])
    kwargs = raw.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise SchemaError(f"node {name!r}: args must be a list and kwargs an object")
    try:
        node_type = type_from_json(raw.get("type", {"scalar": "unknown"}))
    except ValueError as e:
        raise SchemaError(f"node {name!r}: {e}") from None
    scope = check_qualname(raw.get("scope", ""), f"node {name!r} scope")
    by_name = graph._by_name
    decoded_args = tuple(decode_value(a, by_name, trust) for a in args)
    decoded_kwargs = {check_identifier(k, f"node {name!r} keyword"): decode_value(v, by_name, trust)
                      for k, v in kwargs.items()}
    if op == "call_function":
        check_call(target, decoded_args, decoded_kwargs, f"node {name!r}")
    node = graph.add_node(op, target, decoded_args, decoded_kwargs, name=name, type=node_type, scope=scope,
                          after=graph.nodes[-1] if graph.nodes else None)
    if "origin" in raw:
        node.meta["origin"] = _origin(raw["origin"], name)


def _origin(raw: Any, name: str) -> list[tuple[str, str]]:
    """Which trial and which of its nodes a merged node stands for."""
    if not isinstance(raw, list) or not all(
            isinstance(o, list) and len(o) == 2 and all(isinstance(p, str) for p in o) for o in raw):
        raise SchemaError(f"node {name!r}: origin must be a list of [trial, node] string pairs")
    return [tuple(o) for o in raw]


def _check_target(graph: Graph, name: str, op: str, target: Any, trust: tuple[str, ...], raw: dict) -> None:
    if not isinstance(target, str):
        raise SchemaError(f"node {name!r}: target must be a string")
    if op == "input":
        check_identifier(target, f"node {name!r} input name")
    elif op == "call_module":
        check_qualname(target, f"node {name!r} module")
        if target not in graph.modules:
            raise SchemaError(f"node {name!r} calls module {target!r}, which the graph does not define")
    elif op == "call_function":
        resolve_function(target, trust)
    elif op == "call_method":
        check_method(target)
        check_method_call(target, raw.get("kwargs") if isinstance(raw.get("kwargs"), dict) else {}, f"node {name!r}")
    elif op == "get_attr":
        check_attribute_path(target, graph.modules, f"node {name!r} attribute")
    elif op == "constant":
        if target not in graph.constants:
            raise SchemaError(f"node {name!r} reads constant {target!r}, which the graph does not define")
    elif target != "output":
        raise SchemaError(f"output node {name!r} must have target 'output'")
