"""Name a Python callable so another process can find it again: ``package.module:qualname`` for
importable code, ``/path/to/file.py:qualname`` for code in a script, a config file or ``__main__``.
This is what lets trials travel as JSON instead of pickled live objects.

A name is data until it is checked. ``resolve`` checks in two steps. Before anything is imported:
the spelling (no dunder parts, no standard-library module) and, for names read from data (a
store, a job line), that the experiment named exactly this reference or the user trusts its
package (``Trust``). After the import: the object itself (a function or class defined at module
level, outside the standard library), so ``mypkg:run`` re-exporting ``subprocess.run`` is refused. Only
then may a caller call it, and the caller checks what it returns. Nothing here ever adds the
current folder to ``sys.path``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from retiarii_ir.errors import first_line

from retiarii_ir.runtime.errors import ConfigError

MAX_REFERENCE_LENGTH = 1000

# module name given to a file we loaded -> its absolute path (to name its objects again)
_LOADED_FILES: dict[str, str] = {}


@dataclass(frozen=True)
class Trust:
    """What names read from data may name: the exact references an experiment made itself
    (``mypkg.spaces:Net``, ``/abs/search.py:score``), and whole packages the user trusts by name
    (``--trust mypkg``: that package and the modules under it)."""

    references: frozenset[str] = field(default_factory=frozenset)
    packages: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, references: Iterable[str] = (), packages: Iterable[str] = ()) -> "Trust":
        """``references`` exactly (checked), plus ``packages`` by name."""
        names = set()
        for package in packages:
            if not isinstance(package, str) or not all(p.isidentifier() for p in package.split(".")):
                raise ConfigError(f"trust names packages like 'mypkg', got {str(package)[:80]!r}")
            names.add(package)
        return cls(frozenset(_normal(check_reference(r)) for r in references), frozenset(names))

    def to_json(self) -> dict:
        return {"references": sorted(self.references), "packages": sorted(self.packages)}

    @classmethod
    def from_json(cls, raw: Any) -> "Trust":
        if (not isinstance(raw, dict) or set(raw) != {"references", "packages"}
                or not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in raw.values())):
            raise ConfigError(f"malformed trust {str(raw)[:200]}: expected {{'references': [...], 'packages': [...]}}")
        return cls.of(raw["references"], raw["packages"])

    def names(self, reference: str) -> bool:
        """Whether the experiment named exactly this reference."""
        return _normal(reference) in self.references

    def covers(self, module_name: str) -> bool:
        """Whether a module lies in a package trusted by name (files never do)."""
        return any(module_name == p or module_name.startswith(p + ".") for p in self.packages)

    def describe(self) -> str:
        shown = sorted(self.references) + [f"package {p}" for p in sorted(self.packages)]
        return ", ".join(shown) if shown else "nothing"


def _normal(reference: str) -> str:
    """One spelling per reference: a file by its real path."""
    location, _, qualname = reference.rpartition(":")
    return f"{os.path.realpath(location)}:{qualname}" if location.endswith(".py") else reference


def _is_dunder(part: str) -> bool:
    return part.startswith("__")


def _stdlib(module_name: str) -> bool:
    return module_name.partition(".")[0] in sys.stdlib_module_names


def check_reference(reference: Any) -> str:
    """The reference's spelling, checked without importing or running anything; a file
    reference is made absolute and must name an existing ``.py`` file."""
    if not isinstance(reference, str) or len(reference) > MAX_REFERENCE_LENGTH:
        raise ConfigError(f"a reference is text like 'package.module:name', got {str(reference)[:80]!r}")
    location, sep, qualname = reference.rpartition(":")
    if not sep or not location or not qualname:
        raise ConfigError(f"{reference!r} must look like 'package.module:name' or 'path/file.py:name'")
    parts = qualname.split(".")
    if not all(p.isidentifier() for p in parts):
        raise ConfigError(f"{reference!r}: {qualname!r} is not a Python name")
    if any(_is_dunder(p) for p in parts):
        raise ConfigError(f"{reference!r} names a dunder or private name ({qualname!r}); "
                          f"name a function or class of your own")
    if location.endswith(".py"):
        path = os.path.abspath(location)
        if not os.path.isfile(path):
            raise ConfigError(f"{reference!r}: no such file {path}")
        return f"{path}:{qualname}"
    modules = location.split(".")
    if not all(p.isidentifier() for p in modules) or any(_is_dunder(p) for p in modules):
        raise ConfigError(f"{reference!r}: {location!r} is not a module name")
    if _stdlib(location):
        raise ConfigError(f"{reference!r} names the standard library ({location}); "
                          f"a reference names a function or class of your own code")
    return reference


def load_file_module(path: str):
    """Import a Python file under a private module name (never as ``__main__``, so its
    ``if __name__ == "__main__"`` block does not run again); the same file loads once."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"no such file: {path}")
    if not path.endswith(".py"):
        raise ConfigError(f"{path} is not a Python file (.py)")
    name = "retiarii_file_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    folder = os.path.dirname(path)
    if folder not in sys.path:  # the file's neighbours import as they would when it runs as a script
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _LOADED_FILES[name] = path
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file failed: one line, no traceback
        del sys.modules[name]
        raise ConfigError(f"{path} raised {type(e).__name__} while loading: {first_line(e)}") from None
    return module


def reference_of(obj: Any) -> str:
    """The reference another process resolves with ``resolve``; a string is checked, not imported."""
    if isinstance(obj, str):
        return check_reference(obj)
    module_name, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module_name or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigError(f"{obj!r} has no importable name: define it at the top level of a module or file")
    module = sys.modules.get(module_name)
    if module_name in _LOADED_FILES:
        return check_reference(f"{_LOADED_FILES[module_name]}:{qualname}")
    if module_name in ("__main__", "__mp_main__"):
        path = getattr(module, "__file__", None)
        if not path:
            raise ConfigError(f"{qualname} is defined in an interactive session; put it in a .py file "
                              f"so worker processes can import it")
        return check_reference(f"{os.path.abspath(path)}:{qualname}")
    return check_reference(f"{module_name}:{qualname}")


def _real_location(obj: Any) -> str:
    """Where ``obj`` was defined: its module's name, or the file we loaded it from."""
    module_name = getattr(obj, "__module__", None) or ""
    return _LOADED_FILES.get(module_name, module_name)


def resolve(reference: str, trust: Trust | None = None) -> Any:
    """``package.module:qualname`` or ``path/file.py:qualname`` -> the function or class, checked.
    With ``trust`` (a name read from data), only trusted packages and files are imported."""
    reference = check_reference(reference)
    location, _, qualname = reference.rpartition(":")
    named = trust is not None and trust.names(reference)
    if trust is not None and not named and (location.endswith(".py") or not trust.covers(location)):
        if location.endswith(".py"):
            raise ConfigError(f"{reference!r} is not a reference of this experiment (trusted: {trust.describe()}); "
                              f"nothing was run")
        raise ConfigError(f"{reference!r} is not trusted (trusted: {trust.describe()}); nothing was imported. "
                          f"Trust its package if you know it: --trust {location.partition('.')[0]}")
    if location.endswith(".py"):
        module = load_file_module(location)
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as e:
            raise ConfigError(f"cannot import {reference!r}: {first_line(e)}") from None
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"cannot import {reference!r}: importing {location} raised "
                              f"{type(e).__name__}: {first_line(e)}") from None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"cannot find {reference!r}: {location} has no {qualname!r}")
    return _checked_object(obj, reference, None if named else trust)


def _checked_object(obj: Any, reference: str, trust: Trust | None) -> Any:
    """The object itself: a module-level function or class outside the standard library; with
    ``trust`` (a name trusted by its package), defined in a trusted package too."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        raise ConfigError(f"{reference!r} holds a {type(obj).__name__} value, not a function or class defined in a module")
    if "<locals>" in obj.__qualname__:
        raise ConfigError(f"{reference!r} is defined inside a function; define it at module level")
    real = _real_location(obj)
    if _stdlib(real):
        raise ConfigError(f"{reference!r} is {real}.{obj.__qualname__}, from the standard library; "
                          f"a reference names a function or class of your own code")
    if trust is not None and not trust.covers(real):
        raise ConfigError(f"{reference!r} is {real}.{obj.__qualname__}, defined outside what is trusted "
                          f"({trust.describe()})")
    return obj
