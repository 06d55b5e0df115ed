"""Exact, versioned JSON for graphs; loading validates every name before anything runs.

Every value has one encoding: JSON scalars stand for themselves, everything else is a
one-key object (``{"$node": name}``, ``{"$tuple": [...]}``, ``{"$float": "inf"}``...).
``graph_from_json`` never imports or calls anything: it checks names against the
identifier rules and the allow-list in ``targets`` and builds plain objects.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any, Iterable

import torch

from .errors import SchemaError
from .graph import AttributeSpec, Graph
from .module_spec import FunctionRef, ModuleSpec
from .node import OP_KINDS, Node
from .targets import (check_identifier, check_method, check_qualname, resolve_function,
                      resolve_module_class)
from .types import dtype_from_name, dtype_name, type_from_json, type_to_json

SCHEMA = "retiarii-ir/graph"
SCHEMA_VERSION = 1
_MEMORY_FORMATS = {str(f).removeprefix("torch."): f for f in
                   (torch.contiguous_format, torch.channels_last, torch.preserve_format,
                    torch.channels_last_3d)}
_LAYOUTS = {"strided": torch.strided, "sparse_coo": torch.sparse_coo}


# ---------------------------------------------------------------------- values
def encode_value(value: Any, refs_ok: bool = False) -> Any:
    """A graph value (argument or constructor argument) as JSON data."""
    from .analysis import _Ref

    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Node):
        return {"$node": value.name}
    if refs_ok and isinstance(value, _Ref):
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
        return torch.Size(_ints(body, key))
    if key == "$ellipsis":
        return Ellipsis
    if key == "$dtype":
        try:
            return dtype_from_name(body)
        except (ValueError, AttributeError):
            raise SchemaError(f"unknown dtype {body!r}") from None
    if key == "$device":
        if not isinstance(body, str) or not body.replace(":", "").isalnum():
            raise SchemaError(f"bad device {body!r}")
        return torch.device(body)
    if key == "$memory_format" and body in _MEMORY_FORMATS:
        return _MEMORY_FORMATS[body]
    if key == "$layout" and body in _LAYOUTS:
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
        return ModuleSpec(body, decoded)
    raise SchemaError(f"unknown value encoding {data!r}")


def _list(body: Any, key: str) -> list:
    if not isinstance(body, list):
        raise SchemaError(f"{key} needs a list, got {body!r}")
    return body


def _ints(body: Any, key: str) -> list[int]:
    if not isinstance(body, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in body):
        raise SchemaError(f"{key} needs a list of integers, got {body!r}")
    return body


# ---------------------------------------------------------------------- tensors
def tensor_to_json(t: torch.Tensor) -> dict:
    t = t.detach().cpu().contiguous()
    raw = t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "data": base64.b64encode(raw).decode()}


def tensor_from_json(data: Any, name: str) -> torch.Tensor:
    if not isinstance(data, dict):
        raise SchemaError(f"constant {name!r} must be an object")
    dtype = dtype_from_name(str(data.get("dtype")))
    shape = _ints(data.get("shape"), f"constant {name!r} shape")
    try:
        raw = base64.b64decode(str(data.get("data", "")), validate=True)
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
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(f"not valid JSON: {e}") from None
    return graph_from_dict(data, trust=trust)


def graph_from_dict(data: Any, trust: Iterable[str] = ()) -> Graph:
    trust = tuple(trust)
    if not isinstance(data, dict):
        raise SchemaError("a graph must be a JSON object")
    if data.get("schema") != SCHEMA:
        raise SchemaError(f"not a retiarii-ir graph: schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    if data.get("version") != SCHEMA_VERSION:
        raise SchemaError(f"unsupported graph schema version {data.get('version')!r}; "
                          f"this release reads version {SCHEMA_VERSION}")
    name = data.get("name")
    graph = Graph(check_identifier(name, "graph name"))
    modules = _object(data, "modules")
    for qualname, spec in modules.items():
        check_qualname(qualname, "module name")
        value = decode_value(spec, None, trust)
        if not isinstance(value, ModuleSpec):
            raise SchemaError(f"module {qualname!r} must be a $module entry")
        graph.modules[qualname] = value
    for qualname, attr in _object(data, "attributes").items():
        graph.attributes[check_qualname(qualname, "attribute name")] = _attribute(qualname, attr)
    for alias, original in _object(data, "aliases").items():
        graph.aliases[check_qualname(alias, "alias")] = check_qualname(original, "aliased path")
    for key, tensor in _object(data, "constants").items():
        graph.constants[check_identifier(key, "constant name")] = tensor_from_json(tensor, key)
    for qualname, cls in _object(data, "module_types").items():
        graph.module_types[check_qualname(qualname, "module name")] = check_identifier(cls, "class name")
    meta = data.get("meta", {})
    graph.meta = meta if isinstance(meta, dict) else {}
    nodes = data.get("nodes")
    if not isinstance(nodes, list):
        raise SchemaError("'nodes' must be a list")
    for index, raw in enumerate(nodes):
        _add_node(graph, raw, index, trust)
    return graph


def _object(data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SchemaError(f"{key!r} must be an object")
    return value


def _attribute(name: str, raw: Any) -> AttributeSpec:
    if not isinstance(raw, dict) or raw.get("kind") not in ("parameter", "buffer"):
        raise SchemaError(f"attribute {name!r} needs kind 'parameter' or 'buffer'")
    try:
        dtype_from_name(str(raw.get("dtype")))
    except ValueError:
        raise SchemaError(f"attribute {name!r} has unknown dtype {raw.get('dtype')!r}") from None
    shape = tuple(_ints(raw.get("shape"), f"attribute {name!r} shape"))
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
    _check_target(graph, name, op, target, trust)
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
    node = graph.add_node(
        op, target,
        tuple(decode_value(a, by_name, trust) for a in args),
        {check_identifier(k, f"node {name!r} keyword"): decode_value(v, by_name, trust) for k, v in kwargs.items()},
        name=name, type=node_type, scope=scope, after=graph.nodes[-1] if graph.nodes else None)
    del node


def _check_target(graph: Graph, name: str, op: str, target: Any, trust: tuple[str, ...]) -> None:
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
    elif op == "get_attr":
        check_qualname(target, f"node {name!r} attribute")
    elif op == "constant":
        if target not in graph.constants:
            raise SchemaError(f"node {name!r} reads constant {target!r}, which the graph does not define")
    elif target != "output":
        raise SchemaError(f"output node {name!r} must have target 'output'")
