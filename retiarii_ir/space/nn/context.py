"""Construction-time state of a model space: automatic labels and the fixed architecture.

Choices are built inside the user's ``__init__``. Two things depend on *when* they are
built: their automatic label (a per-kind counter, restarted by ``model_wrapper`` so the
same class always yields the same labels) and, under ``fixed_arch``, the value they
must resolve to instead of becoming a choice.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Mapping
from typing import Any

_counters: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar("_counters", default=None)
_global_counters: dict[str, int] = {}
_fixed: contextvars.ContextVar[FixedContext | None] = contextvars.ContextVar("_fixed", default=None)


class FixedContext:
    """The sample a ``fixed_arch`` block resolves choices with, and the labels it saw."""

    def __init__(self, sample: Mapping[str, Any]) -> None:
        self.sample = dict(sample)
        self.seen: dict[str, list[Any] | None] = {}
        self.missing: list[str] = []

    def value(self, label: str, candidates: list[Any] | None, default: Any) -> Any:
        """The sample's value for ``label`` (checked against ``candidates``), else ``default``."""
        from ..search_space import Choice

        self.seen.setdefault(label, candidates)
        if label not in self.sample:
            if label not in self.missing:
                self.missing.append(label)
            return default
        value = self.sample[label]
        if candidates is not None:
            choice = Choice(label, tuple(candidates))
            value = choice.values[choice.index(value)]
        return value


def current_fixed() -> FixedContext | None:
    """The active ``fixed_arch`` context, if any."""
    return _fixed.get()


def enter_fixed(context: FixedContext) -> contextvars.Token:
    return _fixed.set(context)


def exit_fixed(token: contextvars.Token) -> None:
    _fixed.reset(token)


def auto_label(kind: str) -> str:
    """``{kind}_{n}``: n counts choices of this kind in the current model construction."""
    counters = _counters.get()
    if counters is None:
        counters = _global_counters
    counters[kind] = counters.get(kind, 0) + 1
    return f"{kind}_{counters[kind]}"


def model_wrapper(cls: type) -> type:
    """Class decorator: automatic labels restart for every instance, so they are stable."""
    original_init = cls.__init__

    @functools.wraps(original_init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _counters.get() is not None:  # nested inside another wrapped space: keep counting
            original_init(self, *args, **kwargs)
            return
        token = _counters.set({})
        try:
            original_init(self, *args, **kwargs)
        finally:
            _counters.reset(token)

    cls.__init__ = __init__
    return cls


def check_label(label: Any) -> str:
    """Labels are non-empty strings without the characters samples and paths rely on."""
    if not isinstance(label, str) or not label or any(c in label for c in "\n\"'"):
        raise ValueError(f"a choice label must be a non-empty plain string, got {label!r}")
    return label
