"""Batch norms outside weight steps: each path normalised by its own batch statistics.

A supernet's batch norms keep one set of running statistics for every path, and a BatchNorm
right after a choice sees very different outputs from each candidate (a convolution's scale
is not a pool's), so the running statistics fit no path: a trained convolution scored on
them is about as good as chance. Training-mode statistics fit the path, but they pass a
gradient through the mean and variance, which cancels the scale of a gated path (see
``shape_checks.py``). ``batch_statistics`` takes the middle way: the batch's own mean and
variance, computed from the path actually run and held constant, and nothing updated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from .mixed import MixedValueLayer


def norms_of(supernet: nn.Module) -> list[nn.Module]:
    """Every batch norm of the supernet: plain ones, and value layers built from one."""
    return [m for m in supernet.modules() if getattr(m, "running_mean", None) is not None and (
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            or (isinstance(m, MixedValueLayer) and issubclass(m.base_class, nn.modules.batchnorm._BatchNorm)))]


def _use_batch_statistics(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: new running buffers holding the input's per-channel mean and variance in
    their leading channels (new tensors, as autograd may hold the ones of an earlier call)."""
    x = args[0].detach()
    dims = [0] + list(range(2, x.dim()))
    channels = x.shape[1]
    mean, var = module.running_mean.clone(), module.running_var.clone()
    mean[:channels], var[:channels] = x.mean(dims), x.var(dims, unbiased=False)
    module.running_mean, module.running_var = mean, var


@contextlib.contextmanager
def batch_statistics(supernet: nn.Module) -> Iterator[None]:
    """Eval mode, every batch norm on the statistics of the batch it normalises (no gradient
    through them); the running statistics are as they were afterwards."""
    norms = norms_of(supernet)
    saved = [(m.running_mean, m.running_var) for m in norms]
    was_training = supernet.training
    hooks = [m.register_forward_pre_hook(_use_batch_statistics) for m in norms]
    supernet.eval()
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for m, (mean, var) in zip(norms, saved):
            m.running_mean, m.running_var = mean, var
        supernet.train(was_training)
