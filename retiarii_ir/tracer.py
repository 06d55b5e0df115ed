"""Front end: any nn.Module → typed Graph, by torch.fx symbolic tracing (or torch.export).

Symbolic tracing keeps the model's own module hierarchy: torch.nn layers (and modules
the user marks as leaves) stay single ``call_module`` nodes that codegen can rebuild.
When symbolic tracing fails on Python control flow, torch.export is tried and a warning
says so; when both fail, the error names the module and source line to mark as a leaf.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import traceback
import warnings
from typing import Any, Iterable, Sequence

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn

from .errors import IRError, SchemaError, TraceError, UnsafeTargetError, first_line
from .graph import AttributeSpec, Graph
from .interpreter import bind_inputs, fetch_attribute
from .module_spec import spec_of
from .node import TRAINING_FLAG, Node
from .serialize import encode_value
from .shape_inference import evaluation_mode, record_types
from .targets import package_of, qualified_name, resolve_function
from .types import dtype_name

_TORCH_DIR = os.path.dirname(torch.__file__)


_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


def _inside(name: str, seen: dict, root: nn.Module) -> bool:
    """Whether module ``name`` lies inside a leaf (its flag is its leaf's business)."""
    parts = name.split(".")
    return any(root.get_submodule(".".join(parts[:i])) not in seen for i in range(1, len(parts)))


class _Tracer(fx.Tracer):
    """fx.Tracer with user leaves, and memory of the innermost module that failed."""

    def __init__(self, leaf_types: tuple[type, ...], leaf_names: frozenset[str]) -> None:
        super().__init__()
        # Buffers as graph values, so `self.mean.view(...)` reads the loaded state, not a copy.
        self.proxy_buffer_attributes = True
        self.leaf_types = leaf_types
        self.leaf_names = leaf_names
        self.failed_module: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        if isinstance(m, _CONTAINERS):  # never called, only indexed: look inside
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def trace(self, root, concrete_args=None):
        """Trace with ``self.training`` of every traced-through module as a graph value, so
        ``F.dropout(x, training=self.training)`` follows ``train()``/``eval()`` later."""
        self.training_value = root.training
        flags: dict[nn.Module, bool] = {}
        self.training_proxy = None
        self.warned_training_branch = False
        try:
            for name, module in root.named_modules():
                if not name or not self.is_leaf_module(module, name) and not _inside(name, flags, root):
                    flags[module] = module.training
            self._patched_flags = flags
            return super().trace(root, concrete_args)
        finally:
            for module, flag in flags.items():
                module.__dict__["training"] = flag

    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        result = super().create_args_for_root(root_fn, is_module, concrete_args)
        self.training_proxy = self.create_proxy("get_attr", TRAINING_FLAG, (), {})
        for module in self._patched_flags:
            module.__dict__["training"] = self.training_proxy
        return result

    def to_bool(self, obj) -> bool:
        """Python control flow on ``self.training`` is specialised to the mode traced in."""
        if self.training_proxy is not None and obj.node is self.training_proxy.node:
            if not self.warned_training_branch:
                self.warned_training_branch = True
                warnings.warn(f"Python control flow on self.training was fixed to "
                              f"{'train' if self.training_value else 'eval'} mode, the mode traced in; "
                              f"functional calls taking training=self.training still follow the mode",
                              stacklevel=4)
            return bool(self.training_value)
        return super().to_bool(obj)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_module is None:
                self.failed_module = self.path_of_module(m)
            raise


def trace(model: nn.Module, example_inputs: Any = (), example_kwargs: dict | None = None, *,
          leaf_modules: Iterable[type | str] = (), batch_dim: int | None = 0,
          use_export_fallback: bool = True, name: str | None = None) -> Graph:
    """Trace ``model`` into a typed Graph.

    ``example_inputs`` (a tensor or a tuple) and ``example_kwargs`` are run once per batch
    size to type every value; dimension ``batch_dim`` of the inputs is the batch, made
    symbolic (``B``) in every type it flows into. ``leaf_modules`` (classes or qualified
    names) are kept as single nodes instead of being traced through.
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    kwargs = dict(example_kwargs or {})
    if not isinstance(model, nn.Module):
        raise TypeError(f"trace() needs an nn.Module, got {type(model).__name__}")
    leaf_types = tuple(t for t in leaf_modules if isinstance(t, type))
    leaf_names = frozenset(t for t in leaf_modules if isinstance(t, str))
    tracer = _Tracer(leaf_types, leaf_names)
    graph_name = name or type(model).__name__
    try:
        fx_graph = tracer.trace(model, concrete_args=_concrete_kwargs(model, args, kwargs))
        graph = _from_fx(model, fx_graph, tracer, graph_name, "torch.fx")
    except Exception as fx_error:  # noqa: BLE001 - any tracing failure gets the same treatment
        where = _user_frame(fx_error)
        module = tracer.failed_module if tracer.failed_module is not None else ""
        if not use_export_fallback:
            raise _output_error(model, args, kwargs) or _trace_error(model, module, where, fx_error, None) from fx_error
        try:
            graph = _trace_with_export(model, args, kwargs, graph_name, batch_dim)
        except Exception as export_error:  # noqa: BLE001
            raise (_output_error(model, args, kwargs)
                   or _trace_error(model, module, where, fx_error, export_error)) from export_error
        warnings.warn(
            f"symbolic tracing of {graph_name} failed in {_module_label(model, module)} at {where}: "
            f"{first_line(fx_error)}; traced with torch.export instead (aten-level ops, module "
            f"structure flattened). Mark that module as a leaf to keep the structure.",
            stacklevel=2)
    try:
        bind_inputs(graph, args, kwargs)
    except TypeError as e:  # the example inputs do not fit forward's signature
        raise TraceError(f"cannot trace {graph_name}: {e}") from None
    record_types(graph, model, args, kwargs, batch_dim)
    graph.weights = _own_weights(graph, model)
    return graph


def _own_weights(graph: Graph, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The model's state_dict, where its keys are the graph's (a flattened export's are not)."""
    from .interpreter import build_module

    state = model.state_dict()
    try:
        keys = build_module(graph, device="meta").state_dict()
    except IRError:  # a layer the graph cannot rebuild: no trial can start from this graph anyway
        return None
    if set(state) != set(keys):
        return None
    return {key: value.detach() for key, value in state.items()}


def _concrete_kwargs(model: nn.Module, args: tuple, kwargs: dict) -> dict | None:
    """Non-tensor keyword inputs (flags, scales) are traced as constants."""
    concrete = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor) and v is not None}
    return concrete or None


def _user_frame(error: BaseException) -> str:
    """``file:line: code`` of the innermost frame outside torch, where tracing broke."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(_TORCH_DIR)
              and not f.filename.startswith(os.path.dirname(__file__))]
    if not frames:
        return "<unknown location>"
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"


_OUTPUT_LEAVES = (torch.Tensor, int, float, bool, str, type(None))


def _output_error(model: nn.Module, args: tuple, kwargs: dict) -> TraceError | None:
    """A TraceError saying what to do when the model returns something a graph cannot hold
    (a decoder's key/value cache, say), found by running the model once; None otherwise."""
    try:
        with evaluation_mode(model), torch.no_grad():
            output = model(*args, **kwargs)
    except Exception:  # noqa: BLE001 - the model cannot even run: the tracing error says more
        return None
    found = _foreign_leaf(output, "output")
    if found is None:
        return None
    where, value = found
    kind = type(value).__name__
    if "cache" in kind.lower():
        advice = ("it is a key/value cache: disable it (model.config.use_cache = False, or pass "
                  "example_kwargs={'use_cache': False}), or return only tensors from forward")
    else:
        advice = "return only tensors, numbers and containers of them from forward (wrap the model)"
    return TraceError(f"cannot trace {type(model).__name__}: {where} is a {kind}, which a graph cannot hold; {advice}")


def _foreign_leaf(value: Any, where: str) -> tuple[str, Any] | None:
    """The first value inside an output that is neither data nor a container of data."""
    if isinstance(value, _OUTPUT_LEAVES):
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (tuple, list)):
        items = enumerate(value)
    else:
        return where, value
    for key, item in items:
        found = _foreign_leaf(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


def _module_label(model: nn.Module, qualname: str) -> str:
    if not qualname:
        return f"the model's own forward ({type(model).__name__})"
    return f"module {qualname!r} ({type(model.get_submodule(qualname)).__name__})"


def _trace_error(model, module, where, fx_error, export_error) -> TraceError:
    message = (f"cannot trace {type(model).__name__}: {_module_label(model, module)} failed at {where}\n"
               f"  symbolic tracing: {first_line(fx_error)}")
    if export_error is not None:
        message += f"\n  torch.export: {first_line(export_error)}"
    hint = (f"mark it as a leaf: trace(model, ..., leaf_modules=[{type(model.get_submodule(module)).__name__}])"
            if module else "move the data-dependent code into a submodule and mark that submodule as a leaf")
    return TraceError(f"{message}\n  hint: {hint}")


# ---------------------------------------------------------------------- fx → IR
def _scope(fx_node: fx.Node) -> str:
    stack = fx_node.meta.get("nn_module_stack")
    if not stack:
        return ""
    return list(stack.values())[-1][0] or ""


def _from_fx(model: nn.Module, fx_graph: fx.Graph, tracer: _Tracer | None, name: str, how: str,
             owner: nn.Module | None = None) -> Graph:
    """Convert an fx graph; ``owner`` holds what its get_attr nodes read (default: a
    GraphModule over ``model``, which also holds fx's tensor constants)."""
    graph = Graph(_identifier(name))
    graph.meta["traced_with"] = how
    owner = owner if owner is not None else fx.GraphModule(model, fx_graph)
    _record_state(graph, model, tracer)
    mapping: dict[fx.Node, Node] = {}
    input_names = iter(_input_names(model, fx_graph))
    for fx_node in fx_graph.nodes:
        node = _convert_node(graph, owner, model, fx_node, mapping, input_names)
        if node is not None:
            mapping[fx_node] = node
    graph.eliminate_dead_code()
    graph.trust = _own_packages(model, graph, fx_graph)
    return graph


def _own_packages(model: nn.Module, graph: Graph, fx_graph: fx.Graph) -> tuple[str, ...]:
    """Packages outside torch whose code the graph calls: tracing trusts the model's own code."""
    found = [package_of(n.target) for n in fx_graph.nodes if n.op == "call_function"]
    found += [package_of(type(model.get_submodule(q))) for q in graph.modules]
    return tuple(sorted({p for p in found if p}))


def _function_name(target: Any, fx_node: fx.Node) -> str:
    """The name under which a called function is found again, checked to find that very function."""
    try:
        name = qualified_name(target)
    except UnsafeTargetError as e:
        raise TraceError(f"node {fx_node.name!r}: {e}") from None
    package = package_of(target)
    if package is not None:
        try:
            found = resolve_function(name, (package,))
        except UnsafeTargetError:
            found = None
        if found is not target:
            raise TraceError(f"node {fx_node.name!r} calls {name}, which that name does not find again "
                             f"(is it replaced at import time?)")
    return name


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"M_{cleaned}"


def _input_names(model: nn.Module, fx_graph: fx.Graph) -> list[str]:
    """Input names as the user's forward spells them (fx renames specialised ones)."""
    placeholders = [n.target for n in fx_graph.nodes if n.op == "placeholder"]
    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):
        return placeholders
    return params if len(params) == len(placeholders) else placeholders


def _convert_node(graph: Graph, owner: nn.Module, model: nn.Module, fx_node: fx.Node,
                  mapping: dict[fx.Node, Node], input_names) -> Node | None:
    op, target = fx_node.op, fx_node.target
    to_ir = lambda a: fx.node.map_arg(a, lambda n: mapping[n])  # noqa: E731
    args, kwargs = to_ir(fx_node.args), to_ir(fx_node.kwargs)
    scope = _scope(fx_node)
    if op == "placeholder":
        return graph.add_node("input", next(input_names), args, name=fx_node.name)
    if op == "output":
        return graph.add_node("output", "output", (args[0],), name="output")
    if op == "get_attr" and target == TRAINING_FLAG:
        return graph.add_node("get_attr", target, name=fx_node.name, scope=scope)
    if op == "get_attr":
        try:
            value = fetch_attribute(owner, target)
        except IRError as e:
            raise TraceError(f"node {fx_node.name!r} reads {e}, which the IR cannot hold") from None
        if isinstance(value, torch.Tensor) and not _is_state(model, target):
            key = graph.unique_name(target.replace(".", "_"))
            graph.constants[key] = value.detach().clone()
            return graph.add_node("constant", key, name=fx_node.name, scope=scope)
        return graph.add_node("get_attr", target, name=fx_node.name, scope=scope)
    if op == "call_module":
        if target == "_guards_fn":  # torch.export's shape guards: nothing to compute
            return None
        return graph.add_node("call_module", target, args, kwargs, name=fx_node.name, scope=scope)
    if op == "call_function":
        return graph.add_node("call_function", _function_name(target, fx_node), _checked(args, fx_node),
                              _checked(kwargs, fx_node), name=fx_node.name, scope=scope)
    if op == "call_method":
        return graph.add_node("call_method", target, _checked(args, fx_node), _checked(kwargs, fx_node),
                              name=fx_node.name, scope=scope)
    raise TraceError(f"unsupported fx node {fx_node.format_node()}")


def _checked(value: Any, fx_node: fx.Node) -> Any:
    try:
        encode_value(value)
    except SchemaError as e:
        raise TraceError(f"node {fx_node.name!r} ({fx_node.target}) has an argument the IR cannot hold: {e}") from None
    return value


def _is_state(model: nn.Module, qualname: str) -> bool:
    module_name, _, attr = qualname.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        return False
    return attr in module._parameters or attr in module._buffers


def _record_state(graph: Graph, model: nn.Module, tracer: _Tracer | None) -> None:
    """Every leaf module and every parameter/buffer, used in forward or not, so the
    generated module accepts the original state_dict strictly; shared modules and tied
    parameters become aliases of their first path."""
    first_path: dict[int, str] = {}
    covered: list[str] = []  # leaves and aliases: their insides need no entry
    for qualname, module in model.named_modules(remove_duplicate=False):
        if any(qualname.startswith(prefix + ".") for prefix in covered):
            continue
        if id(module) in first_path:
            graph.aliases[qualname] = first_path[id(module)]
            covered.append(qualname)
            continue
        first_path[id(module)] = qualname
        graph.module_types[qualname] = type(module).__name__
        if qualname and tracer is not None and tracer.is_leaf_module(module, qualname):
            covered.append(qualname)
            graph.modules[qualname] = spec_of(module)
            continue
        _record_tensors(graph, module, f"{qualname}." if qualname else "")
    _record_tied_tensors(graph, model, covered)


def _record_tensors(graph: Graph, module: nn.Module, prefix: str) -> None:
    for attr, param in module._parameters.items():
        if param is not None:
            graph.attributes[prefix + attr] = AttributeSpec(
                "parameter", tuple(param.shape), dtype_name(param.dtype), param.requires_grad)
    for attr, buffer in module._buffers.items():
        if buffer is not None:
            persistent = attr not in module._non_persistent_buffers_set
            graph.attributes[prefix + attr] = AttributeSpec(
                "buffer", tuple(buffer.shape), dtype_name(buffer.dtype), False, persistent,
                None if persistent else buffer.detach().clone())


def _record_tied_tensors(graph: Graph, model: nn.Module, covered: list[str]) -> None:
    seen: dict[int, str] = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for qualname, tensor in named:
        if id(tensor) not in seen:
            seen[id(tensor)] = qualname
        elif not any(qualname.startswith(a + ".") for a in graph.aliases):
            graph.aliases[qualname] = seen[id(tensor)]
            graph.attributes.pop(qualname, None)


# ---------------------------------------------------------------------- export fallback
def _trace_with_export(model: nn.Module, args: tuple, kwargs: dict, name: str, batch_dim: int | None) -> Graph:
    """Export in eval mode, then tie the ``train``/``training`` argument of every aten operator
    that has one (dropout, batch norm...) to the graph's ``self.training``, so those layers follow
    ``train()``/``eval()`` as in a symbolically traced graph. What the model's Python decides from
    ``self.training`` (an attention ``dropout_p``, say) stays fixed to eval mode."""
    with evaluation_mode(model):
        exported = _quiet_export(model, args, kwargs, batch_dim)
    gm = exported.module()
    _drop_export_checks(gm.graph)
    _tie_training_arguments(gm.graph)
    graph = _from_fx(model, gm.graph, None, name, "torch.export", owner=gm)
    # export returns outputs flattened; give the graph the model's own output structure
    output = graph.output
    flat = output.args[0] if isinstance(output.args[0], (tuple, list)) else (output.args[0],)
    output.args = (pytree.tree_unflatten(list(flat), exported.call_spec.out_spec),)
    return graph


def _drop_export_checks(fx_graph: fx.Graph) -> None:
    """Export's own checks of a tensor's dtype and device at each conversion: the model never made
    them, and at a few microseconds each they made generated code slower than the model."""
    check = getattr(torch.ops.aten, "_assert_tensor_metadata", None)
    for node in list(fx_graph.nodes):
        if check is not None and node.op == "call_function" and node.target is check.default and not node.users:
            fx_graph.erase_node(node)


def _quiet_export(model: nn.Module, args: tuple, kwargs: dict, batch_dim: int | None):
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # export's own failures are summarised in our error
    try:
        # export prints the failing graph to stderr as well
        with contextlib.redirect_stderr(io.StringIO()):
            return _export(model, args, kwargs, batch_dim)
    finally:
        torch_log.setLevel(level)


_MODE_ARGUMENTS = ("train", "training")


def _tie_training_arguments(fx_graph: fx.Graph) -> None:
    """Replace the constant ``False`` that eval-mode export gives each aten operator's
    ``train``/``training`` argument by one ``self.training`` node."""
    flag = None
    for node in list(fx_graph.nodes):
        schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
        if schema is None:
            continue
        for index, argument in enumerate(schema.arguments):
            if argument.name not in _MODE_ARGUMENTS or str(argument.type) != "bool":
                continue
            in_args = index < len(node.args)
            value = node.args[index] if in_args else node.kwargs.get(argument.name)
            if value is not False:
                continue
            if flag is None:
                placeholders = [n for n in fx_graph.nodes if n.op == "placeholder"]
                with fx_graph.inserting_after(placeholders[-1]) if placeholders else fx_graph.inserting_before(node):
                    flag = fx_graph.get_attr(TRAINING_FLAG)
            if in_args:
                node.update_arg(index, flag)
            else:
                node.update_kwarg(argument.name, flag)


def _export(model: nn.Module, args: tuple, kwargs: dict, batch_dim: int | None):
    """Export with a dynamic batch dimension where the model allows it, else static."""
    if batch_dim is not None:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
        dynamic = {name: ({batch_dim: torch.export.Dim.AUTO} if isinstance(value, torch.Tensor) else None)
                   for name, value in bound.arguments.items()}
        try:
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic)
        except Exception:  # noqa: BLE001 - retry with every shape static
            pass
    return torch.export.export(model, args, kwargs)


__all__: Sequence[str] = ["trace"]
