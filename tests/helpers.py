"""Small assertions shared by the test files."""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_leaves


def max_abs_diff(a, b) -> float:
    """Largest element-wise difference between two (nested) outputs of equal structure."""
    left, right = tree_leaves(a), tree_leaves(b)
    assert len(left) == len(right), f"outputs differ in structure: {len(left)} vs {len(right)} leaves"
    diffs = [0.0]
    for x, y in zip(left, right):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.shape == y.shape and x.dtype == y.dtype
            diffs.append((x.double() - y.double()).abs().max().item() if x.numel() else 0.0)
        else:
            assert x == y
    return max(diffs)
