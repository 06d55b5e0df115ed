"""Measured choice between a fused kernel and K separate ones.

A grouped convolution is one kernel launch instead of K, but on some backends (CPU in
particular, for wider layers) it runs slower than the K dense convolutions it replaces.
Rather than guess, the trainer times both, forward and backward, on the real shapes, once
per distinct layer shape, and hands the planner ``fusing_pays(device)`` as its decision.
"""

from __future__ import annotations

import time
from functools import lru_cache

import torch
import torch.nn.functional as F

from retiarii_ir import limits
from retiarii_ir.errors import IRError, first_line
from retiarii_ir.optimizer import ConvFusion

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
    timing both ways on this machine (cached per shape and thread count) shows the fused
    kernel is faster."""
    device = str(torch.device(device))

    def decide(group: ConvFusion) -> bool:
        return grouped_conv_wins(group.width, group.batch, group.in_channels, group.out_channels, group.size,
                                 group.kernel, group.stride, group.padding, group.dilation, group.groups, device,
                                 torch.get_num_threads())

    return decide


@lru_cache(maxsize=512)
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

    return fastest_seconds(fused, device) < fastest_seconds(separate, device)
