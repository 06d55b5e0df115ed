"""Does generated code cost anything? Forward+backward time of the generated module relative to
the original eager module (goal 1.00x), and the time to emit and load a ResNet-50-sized graph.

    python benchmarks/codegen_overhead.py            # ResNet-50 at 2x3x128x128 + three transformers models
    python benchmarks/codegen_overhead.py --quick    # smaller input, fewer repeats
    python benchmarks/codegen_overhead.py --all      # also every model of benchmarks/codegen_shape.py:
                                                     # the corpus, resnet18, the demo winner, a sample of
                                                     # each hub space, the whole transformers tier
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retiarii_ir import codegen
import retiarii_ir as ir
from retiarii_ir.codegen.source import _black as _black_cache
from retiarii_ir.runtime.models import resnet50
from benchmarks.model_zoo import models as zoo_models  # small transformers models, random weights

# models of other people's code, one per kind (these also match their originals in train mode)
ZOO_ROWS = ("ResNetForImageClassification (bottleneck)", "ViTForImageClassification", "LlamaForCausalLM")


def _step(model: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    out = model(*args, **kwargs)
    leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    sum(t.float().sum() for t in leaves).backward()


def time_pair(original: torch.nn.Module, generated: torch.nn.Module, args: tuple, kwargs: dict,
              repeats: int) -> tuple[float, float]:
    """Median seconds per forward+backward, measured alternately so both see the same machine load."""
    for model in (original, generated):
        model.zero_grad(set_to_none=True)
        _step(model, args, kwargs)  # warm-up
    start = time.perf_counter()
    _step(original, args, kwargs)
    once = time.perf_counter() - start
    repeats = max(repeats, min(300, int(1.0 / max(once, 1e-4))))  # small models: about a second each
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for index, model in enumerate((original, generated)):
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            _step(model, args, kwargs)
            times[index].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _median_time(fn, repeats: int = 5) -> float:
    """Median seconds of ``fn()``, each run without black's memory of earlier output."""
    times = []
    for _ in range(repeats):
        _black_cache.cache_clear()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def generated_twin(model: torch.nn.Module, graph: ir.Graph) -> torch.nn.Module:
    twin = codegen.load(graph)()
    twin.load_state_dict(model.state_dict(), strict=True)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    for name, parameter in twin.named_parameters():  # a frozen extractor stays frozen in its twin
        parameter.requires_grad_(name not in frozen)
    return twin.train(model.training)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64x64 input and 3 repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--all", action="store_true", help="every model of benchmarks/codegen_shape.py as well")
    parser.add_argument("--only", nargs="*", default=[], help="with --all: only the models whose name has a word")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    warnings.simplefilter("ignore")
    size, repeats = (64, 3) if options.quick else (128, 7)

    torch.manual_seed(0)
    model = resnet50(num_classes=1000).train()
    example = torch.randn(2, 3, size, size)
    start = time.perf_counter()
    graph = ir.trace(model, example)
    traced = time.perf_counter() - start
    start = time.perf_counter()
    source = codegen.to_source(graph)
    first = time.perf_counter() - start
    emitted = _median_time(lambda: codegen.to_source(graph))
    loaded = _median_time(lambda: codegen.load(graph))
    cls = codegen.load(graph)
    built = _median_time(cls)
    print(f"ResNet-50 graph: {len(graph)} nodes, {len(graph.modules)} modules -> {len(source.splitlines())} lines")
    print(f"  trace {traced:.2f} s | emit source {emitted:.2f} s (first call, with imports: {first:.2f} s) | "
          f"emit + load class {loaded:.2f} s | instantiate {built:.2f} s")

    print(f"\nforward+backward, median of at least {repeats} alternating runs, {options.threads} thread(s), train mode")
    print(f"{'model':<44}{'original ms':>13}{'generated ms':>14}{'ratio':>8}")
    rows = [("resnet50", model, (example,), {}, graph)]
    zoo = {entry.name: entry for entry in zoo_models()}
    if not zoo:
        print("(transformers is not installed: only the ResNet-50 row)")
    for name in ZOO_ROWS if zoo else ():
        torch.manual_seed(0)
        m = zoo[name].build().train()
        args = zoo[name].inputs()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the torch.export fallback says it is used
            rows.append((name.split(" ")[0], m, args, {}, ir.trace(m, args)))
    for name, m, args, kwargs, g in rows:
        twin = generated_twin(m, g)
        torch.manual_seed(0)
        base, gen = time_pair(m, twin, args, kwargs, repeats)
        print(f"{name:<44}{base * 1e3:>13.1f}{gen * 1e3:>14.1f}{gen / base:>7.2f}x")
    if options.all:
        _time_every_shape_model(repeats, options.only)
    return 0


def _time_every_shape_model(repeats: int, only: list[str]) -> None:
    """The models whose generated shape benchmarks/codegen_shape.py reports, each against its
    original (a space's sample against the plain module ``fixed_arch`` builds)."""
    from benchmarks.codegen_shape import cases

    ratios = []
    for name, make in cases():
        if only and not any(word.lower() in name.lower() for word in only):
            continue
        model, graph, args, kwargs = make()
        model.train()
        try:
            twin = generated_twin(model, graph)
            torch.manual_seed(0)
            base, gen = time_pair(model, twin, args, kwargs, repeats)
        except Exception as e:  # noqa: BLE001 - one row's failure is reported in its row
            print(f"{name[:43]:<44}{'failed: ' + str(e).splitlines()[0][:60]}")
            continue
        ratios.append(gen / base)
        print(f"{name[:43]:<44}{base * 1e3:>13.2f}{gen * 1e3:>14.2f}{gen / base:>7.2f}x")
    if ratios:
        print(f"{len(ratios)} models: median ratio {statistics.median(ratios):.3f}x, "
              f"{sum(r <= 1.02 for r in ratios)} within 2% of eager, slowest {max(ratios):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
