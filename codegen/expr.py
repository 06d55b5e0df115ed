"""Constructor calls as small trees, so the calls of several instances can be lined up and
the constants where they differ become parameters of one class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Const:
    """A literal (already validated source text) and the parameter name it would take."""

    text: str
    hint: str


@dataclass(frozen=True)
class Param:
    """A parameter of the class being written."""

    name: str


@dataclass(frozen=True)
class Slot:
    """Where instances differ, while they are being lined up: an index into the slot list."""

    index: int


@dataclass(frozen=True)
class Call:
    """``callee(args)``; each argument is (keyword or None, parameter name, value). ``defaults``
    gives the source of the defaults of parameters a call may leave out."""

    callee: str
    args: tuple
    defaults: tuple = ()


@dataclass(frozen=True)
class Items:
    """A list (keys None) or a dict (keys are string literals) of expressions."""

    keys: tuple
    values: tuple
    is_dict: bool = False


Expr = Union[Const, Param, Slot, Call, Items]


def render(expr: Expr) -> str:
    if isinstance(expr, Const):
        return expr.text
    if isinstance(expr, Param):
        return expr.name
    if isinstance(expr, Call):
        return f"{expr.callee}({', '.join(f'{k}={render(v)}' if k else render(v) for k, _, v in expr.args)})"
    if isinstance(expr, Items):
        if expr.is_dict:
            return "{" + ", ".join(f"{k}: {render(v)}" for k, v in zip(expr.keys, expr.values)) + "}"
        return f"[{', '.join(render(v) for v in expr.values)}]"
    raise TypeError(f"cannot render {expr!r}")


def substitute(expr: Expr, slots: dict[int, str]) -> Expr:
    """``expr`` with every slot replaced by the parameter named for it."""
    if isinstance(expr, Slot):
        return Param(slots[expr.index])
    if isinstance(expr, Call):
        return Call(expr.callee, tuple((k, h, substitute(v, slots)) for k, h, v in expr.args), expr.defaults)
    if isinstance(expr, Items):
        return Items(expr.keys, tuple(substitute(v, slots) for v in expr.values), expr.is_dict)
    return expr


def unify(exprs: list[Expr], slots: list[tuple[tuple[str, ...], str]]) -> Expr | None:
    """One expression for all of ``exprs``, with a slot wherever their constants differ (each
    slot's per-instance texts and name appended to ``slots``); None when their shapes differ."""
    first = exprs[0]
    if all(isinstance(e, Const) for e in exprs):
        texts = tuple(e.text for e in exprs)
        if len(set(texts)) == 1:
            return first
        slots.append((texts, first.hint))
        return Slot(len(slots) - 1)
    if all(isinstance(e, Call) and e.callee == first.callee for e in exprs):
        return _unify_calls(exprs, slots)
    if all(isinstance(e, Items) and e.keys == first.keys and e.is_dict == first.is_dict for e in exprs):
        values = [unify([e.values[i] for e in exprs], slots) for i in range(len(first.values))]
        return None if any(v is None for v in values) else Items(first.keys, tuple(values), first.is_dict)
    return None


def _unify_calls(calls: list[Call], slots: list) -> Call | None:
    positional = [[a for a in c.args if a[0] is None] for c in calls]
    if len({len(p) for p in positional}) != 1:
        return None
    args = []
    for i, (_, hint, _) in enumerate(positional[0]):
        value = unify([p[i][2] for p in positional], slots)
        if value is None:
            return None
        args.append((None, hint, value))
    keywords = list(dict.fromkeys(k for c in calls for k, _, _ in c.args if k is not None))
    for key in keywords:
        values = []
        for call in calls:
            given = {k: v for k, _, v in call.args if k is not None}
            if key in given:
                values.append(given[key])
            elif key in dict(call.defaults):
                values.append(Const(dict(call.defaults)[key], key))
            else:
                return None
        value = unify(values, slots)
        if value is None:
            return None
        args.append((key, key, value))
    return Call(calls[0].callee, tuple(args), calls[0].defaults)
