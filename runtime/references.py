"""Name a Python callable so another process can find it again: ``package.module:qualname`` for
importable code, ``/path/to/file.py:qualname`` for code in a script, a config file or ``__main__``.
This is what lets trials travel as JSON instead of pickled live objects."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from typing import Any

from retiarii_ir.errors import first_line

from .experiment_errors import ConfigError

# module name given to a file we loaded -> its absolute path (to name its objects again)
_LOADED_FILES: dict[str, str] = {}


def load_file_module(path: str):
    """Import a Python file under a private module name (never as ``__main__``, so its
    ``if __name__ == "__main__"`` block does not run again); the same file loads once."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"no such file: {path}")
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
    """The reference another process resolves with ``resolve``."""
    if isinstance(obj, str):
        resolve(obj)  # check it now, not in a worker
        return obj
    module_name, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module_name or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigError(f"{obj!r} has no importable name: define it at the top level of a module or file")
    module = sys.modules.get(module_name)
    if module_name in _LOADED_FILES:
        return f"{_LOADED_FILES[module_name]}:{qualname}"
    if module_name in ("__main__", "__mp_main__"):
        path = getattr(module, "__file__", None)
        if not path:
            raise ConfigError(f"{qualname} is defined in an interactive session; put it in a .py file "
                              f"so worker processes can import it")
        return f"{os.path.abspath(path)}:{qualname}"
    return f"{module_name}:{qualname}"


def resolve(reference: str) -> Any:
    """``package.module:qualname`` or ``path/file.py:qualname`` -> the object."""
    location, sep, qualname = reference.rpartition(":")
    if not sep or not location or not qualname:
        raise ConfigError(f"{reference!r} must look like 'package.module:name' or 'path/file.py:name'")
    if location.endswith(".py"):
        module = load_file_module(location)
    else:
        if os.getcwd() not in sys.path:  # as `python -m` does: the user's own modules import
            sys.path.insert(0, os.getcwd())
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
    return obj
