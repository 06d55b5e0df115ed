"""Identifiers in generated source: validated, never keywords, never shadowing what the code uses.

Every name that reaches the output (variables, parameters, attributes, class names) goes
through this module, so a graph from untrusted JSON cannot smuggle code in through a name.
"""

from __future__ import annotations

import builtins
import keyword
import re

from retiarii_ir.errors import UnsafeTargetError
from retiarii_ir.targets import check_identifier, check_qualname

from .errors import CodegenError

_IDENTIFIER = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")

# Names the generated file itself relies on: a variable must never hide them.
RESERVED = frozenset({"self", "torch", "math", "operator", "super"})
_BUILTINS = frozenset(name for name in dir(builtins) if not name.startswith("_"))
# Builtins that generated code may call; even a forward parameter must not hide them.
CALLED_BUILTINS = frozenset({
    "getattr", "len", "int", "float", "bool", "tuple", "list", "slice", "range", "min", "max",
    "abs", "sum", "round", "pow", "divmod", "all", "any", "zip", "isinstance", "dict"})


def is_identifier(name: object) -> bool:
    """A plain ASCII identifier that is not a keyword and not a dunder name."""
    return (isinstance(name, str) and bool(_IDENTIFIER.match(name)) and not keyword.iskeyword(name)
            and not name.startswith("__"))


def is_public_attribute(name: object) -> bool:
    """An attribute that ``x.name`` may read: an identifier not starting with an underscore."""
    return is_identifier(name) and not name.startswith("_")  # type: ignore[union-attr]


def identifier_from(text: str) -> str:
    """``block1-0`` -> ``block1_0``: a module path segment made into the stem of a local or class
    name (it may still start with a digit; callers prefix one)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "module"


def check_name(name: object, what: str) -> str:
    """``name`` when it is a plain identifier (the IR's own rule); CodegenError otherwise."""
    try:
        return check_identifier(name, what)
    except UnsafeTargetError as e:
        raise CodegenError(str(e)) from None


def check_path(qualname: object, what: str) -> list[str]:
    """The segments of a module path like ``layer1.0.conv``; CodegenError if any is unsafe."""
    if not isinstance(qualname, str) or not qualname:
        raise CodegenError(f"{what} {qualname!r} is not a module path")
    try:
        return check_qualname(qualname, what).split(".")
    except UnsafeTargetError as e:
        raise CodegenError(str(e)) from None


def check_dotted(path: object, what: str) -> str:
    """A dotted Python path whose segments are identifiers without dunders."""
    if not isinstance(path, str) or not all(
            _IDENTIFIER.match(p) and not p.startswith("__") for p in path.split(".")):
        raise CodegenError(f"{what} {path!r} is not a dotted name of plain identifiers")
    return path


class NameTable:
    """Hands out unique local names; keywords, builtins and reserved names get a suffix."""

    def __init__(self, taken: set[str] | frozenset[str] = frozenset()) -> None:
        self._used: set[str] = set(taken)

    def claim(self, wanted: str, what: str, avoid_builtins: bool = True) -> str:
        """A fresh name close to ``wanted`` (which must be an identifier)."""
        base = check_name(wanted, what)
        shadowed = _BUILTINS if avoid_builtins else CALLED_BUILTINS
        if keyword.iskeyword(base) or base in RESERVED or base in shadowed:
            base = base + "_"
        name, index = base, 1
        while name in self._used or keyword.iskeyword(name):
            name = f"{base}_{index}"
            index += 1
        self._used.add(name)
        return name

    def __contains__(self, name: str) -> bool:
        return name in self._used
