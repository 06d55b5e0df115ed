"""Processes that fit the machine and never outlive the experiment that started them.

- ``die_with_parent()``: a worker is killed when its parent dies, even by ``kill -9`` (Linux's
  parent-death signal, and a watchdog thread elsewhere), so no worker finishes a job for a
  driver that is gone.
- ``fit_threads(cores)``: torch threads for work that owns ``cores`` cores, fewer when other
  processes already keep them busy. Oversubscribed intra-op threads wait on each other at every
  small operation; on a busy machine one thread is often several times faster than two."""

from __future__ import annotations

import os
import signal
import statistics
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Kill this process when ``parent`` (default: the current parent) dies."""
    parent = parent or os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watchdog").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)  # reparented: the driver is gone, and so is anyone waiting for this work


def owned_cores() -> int:
    """Cores this process may run on (its CPU affinity, where the platform tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def busy_cores(samples: int = 5, interval: float = 0.01) -> float:
    """Cores other processes keep busy now: runnable tasks from ``/proc/loadavg`` (this one
    excluded), the median of a few readings; elsewhere the one-minute load average."""
    readings = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        readings.append(max(0, running - 1))
        if i + 1 < samples:
            time.sleep(interval)
    if readings:
        return float(statistics.median(readings))
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def fit_threads(cores: int | None = None) -> int:
    """Torch threads for work that owns ``cores`` cores (default: all this process may use),
    leaving out the ones other processes keep busy; at least one."""
    cores = cores or owned_cores()
    free = owned_cores() - round(busy_cores())
    return max(1, min(cores, free))
