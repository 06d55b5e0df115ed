"""Timed choices remembered across runs, so identical runs choose alike and pay the timing once.

Whether a fused kernel or a batched training step pays is measured on this machine. A timing
near the break-even point can go either way from one run to the next, and timing costs
seconds each time a process plans. So each choice is stored, keyed by everything that
decides it (the kind of choice, the shapes, the dtype, the device by name, the thread count
and the torch version), in a SQLite file in the user's cache folder:
``$RETIARII_CACHE_DIR``, else ``$XDG_CACHE_HOME/retiarii-ir``, else ``~/.cache/retiarii-ir``.
Delete the file (``forget_decisions()``) to time again. A file there that is not such a
cache is renamed to ``decisions-v1.sqlite.unreadable-<pid>-<time>`` and a fresh cache
started; a cache that cannot be written or read (a locked or read-only one) is left alone:
the choice is timed and kept in this process only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import sqlite3
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FILE_NAME = "decisions-v1.sqlite"  # one row per choice: its key as JSON text, the choice as JSON


def cache_folder() -> Path:
    """Where timed choices are kept (see the module docstring)."""
    if os.environ.get("RETIARII_CACHE_DIR"):
        return Path(os.environ["RETIARII_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "retiarii-ir"


def cache_file() -> Path:
    return cache_folder() / FILE_NAME


@functools.lru_cache(maxsize=8)
def machine(device: str) -> dict:
    """What the timing of a kernel depends on besides its shapes: device model and torch version."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = _cpu_model() or platform.processor() or platform.machine()
    return {"device": device.split(":")[0], "name": name, "cpus": os.cpu_count(), "torch": torch.__version__}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


_MEMORY: dict[str, Any] = {}  # this process's choices (all of them, cached or not)
_WARNED: set[str] = set()


def decide(kind: str, key: dict, device: str, measure: Callable[[], tuple[Any, str]],
           choices: tuple = (True, False)) -> tuple[Any, str]:
    """The stored choice for (``kind``, ``key``, this machine, this thread count), or
    ``measure()``'s, stored. ``measure`` returns (one of ``choices``, what was measured); a
    stored value that is not one of ``choices`` is timed again. The answer's text says
    whether the choice was remembered or timed now."""
    text = json.dumps({"kind": kind, "key": key, "machine": machine(device), "threads": torch.get_num_threads()},
                      sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest in _MEMORY:
        return _MEMORY[digest][0], f"remembered ({_MEMORY[digest][1]})"
    stored = _read(digest, choices)
    if stored is not None:
        _MEMORY[digest] = stored
        return stored[0], f"remembered ({stored[1]})"
    choice, detail = measure()
    if choice not in choices:
        raise ValueError(f"a timed choice of {kind} must be one of {choices}, got {choice!r}")
    _MEMORY[digest] = (choice, detail[:200])
    _write(digest, text, choice, detail)
    return choice, f"timed now ({detail})"


def forget_decisions() -> None:
    """Drop every remembered choice, in this process and on disk: the next run times again."""
    _MEMORY.clear()
    try:
        cache_file().unlink()
    except FileNotFoundError:
        pass


def _connect() -> sqlite3.Connection:
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(folder / FILE_NAME, timeout=2)  # a cache another process holds is skipped, not waited on
    connection.execute("CREATE TABLE IF NOT EXISTS decisions (digest TEXT PRIMARY KEY, key TEXT NOT NULL, "
                       "choice TEXT NOT NULL, detail TEXT NOT NULL)")
    return connection


def _read(digest: str, choices: tuple) -> tuple[Any, str] | None:
    try:
        row = _use(lambda c: c.execute("SELECT choice, detail FROM decisions WHERE digest = ?", (digest,)).fetchone())
    except (OSError, sqlite3.Error) as error:
        _warn_once(f"cannot read the timed-choice cache {cache_file()}: {error}; timing again")
        return None
    if row is None or not isinstance(row[0], str) or not isinstance(row[1], str):
        return None  # absent, or not a row this module writes: time again
    try:
        value = json.loads(row[0])
    except (ValueError, RecursionError):  # not JSON, or nested past what the decoder takes
        return None
    if value not in choices or type(value) is not type(next(c for c in choices if c == value)):
        return None  # not one of the answers asked for (1 is not True): time again
    return value, row[1][:200]


def _write(digest: str, text: str, choice: Any, detail: str) -> None:
    def insert(connection: sqlite3.Connection) -> None:
        with connection:
            connection.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?)",
                               (digest, text, json.dumps(choice), detail[:200]))
    try:
        _use(insert)
    except (OSError, sqlite3.Error) as error:
        _warn_once(f"cannot write the timed-choice cache {cache_file()}: {error}; choices are kept in this "
                   f"process only (set RETIARII_CACHE_DIR to a writable folder)")


def _use(work: Callable[[sqlite3.Connection], Any]) -> Any:
    """``work`` on a connection to the cache; a file that is not a cache this version writes is
    set aside (renamed, not deleted) and a fresh cache started in its place."""
    for attempt in (1, 2):
        found = _identity(cache_file())
        try:
            connection = _connect()
            try:
                return work(connection)
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            if attempt == 2 or not _not_a_cache(error) or not _set_aside(found, error):
                raise


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _not_a_cache(error: sqlite3.DatabaseError) -> bool:
    text = str(error)
    return any(words in text for words in ("not a database", "malformed", "no such column", "has no column",
                                           "columns but"))


def _set_aside(found: tuple[int, int] | None, error: sqlite3.DatabaseError) -> bool:
    """Rename the unreadable file to a name of its own, unless another process did already and
    started a fresh cache in its place, which must stay. False when it cannot be moved."""
    path = cache_file()
    if found is None or _identity(path) != found:
        return True  # not the file that failed any more: try again on what is there now
    aside = path.with_name(f"{path.name}.unreadable-{os.getpid()}-{time.time_ns()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return True
    except OSError as e:
        _warn_once(f"the timed-choice cache {path} is not a cache this version writes ({error}) and cannot be moved "
                   f"aside ({e.strerror}); delete it, or set RETIARII_CACHE_DIR to another folder, to start afresh")
        return False
    if _identity(aside) != found:  # another process's fresh cache arrived in between: put it back
        with contextlib.suppress(OSError):
            os.link(aside, path)  # refused when a newer cache is there already; then this one stays aside
            os.unlink(aside)
        return True
    _warn_once(f"the timed-choice cache {path} was not a cache this version writes ({error}); it was moved "
               f"to {aside} and a fresh cache started")
    return True


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
