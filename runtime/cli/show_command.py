"""``retiarii show``: a picture of a model, a model space or a merged plan of some of its samples."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .registry import UsageError, command


def _show_args(p: argparse.ArgumentParser) -> None:
    from .commands import parse_shape

    p.add_argument("source", help="a model (or model space) factory as package.module:ClassOrFactory or "
                                  "path/file.py:ClassOrFactory, or a graph JSON file")
    p.add_argument("--out", action="append", required=True, metavar="FILE",
                   help="picture to write, .svg (needs nothing) or .png (needs matplotlib); repeat for both")
    p.add_argument("--input-shape", action="append", type=parse_shape, default=[],
                   help="example input shape for a factory, once per input, e.g. 2,3,32,32")
    p.add_argument("--space", action="store_true", help="draw the model space: its choice sites and candidates")
    p.add_argument("--plan", type=int, metavar="K", help="draw the merged plan of K random samples of the space")
    p.add_argument("--sample", action="append", default=[], metavar="JSON",
                   help="a sample of the space as JSON ({\"op\": \"conv3x3\"}): one draws that model, several "
                        "their merged plan")
    p.add_argument("--passes", default="dedup,cse,batch", help="the plan's passes (default: dedup,cse,batch)")
    p.add_argument("--depth", type=int, help="module levels drawn as frames; deeper modules fold into one box "
                                             "(default: as deep as keeps the picture readable)")


def _samples(args: argparse.Namespace, space) -> list[dict]:
    samples = []
    for text in args.sample:
        try:
            sample = json.loads(text)
        except ValueError as e:
            raise UsageError("--sample", f"{text!r} is not JSON: {e}") from None
        if not isinstance(sample, dict):
            raise UsageError("--sample", f"{text!r} is not a JSON object of label: value")
        samples.append(space.validate(sample))
    if args.plan is not None:
        if not 1 <= args.plan <= 16:
            raise UsageError("--plan", f"draws 1 to 16 trials, got {args.plan}")
        if not space.choices():
            raise UsageError("--plan", f"{args.source} has no choices (no LayerChoice, InputChoice, ValueChoice or "
                                       f"mutator), so it has one model and no plan to draw; drop --plan")
        seen = {json.dumps(s, sort_keys=True) for s in samples}
        for seed in range(1000):
            if len(samples) >= args.plan + len(args.sample):
                break
            sample = space.random_sample(seed)
            text = json.dumps(sample, sort_keys=True)
            if text not in seen:
                seen.add(text)
                samples.append(sample)
        drawn = len(samples) - len(args.sample)
        if drawn < args.plan:
            trials = f"{len(samples)} trial{'s' * (len(samples) != 1)}"
            print(f"note: {drawn} distinct random sample{'s' * (drawn != 1)} besides --sample (the space may have "
                  f"no more), so the plan merges {trials}, not {args.plan + len(args.sample)}", file=sys.stderr)
    return samples


def _thing(args: argparse.Namespace):
    """The graph, space or plan the arguments name."""
    import retiarii_ir as ir

    from .commands import check_codegen_source, example_input, load_model

    check_codegen_source(args.source)
    wants_space = args.space or args.plan is not None or args.sample
    if Path(args.source).is_file():
        if wants_space:
            raise UsageError("source", "a graph JSON file is one model; --space, --plan and --sample need a factory")
        try:
            text = Path(args.source).read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError("source", f"cannot read {args.source}: {e.strerror}") from None
        return ir.Graph.from_json(text)  # untrusted: validated, nothing in it runs
    if not args.input_shape:
        raise UsageError("--input-shape", "a factory needs an example input shape, e.g. --input-shape 2,3,32,32")
    model = load_model(args.source, "source").eval()
    inputs = tuple(example_input(shape) for shape in args.input_shape)
    if not wants_space:
        return ir.trace(model, inputs)
    from retiarii_ir.runtime.experiments.pictures import plan_of_samples

    space = ir.trace_space(model, inputs)
    samples = _samples(args, space)
    if not samples:
        return space
    if len(samples) == 1 and args.plan is None:
        return space.freeze(samples[0])
    passes = [p for p in args.passes.split(",") if p]
    return plan_of_samples(space, samples, passes)


@command("show", "Draw a model, a model space (--space) or a merged plan of its samples (--plan K) as SVG or PNG.",
         _show_args)
def show_command(args: argparse.Namespace) -> int:
    from retiarii_ir.codegen import FORMATS

    from .commands import check_output_file

    outs = []
    for out in args.out:
        if Path(out).suffix.lower() not in FORMATS:
            raise UsageError("--out", f"{out}: a picture is written as .svg or .png")
        outs.append(check_output_file(out, "--out"))
    if args.depth is not None and args.depth < 0:
        raise UsageError("--depth", f"must be 0 or more, got {args.depth}")
    if any(o.lower().endswith(".png") for o in outs):
        from retiarii_ir.codegen import MISSING_MATPLOTLIB, matplotlib_installed

        if not matplotlib_installed():
            raise UsageError("--out", MISSING_MATPLOTLIB)
    thing = _thing(args)
    from retiarii_ir.runtime.experiments.pictures import show

    for out in outs:
        os.makedirs(os.path.dirname(out), exist_ok=True)
    for path in show(thing, *outs, depth=args.depth):
        print(f"wrote {path}")
    return 0
