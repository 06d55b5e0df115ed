"""ValueChoice: a value picked from candidates, with arithmetic that stays symbolic.

``width = ValueChoice([16, 32], label="width")`` can be passed to layers from
``retiarii_ir.nn`` (``nn.Conv2d(3, width, 3)``) and combined (``width * 2``,
``ValueChoice.max(width // 4, 8)``, ``ks[0]``). Each combination is a ``ValueExpr``
evaluated later against a sample, so one label can size several layers together.
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from ...errors import ValueChoiceMisuseError
from .context import auto_label, check_label, current_fixed


class ValueExpr:
    """A value computed from one or more choices; evaluated against a sample."""

    def __init__(self, fn: Callable[..., Any], operands: tuple, text: str) -> None:
        self._fn = fn
        self._operands = operands
        self._text = text

    # --------------------------------------------------------------- evaluation
    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The concrete value for the given label -> value mapping."""
        return self._fn(*(evaluate(o, values) for o in self._operands))

    def default(self) -> Any:
        """The value when every choice takes its first candidate."""
        return self.evaluate({c.label: c.candidates[0] for c in self.leaves()})

    def leaves(self) -> list[ValueChoice]:
        """The ValueChoices this expression reads, each label once."""
        found: dict[str, ValueChoice] = {}
        for operand in self._operands:
            for leaf in leaves_of(operand):
                found.setdefault(leaf.label, leaf)
        return list(found.values())

    def __repr__(self) -> str:
        return self._text

    # --------------------------------------------------------------- misuse
    # A choice has no value until a sample is applied, so everything that needs one
    # (conversions, comparisons, iteration, torch functions) raises here, naming the
    # plain torch.nn layer that asked when there is one, instead of failing deep in torch.
    def __bool__(self) -> bool:
        raise misuse(self, "an if/while/and/or (bool())",
                     "a choice cannot steer Python control flow while the space is built; use "
                     "LayerChoice for structural alternatives")

    def __index__(self) -> int:
        raise misuse(self, "an int (an index, a slice, range())", "or convert with ValueChoice.to_int(...)")

    def __int__(self) -> int:
        raise misuse(self, "int()", "or convert with ValueChoice.to_int(...)")

    def __float__(self) -> float:
        raise misuse(self, "float()", "or convert with ValueChoice.apply(float, ...)")

    def __round__(self, ndigits: int | None = None) -> Any:
        raise misuse(self, "round()", "or round with ValueChoice.apply(round, ...)")

    def __iter__(self):
        raise misuse(self, "iteration", "index a tuple-valued choice instead (choice[0])")

    def __contains__(self, item: Any) -> bool:  # else ``in`` turns the error into "not iterable"
        raise misuse(self, "the test `in`", "index a tuple-valued choice instead (choice[0])")

    def __len__(self) -> int:
        raise misuse(self, "len()", "index a tuple-valued choice instead (choice[0])")

    def __format__(self, spec: str) -> str:
        if not spec:
            return str(self)
        raise misuse(self, f"formatting with {spec!r}")

    def __eq__(self, other: Any) -> bool:
        raise misuse(self, "the comparison ==", "or compute with ValueChoice.apply(fn, ...)")

    def __ne__(self, other: Any) -> bool:
        raise misuse(self, "the comparison !=", "or compute with ValueChoice.apply(fn, ...)")

    def __lt__(self, other: Any) -> bool:
        raise misuse(self, "the comparison <", "or compute with ValueChoice.apply(fn, ...)")

    def __le__(self, other: Any) -> bool:
        raise misuse(self, "the comparison <=", "or compute with ValueChoice.apply(fn, ...)")

    def __gt__(self, other: Any) -> bool:
        raise misuse(self, "the comparison >", "or compute with ValueChoice.apply(fn, ...)")

    def __ge__(self, other: Any) -> bool:
        raise misuse(self, "the comparison >=", "or compute with ValueChoice.apply(fn, ...)")

    __hash__ = object.__hash__  # identity, as before; comparisons raise instead of answering

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        """torch functions given a choice (``torch.empty((width, 3))`` in Linear) land here."""
        expr = _first_expr((args, kwargs or {}))
        raise misuse(expr if expr is not None else cls, f"torch.{getattr(func, '__name__', func)}()")

    # --------------------------------------------------------------- arithmetic
    def _binary(self, other: Any, fn: Callable, symbol: str, reverse: bool = False) -> ValueExpr:
        a, b = (other, self) if reverse else (self, other)
        return ValueExpr(fn, (a, b), f"({a!r} {symbol} {b!r})")

    def __add__(self, o): return self._binary(o, operator.add, "+")
    def __radd__(self, o): return self._binary(o, operator.add, "+", True)
    def __sub__(self, o): return self._binary(o, operator.sub, "-")
    def __rsub__(self, o): return self._binary(o, operator.sub, "-", True)
    def __mul__(self, o): return self._binary(o, operator.mul, "*")
    def __rmul__(self, o): return self._binary(o, operator.mul, "*", True)
    def __truediv__(self, o): return self._binary(o, operator.truediv, "/")
    def __rtruediv__(self, o): return self._binary(o, operator.truediv, "/", True)
    def __floordiv__(self, o): return self._binary(o, operator.floordiv, "//")
    def __rfloordiv__(self, o): return self._binary(o, operator.floordiv, "//", True)
    def __mod__(self, o): return self._binary(o, operator.mod, "%")
    def __rmod__(self, o): return self._binary(o, operator.mod, "%", True)
    def __pow__(self, o): return self._binary(o, operator.pow, "**")
    def __rpow__(self, o): return self._binary(o, operator.pow, "**", True)
    def __neg__(self): return ValueExpr(operator.neg, (self,), f"-{self!r}")
    def __getitem__(self, key): return ValueExpr(operator.getitem, (self, key), f"{self!r}[{key!r}]")

    # --------------------------------------------------------------- helpers
    @staticmethod
    def max(*values: Any) -> Any:
        """The largest of several values, any of which may be a choice."""
        return _lazy(lambda *v: max(v), values, f"max{values!r}")

    @staticmethod
    def min(*values: Any) -> Any:
        return _lazy(lambda *v: min(v), values, f"min{values!r}")

    @staticmethod
    def to_int(value: Any) -> Any:
        return _lazy(int, (value,), f"int({value!r})")

    @staticmethod
    def apply(fn: Callable[..., Any], *values: Any) -> Any:
        """``fn(*values)`` once the choices are known (e.g. a ``make_divisible`` helper)."""
        return _lazy(fn, values, f"{getattr(fn, '__name__', 'fn')}{values!r}")


class ResolvedInt(int):
    """An int ValueChoice resolved by ``fixed_arch``; remembers its candidates (for Repeat)."""

    def __new__(cls, value: int, candidates: list[int]):
        resolved = super().__new__(cls, value)
        resolved.candidates = list(candidates)
        return resolved


def _lazy(fn: Callable[..., Any], values: tuple, text: str) -> Any:
    """An expression when a choice is involved, else (e.g. under fixed_arch) the value itself."""
    if not leaves_of(values):
        return fn(*values)
    return ValueExpr(fn, values, text)


class ValueChoice(ValueExpr):
    """A choice among plain values (ints, floats, strings, bools or tuples of them).

    Under ``fixed_arch`` it is not a choice at all: the constructor returns the value.
    """

    def __new__(cls, candidates: Iterable[Any] | None = None, label: str | None = None):
        fixed = current_fixed()
        if fixed is not None and candidates is not None:
            candidates = list(candidates)
            label = check_label(label) if label is not None else auto_label("valuechoice")
            _check_candidates(candidates, label)
            value = fixed.value(label, candidates, candidates[0])
            if type(value) is int and all(type(c) is int for c in candidates):
                return ResolvedInt(value, candidates)
            return value
        return super().__new__(cls)

    def __init__(self, candidates: Iterable[Any], label: str | None = None) -> None:
        self.candidates = list(candidates)
        self.label = check_label(label) if label is not None else auto_label("valuechoice")
        _check_candidates(self.candidates, self.label)
        super().__init__(lambda: None, (), f"ValueChoice({self.label!r})")

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        if self.label not in values:
            raise KeyError(f"no value for choice {self.label!r}; candidates: {self.candidates}")
        return values[self.label]

    def leaves(self) -> list[ValueChoice]:
        return [self]


# ---------------------------------------------------------------------- misuse
def misuse(expr: Any, needs: str, hint: str = "") -> ValueChoiceMisuseError:
    """The error for a choice used where ``needs`` wants a concrete value."""
    layer = plain_layer_running()
    if layer is not None:
        leaves = expr.leaves() if isinstance(expr, ValueExpr) else []
        what = ", ".join(repr(leaf) for leaf in leaves) if leaves else repr(expr)
        return ValueChoiceMisuseError(
            f"{what} was passed to torch.nn.{layer}, which needs a concrete value (for {needs}); "
            f"plain torch.nn layers cannot take choices: use retiarii_ir.nn.{layer} instead")
    return ValueChoiceMisuseError(
        f"{expr!r} is a choice, not a concrete value, and {needs} needs one while the space is built; "
        f"pass choices to layers from retiarii_ir.nn (e.g. retiarii_ir.nn.Conv2d, not torch.nn.Conv2d)"
        + (f"; {hint}" if hint else ""))


def plain_layer_running() -> str | None:
    """The public torch.nn layer class whose code is running just above this module's frames.

    Constructors nest (Transformer builds Linear), so among ``__init__`` frames the outermost
    layer wins; otherwise (a forward) the innermost one does.
    """
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    layer, in_init = None, False
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("torch."):
        owner = frame.f_locals.get("self")
        name = _public_torch_layer(type(owner)) if isinstance(owner, nn.Module) else None
        if name is not None:
            if layer is None:
                layer, in_init = name, frame.f_code.co_name == "__init__"
            elif in_init and frame.f_code.co_name == "__init__":
                layer = name
            elif not in_init:
                break
        frame = frame.f_back
    return layer


def _public_torch_layer(cls: type) -> str | None:
    for klass in cls.__mro__:
        if klass.__module__.startswith("torch.nn.") and getattr(nn, klass.__name__, None) is klass:
            return klass.__name__
    return None


def _first_expr(value: Any) -> ValueExpr | None:
    if isinstance(value, ValueExpr):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        found = _first_expr(item)
        if found is not None:
            return found
    return None


def _check_candidates(candidates: list[Any], label: str) -> None:
    if not candidates:
        raise ValueError(f"ValueChoice {label!r} needs at least one candidate")
    for c in candidates:
        if not _is_plain(c):
            raise TypeError(f"ValueChoice {label!r}: candidate {c!r} is not a plain value "
                            f"(int, float, str, bool, None or a tuple/list of them); use "
                            f"LayerChoice to choose between modules")
    if any(isinstance(c, float) and not math.isfinite(c) for c in candidates):
        raise ValueError(f"ValueChoice {label!r}: candidates must be finite numbers")


def _is_plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (int, float, str, bool))


def leaves_of(value: Any) -> list[ValueChoice]:
    """Every ValueChoice inside a value (an expression, or a tuple/list/dict holding some)."""
    if isinstance(value, ValueExpr):
        return value.leaves()
    if isinstance(value, (tuple, list)):
        return [leaf for v in value for leaf in leaves_of(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves_of(v)]
    return []


def evaluate(value: Any, values: Mapping[str, Any]) -> Any:
    """``value`` with every expression inside it evaluated against ``values``."""
    if isinstance(value, ValueExpr):
        return value.evaluate(values)
    if isinstance(value, tuple):
        return tuple(evaluate(v, values) for v in value)
    if isinstance(value, list):
        return [evaluate(v, values) for v in value]
    if isinstance(value, dict):
        return {k: evaluate(v, values) for k, v in value.items()}
    return value


def default_of(value: Any) -> Any:
    """``value`` with every choice at its first candidate."""
    return evaluate(value, {leaf.label: leaf.candidates[0] for leaf in leaves_of(value)})
