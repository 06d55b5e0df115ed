"""Subcommands of ``retiarii``; each lives in the package that owns its work. Arguments are
checked here, before any work starts, so bad input ends in one line and exit code 2."""

from __future__ import annotations

import argparse
import functools
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from retiarii_ir.errors import first_line

from .registry import UsageError, command


def load_model(spec: str, argument: str = "model") -> torch.nn.Module:
    """``package.module:factory`` or ``path/file.py:factory`` → the nn.Module that factory (or
    class) returns, checked before the call (a function or class of the user's code, not the
    standard library). The current folder is not searched: a module there is named by its file."""
    from retiarii_ir.runtime.errors import ConfigError
    from retiarii_ir.runtime.references import resolve

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(argument, f"model spec {spec!r} must look like 'package.module:ClassOrFactory'")
    try:
        factory = resolve(spec)
    except ConfigError as e:
        message = str(e).replace(f"cannot import {spec!r}", f"cannot import factory {spec!r}")
        message = message.replace(f"cannot find {spec!r}", f"cannot import factory {spec!r}")
        local = module_name.replace(".", os.sep) + ".py"
        if "No module named" in message and os.path.isfile(local):
            message += f" (the current folder is not searched; name the file: {local}:{attr})"
        raise UsageError(argument, message) from None
    try:
        model = factory()
    except Exception as e:  # noqa: BLE001 - the user's factory: report, don't dump a traceback
        raise UsageError(argument, f"{spec} raised {type(e).__name__}: {first_line(e)}") from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(argument, f"{spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    """``"2,3,32,32"`` → ``(2, 3, 32, 32)``; every size a positive integer (an argparse type)."""
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers like 2,3,32,32") from None
    if any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r} has a size below 1; every size must be a positive integer")
    return shape


def _check_writable_under(folder: str, shown: str, argument: str) -> None:
    """The nearest existing folder at or above ``folder`` lets us create what is missing below it."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(argument, f"cannot write {shown}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(argument, f"cannot write {shown}: permission denied in {existing}")


def _refuse_dangling_link(target: str, shown: str, argument: str) -> None:
    if os.path.islink(target) and not os.path.exists(target):
        raise UsageError(argument, f"{shown} is a link to {os.readlink(target)}, which does not exist")


def check_output_file(path: str, argument: str) -> str:
    """Absolute path of a file the command may create or overwrite (its folders are made)."""
    target = os.path.abspath(path)
    _refuse_dangling_link(target, path, argument)
    if os.path.isdir(target) or os.path.basename(path) in ("", ".", ".."):  # "a.svg/", "a.svg/.": a folder
        raise UsageError(argument, f"{path} is a folder; give a file path")
    _check_writable_under(os.path.dirname(target), path, argument)
    if os.path.exists(target) and not os.access(target, os.W_OK):
        raise UsageError(argument, f"cannot write {path}: permission denied")
    return target


def check_output_folder(path: str, argument: str) -> str:
    """Absolute path of a folder the command may create or write into."""
    target = os.path.abspath(path)
    _refuse_dangling_link(target, path, argument)
    if os.path.exists(target) and not os.path.isdir(target):
        raise UsageError(argument, f"{path} is a file; give a folder")
    _check_writable_under(target, path, argument)
    return target


def check_state_dict_file(path: str, argument: str = "--weights") -> None:
    """A file ``torch.load(weights_only=True)`` reads as a dict of names to tensors."""
    if os.path.isdir(path):
        raise UsageError(argument, f"{path} is a folder, not a state_dict file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(argument, f"no such file: {path}") from None
    except OSError as e:
        raise UsageError(argument, f"cannot read {path}: {e.strerror}") from None
    except Exception:  # noqa: BLE001 - garbage, a truncated file or a pickle of arbitrary objects
        raise UsageError(argument, f"{path} is not a state_dict saved with torch.save "
                                   "(torch.load with weights_only=True cannot read it)") from None
    if not isinstance(state, Mapping):
        raise UsageError(argument, f"{path} holds a {type(state).__name__}, not a state_dict "
                                   "(a dict of parameter names to tensors)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UsageError(argument, f"{path} is not a state_dict: entry {key!r} holds "
                                       f"{type(value).__name__}, not a tensor")


def check_codegen_source(source: str) -> None:
    """A graph JSON file that exists and is text, or else something shaped like a factory spec,
    so a mistyped path reads "no such file" rather than a failed import."""
    path = Path(source)
    if path.is_dir():
        raise UsageError("source", f"{source} is a folder, not a graph JSON file")
    if path.is_file():
        try:
            path.read_bytes().decode("utf-8")
        except OSError as e:
            raise UsageError("source", f"cannot read {source}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError("source", f"{source} is not a graph JSON file (not UTF-8 text)") from None
    elif source.endswith(".json") or ":" not in source:
        raise UsageError("source", f"no such file: {source} (a model factory looks like package.module:factory)")


def example_input(shape: tuple[int, ...]) -> torch.Tensor:
    from retiarii_ir import limits

    if math.prod(shape) * 4 > limits.MAX_BUILD_BYTES:
        raise UsageError("--input-shape", f"an input of shape {list(shape)} would take {math.prod(shape) * 4 / 2**20:,.0f} "
                                          f"MiB, over the limit of {limits.MAX_BUILD_BYTES / 2**20:,.0f} MiB")
    try:
        return torch.randn(shape)
    except (RuntimeError, MemoryError, TypeError, ValueError, OverflowError) as e:
        raise UsageError("--input-shape", f"cannot allocate an input of shape {list(shape)}: {first_line(e)}") from None


def _trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model factory as package.module:ClassOrFactory or path/file.py:ClassOrFactory")
    p.add_argument("--input-shape", required=True, type=parse_shape, help="example input shape, e.g. 2,3,32,32")
    p.add_argument("--out", help="write the IR as JSON here (default: print the graph)")


@command("trace", "Trace a model into the typed IR and print it or save it as JSON.", _trace_args)
def trace_command(args: argparse.Namespace) -> int:
    import retiarii_ir as ir

    out = check_output_file(args.out, "--out") if args.out else None
    model = load_model(args.model).eval()
    graph = ir.trace(model, example_input(args.input_shape))
    if out is None:
        print(graph)
        return 0
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(graph.to_json(indent=1))
    except OSError as e:
        raise UsageError("--out", f"cannot write {args.out}: {e.strerror}") from None
    print(f"wrote {len(graph)} nodes to {args.out}")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer trials and epochs")
    p.add_argument("--out", default="retiarii-demo", help="folder for everything the demo writes: the pretrained "
                                                          "extractor, the experiment store, the winning model and "
                                                          "the plot (default: retiarii-demo)")
    p.add_argument("--independent", action="store_true",
                   help="train the proposals in flight one after another instead of as one merged model")
    p.add_argument("--device", default="cpu", help="where the trials train: cpu (default), cuda or cuda:N")
    p.add_argument("--batch", action="store_true",
                   help="also fuse same-shaped layers of different proposals into one kernel (pays on a GPU; "
                        "its rounding can move an accuracy by an image or two). Without it (the default) the "
                        "merged model shares the data and the frozen extractor, and every result equals "
                        "training alone bit for bit")
    p.add_argument("--exact", action="store_true", help=argparse.SUPPRESS)  # the default since --batch came


@command("demo", "Search a model space on real data end to end: pretrain, trace, search merged, export the "
                 "winner as standalone PyTorch and ONNX, re-check it, plot.", _demo_args)
def demo_command(args: argparse.Namespace) -> int:
    from retiarii_ir.optimizer import PASSES

    from .demo import EXACT_PASSES, run_demo

    if args.batch and args.exact:
        raise UsageError("--batch", "--batch and --exact contradict each other: --exact merges without batching")
    return run_demo(quick=args.quick, out_dir=check_output_folder(args.out, "--out"), merge=not args.independent,
                    passes=PASSES if args.batch else EXACT_PASSES, device=args.device)


def _codegen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="model factory as package.module:ClassOrFactory, or a graph JSON file")
    p.add_argument("--out", required=True, help="write the generated PyTorch module here (model.py)")
    p.add_argument("--onnx", help="also export ONNX here (model.onnx), checked with onnx.checker")
    p.add_argument("--input-shape", action="append", type=parse_shape, default=[],
                   help="example input shape for a model factory, once per input, e.g. 2,3,32,32")
    p.add_argument("--weights", help="with --onnx: state_dict file (torch.save) whose weights go into the ONNX model")
    p.add_argument("--class-name", help="name of the generated class (default: the graph's name)")
    p.add_argument("--dynamic-batch", action="store_true", help="with --onnx: keep the batch dimension symbolic")
    p.add_argument("--check-onnx", action="store_true", help="with --onnx: run onnxruntime and compare with torch")


@command("codegen", "Generate a standalone PyTorch module (and optionally ONNX) from a model or IR JSON.",
         _codegen_args)
def codegen_command(args: argparse.Namespace) -> int:
    from .codegen_command import run

    check_codegen_source(args.source)
    outputs = {"--out": check_output_file(args.out, "--out")}
    if args.onnx:
        outputs["--onnx"] = check_output_file(args.onnx, "--onnx")
    else:
        for flag, given in (("--weights", args.weights), ("--dynamic-batch", args.dynamic_batch),
                            ("--check-onnx", args.check_onnx)):
            if given:
                raise UsageError(flag, "only applies with --onnx")
    source = os.path.realpath(args.source)
    for flag, target in outputs.items():
        if os.path.realpath(target) == source:
            raise UsageError(flag, f"{target} is the source graph; writing it would destroy the input")
    if args.onnx and outputs["--onnx"] == outputs["--out"]:
        raise UsageError("--onnx", "is the same file as --out")
    if args.weights:
        check_state_dict_file(args.weights)
    return run(args.source, args.out, args.onnx, args.input_shape, args.weights, args.class_name,
               functools.partial(load_model, argument="source"),
               dynamic_batch=args.dynamic_batch, check_onnx=args.check_onnx)
