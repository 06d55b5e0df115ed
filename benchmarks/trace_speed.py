"""Time and memory of tracing + typing a ResNet-50 into the IR, relative to a bare
``torch.fx.symbolic_trace`` of the same model, measured side by side in one run.

    python benchmarks/trace_speed.py [--repeats 3] [--image-size 224]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc

import torch
import torch.fx as fx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import retiarii_ir as ir  # noqa: E402
from retiarii_ir import tracer as tracer_module  # noqa: E402
from retiarii_ir.shape_inference import record_types  # noqa: E402
from retiarii_ir.runtime.models import resnet50  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def retained_bytes(fn) -> int:
    """Python-heap bytes still held by what ``fn()`` returns."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    result = fn()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del result
    return size


def trace_without_types(model, x):
    """The structural part of ``ir.trace`` alone: fx trace, conversion, module specs."""
    saved = tracer_module.record_types
    tracer_module.record_types = lambda *args, **kwargs: None
    try:
        return ir.trace(model, (x,))
    finally:
        tracer_module.record_types = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resnet50().eval()
    x = torch.randn(2, 3, args.image_size, args.image_size)
    nodes = len(fx.symbolic_trace(model).graph.nodes)

    t_fx = timed(lambda: fx.symbolic_trace(model), args.repeats)
    t_ir = timed(lambda: ir.trace(model, (x,)), args.repeats)
    graph = ir.trace(model, (x,))
    t_types = timed(lambda: record_types(graph, model, (x,), {}, 0), args.repeats)
    t_untyped = timed(lambda: trace_without_types(model, x), args.repeats)
    with torch.no_grad():
        t_forward = timed(lambda: model(x), args.repeats)
    t_json = timed(lambda: ir.Graph.from_json(graph.to_json()), args.repeats)

    m_fx = retained_bytes(lambda: fx.symbolic_trace(model))
    m_ir = retained_bytes(lambda: ir.trace(model, (x,)))

    print(f"ResNet-50: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{nodes} fx nodes, input {tuple(x.shape)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'':34}{'seconds':>10}{'vs fx':>10}")
    print(f"{'torch.fx.symbolic_trace':34}{t_fx:>10.3f}{1.0:>9.2f}x")
    t_typing = t_ir - t_untyped  # the two parts add up to the total by construction
    print(f"{'retiarii_ir.trace (trace + types)':34}{t_ir:>10.3f}{t_ir / t_fx:>9.2f}x")
    print(f"{'  structure: trace + module specs':34}{t_untyped:>10.3f}{t_untyped / t_fx:>9.2f}x")
    print(f"{'  typing: total - structure':34}{t_typing:>10.3f}{t_typing / t_fx:>9.2f}x")
    print(f"{'    record_types timed alone':34}{t_types:>10.3f}{t_types / t_fx:>9.2f}x")
    print(f"{'one eager forward (reference)':34}{t_forward:>10.3f}{t_forward / t_fx:>9.2f}x")
    print(f"{'JSON round trip':34}{t_json:>10.3f}{t_json / t_fx:>9.2f}x")
    print(f"{'memory held (Python heap)':34}{m_ir / 1e6:>8.2f}MB{m_ir / m_fx:>9.2f}x  (fx: {m_fx / 1e6:.2f} MB)")
    print(f"{'JSON size':34}{len(graph.to_json()) / 1e3:>8.1f}kB")


if __name__ == "__main__":
    main()
