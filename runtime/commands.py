"""Subcommands of ``retiarii``; each lives in the package that owns its work."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import torch

from .cli import command


def load_model(spec: str) -> torch.nn.Module:
    """``package.module:factory`` → the nn.Module that factory (or class) returns."""
    module_name, sep, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` does: the user's own modules are importable
        sys.path.insert(0, os.getcwd())
    if not sep or not attr:
        raise SystemExit(f"error: model spec {spec!r} must look like 'package.module:ClassOrFactory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"error: cannot load {spec!r}: {e}") from None
    try:
        model = factory()
    except Exception as e:  # noqa: BLE001 - the user's factory: report, don't dump a traceback
        raise SystemExit(f"error: {spec} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise SystemExit(f"error: {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError:
        raise SystemExit(f"error: input shape {text!r} must be comma-separated integers like 2,3,32,32") from None


def _trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model factory as package.module:ClassOrFactory")
    p.add_argument("--input-shape", required=True, help="example input shape, e.g. 2,3,32,32")
    p.add_argument("--out", help="write the IR as JSON here (default: print the graph)")


@command("trace", "Trace a model into the typed IR and print it or save it as JSON.", _trace_args)
def trace_command(args: argparse.Namespace) -> int:
    import retiarii_ir as ir

    shape = parse_shape(args.input_shape)
    model = load_model(args.model).eval()
    graph = ir.trace(model, torch.randn(shape))
    if args.out:
        with open(args.out, "w") as f:
            f.write(graph.to_json(indent=1))
        print(f"wrote {len(graph)} nodes to {args.out}")
    else:
        print(graph)
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer trials and epochs")
    p.add_argument("--out", default="retiarii-demo", help="folder for the winning model (default: retiarii-demo)")


@command("demo", "Trace a real model, check the IR, and show what the system does.", _demo_args)
def demo_command(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(quick=args.quick, out_dir=args.out)


def _codegen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="model factory as package.module:ClassOrFactory, or a graph JSON file")
    p.add_argument("--out", required=True, help="write the generated PyTorch module here (model.py)")
    p.add_argument("--onnx", help="also export ONNX here (model.onnx), checked with onnx.checker")
    p.add_argument("--input-shape", action="append", type=parse_shape, default=[],
                   help="example input shape for a model factory, once per input, e.g. 2,3,32,32")
    p.add_argument("--weights", help="state_dict file (torch.save) whose weights go into the ONNX model")
    p.add_argument("--class-name", help="name of the generated class (default: the graph's name)")
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX: keep the batch dimension symbolic")
    p.add_argument("--check-onnx", action="store_true", help="ONNX: run onnxruntime and compare with torch")


@command("codegen", "Generate a standalone PyTorch module (and optionally ONNX) from a model or IR JSON.",
         _codegen_args)
def codegen_command(args: argparse.Namespace) -> int:
    from codegen.command import run

    return run(args.source, args.out, args.onnx, args.input_shape, args.weights, args.class_name, load_model,
               dynamic_batch=args.dynamic_batch, check_onnx=args.check_onnx)


if __name__ == "__main__":
    sys.exit(0)
