"""fixed_arch: build the plain nn.Module of one architecture from the user's space class.

Under ``with fixed_arch(sample): model = MySpace()`` every choice resolves while the
model is built: a LayerChoice returns the chosen candidate, a ValueChoice its value, a
Repeat an ``nn.Sequential`` of the chosen depth, an InputChoice a fixed reduction. The
result has the same state_dict keys as ``build_module(space.freeze(sample))``.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from .nn.context import FixedContext, enter_fixed, exit_fixed
from .search_space import InvalidSampleError


@contextlib.contextmanager
def fixed_arch(sample: Mapping[str, Any] | str | os.PathLike, space: Any = None,
               warn_missing: bool = True) -> Iterator[FixedContext]:
    """Resolve every choice built inside the block with ``sample`` (a dict or a JSON file).

    With ``space`` (a ModelSpace) the sample is validated against it first. Labels the
    block never meets raise InvalidSampleError listing the labels it did meet.
    """
    if isinstance(sample, (str, os.PathLike)):
        with open(sample) as f:
            sample = json.load(f)
    if not isinstance(sample, Mapping):
        raise InvalidSampleError(f"fixed_arch needs a dict of label -> value, got {type(sample).__name__}")
    if space is not None:
        sample = space.validate(sample)
    context = FixedContext(sample)
    token = enter_fixed(context)
    try:
        yield context
    finally:
        exit_fixed(token)
    unknown = [label for label in context.sample if label not in context.seen]
    if unknown:
        raise InvalidSampleError(f"labels {unknown} do not exist in the model built under fixed_arch; "
                                 f"valid labels: {list(context.seen)}")
    if context.missing and space is None and warn_missing:
        warnings.warn(f"fixed_arch: labels {context.missing} are not in the sample and took their first "
                      f"candidate (expected only for choices inside candidates that were not chosen)",
                      stacklevel=3)


__all__ = ["fixed_arch"]
