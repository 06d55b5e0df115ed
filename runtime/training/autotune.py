"""Measured choice between a fused kernel and K separate ones.

A grouped convolution is one kernel launch instead of K, but on some backends (CPU in
particular, for wider layers) it runs slower than the K dense convolutions it replaces.
Rather than guess, the trainer times both, forward and backward, on the real shapes, once
per distinct layer shape, and hands the planner ``fusing_pays(device)`` as its decision.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from retiarii_ir import limits
from retiarii_ir.errors import IRError, first_line
from retiarii_ir.optimizer import ConvFusion

from .decisions import decide

_REPEATS = 3


def synchronize(device: torch.device | str) -> None:
    """Wait for the kernels queued on ``device`` (a no-op on the CPU, which runs them at once)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def fastest_seconds(run, device: torch.device | str, repeats: int = _REPEATS) -> float:
    """Fastest of a few runs after a warm-up; on an accelerator the clock waits for the kernels."""
    run()  # warm up: first calls allocate and pick algorithms
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def timing_bytes(width: int, batch: int, in_channels: int, out_channels: int, size: tuple[int, int],
                 kernel: tuple[int, int], stride: tuple, padding, dilation: tuple, groups: int) -> int:
    """What timing one layer shape allocates: inputs, weights and outputs of ``width`` trials,
    with their gradients (shapes worked out on the meta device, which allocates nothing)."""
    x = torch.empty(batch, in_channels, *size, device="meta")
    w = torch.empty(out_channels, in_channels // groups, *kernel, device="meta")
    y = F.conv2d(x, w, None, stride, padding, dilation, groups)
    return 2 * width * (x.numel() + w.numel() + y.numel()) * x.element_size()


def fusing_pays(device: torch.device | str = "cpu"):
    """The planner's ``fuse`` decision for ``device``: fuse a convolution group only where
    timing both ways on this machine shows the fused kernel is faster (timed once per shape,
    device, thread count and torch version, and remembered across runs: ``decisions``)."""
    device = str(torch.device(device))

    def fuse(group: ConvFusion) -> bool:
        return grouped_conv_wins(group.width, group.batch, group.in_channels, group.out_channels, group.size,
                                 group.kernel, group.stride, group.padding, group.dilation, group.groups, device,
                                 torch.get_num_threads())

    return fuse


def grouped_conv_wins(width: int, batch: int, in_channels: int, out_channels: int, size: tuple[int, int],
                      kernel: tuple[int, int], stride: tuple, padding, dilation: tuple, groups: int,
                      device: str = "cpu", threads: int = 0) -> bool:
    """Whether one grouped convolution over ``width`` trials beats ``width`` convolutions; a shape
    whose timing would allocate more than ``limits.MAX_BUILD_BYTES`` is refused, as a graph is."""
    try:
        needed = timing_bytes(width, batch, in_channels, out_channels, size, kernel, stride, padding, dilation,
                              groups)
    except (RuntimeError, ValueError, TypeError) as e:
        raise IRError(f"cannot time a convolution of {width} trials ({in_channels}->{out_channels} channels, "
                      f"input {list(size)}, batch {batch}): {first_line(e)}") from None
    if needed > limits.MAX_BUILD_BYTES:
        raise IRError(f"timing a convolution of {width} trials (batch {batch}, {in_channels}->{out_channels} "
                      f"channels, input {list(size)}) would allocate {needed / 2**20:,.1f} MiB, over the limit of "
                      f"{limits.MAX_BUILD_BYTES / 2**20:,.1f} MiB; train with autotune=False to fuse without timing")
    key = {"width": width, "batch": batch, "in": in_channels, "out": out_channels, "size": list(size),
           "kernel": list(kernel), "stride": list(stride), "padding": padding if isinstance(padding, str) else list(padding),
           "dilation": list(dilation), "groups": groups, "dtype": "float32"}
    return decide("grouped_conv", key, device, lambda: _time_grouped_conv(
        width, batch, in_channels, out_channels, size, kernel, stride, padding, dilation, groups, device))[0]


def _time_grouped_conv(width: int, batch: int, in_channels: int, out_channels: int, size: tuple[int, int],
                       kernel: tuple[int, int], stride: tuple, padding, dilation: tuple, groups: int,
                       device: str) -> tuple[bool, str]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        xs = [torch.randn(batch, in_channels, *size, device=device, requires_grad=True) for _ in range(width)]
        ws = [torch.randn(out_channels, in_channels // groups, *kernel, device=device, requires_grad=True)
              for _ in range(width)]

    def separate() -> None:
        outs = [F.conv2d(x, w, None, stride, padding, dilation, groups) for x, w in zip(xs, ws)]
        torch.stack([o.sum() for o in outs]).sum().backward()

    def fused() -> None:
        y = F.conv2d(torch.cat(xs, 1), torch.cat(ws, 0), None, stride, padding, dilation, groups * width)
        torch.stack([o.sum() for o in y.chunk(width, 1)]).sum().backward()

    fused_s, separate_s = fastest_seconds(fused, device), fastest_seconds(separate, device)
    return fused_s < separate_s, f"fused {fused_s * 1e3:.2f} ms, separate {separate_s * 1e3:.2f} ms"


def batched_step_key(trials, passes, trust: tuple[str, ...] = ()) -> dict:
    """What decides whether a batched training step beats the unbatched one, for the remembered
    choice: each trial's model structure (not names), batch size, which trials read the same
    data, the optimizer's kind and what its step does, which weights are frozen and with what
    values (equal frozen values are computed once), and the passes. Frozen values given to the
    trial are hashed with the graph that reads them; ones drawn from the seed count by the seed."""
    from retiarii_ir import structural_hash
    from retiarii_ir.optimizer import eval_layers

    data = {}
    described = []
    for trial in trials:
        config = trial.train
        given = trial.initial_state if trial.initial_state is not None else trial.graph.weights
        frozen = {k: given[k] for k in trial.frozen if k in given} if given is not None else {}
        described.append({
            "graph": structural_hash(trial.graph, params=frozen or None), "batch": trial.data.batch_size,
            "data": data.setdefault(trial.data, len(data)), "optimizer": config.optimizer,
            "momentum": config.momentum > 0, "weight_decay": config.weight_decay > 0,
            "clip": config.grad_clip is not None, "schedule": config.schedule,
            "frozen": sorted(trial.frozen), "frozen_seed": config.seed if trial.frozen and given is None else None,
            "eval": sorted(eval_layers(trial, trust))})
    recipes = {(t.train.lr, t.train.momentum, t.train.weight_decay, t.train.betas) for t in trials}
    return {"passes": sorted(passes), "trials": described, "same_recipe": len(recipes) == 1}
