"""One driver per experiment. The driver that runs an experiment holds a row in the store and
refreshes its heartbeat every few seconds; a second ``run`` or ``resume`` of the same experiment
is refused while that heartbeat is fresh. A driver killed with ``kill -9`` stops beating: its row
is taken over at once when it ran on this machine (its process is gone), and from another machine
once the heartbeat is ``EXPIRY`` seconds old. A journal-file store uses an
operating-system lock on a file beside it instead, which dies with its process."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from retiarii_ir.errors import first_line

from retiarii_ir.runtime.errors import ExperimentError
from retiarii_ir.runtime.experiments.store_schema import printable

INTERVAL = 2.0  # seconds between heartbeats
EXPIRY = 15.0  # a heartbeat this old belongs to a driver that is gone
TABLE = "retiarii_driver_lock"


class ExperimentBusyError(ExperimentError):
    """Another live driver runs this experiment."""


class DriverLock:
    """``with DriverLock(store, name):`` runs the body as the experiment's only driver."""

    def __init__(self, store, experiment: str) -> None:
        self.store, self.experiment = store, experiment
        self.owner = uuid.uuid4().hex
        self.lost = False  # another driver took the experiment over (this one stalled past EXPIRY)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file = None

    def __enter__(self) -> "DriverLock":
        if self.store.url.startswith("journal://"):
            self._lock_file(self.store.url[len("journal://"):])
        else:
            self._acquire_row()
            self._thread = threading.Thread(target=self._beat, daemon=True, name="experiment-heartbeat")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=INTERVAL * 2)
            try:
                with self._engine().begin() as conn:
                    conn.execute(self._table().delete().where(self._mine()))
            except Exception:  # noqa: BLE001 - an unreachable store: the row expires on its own
                pass
        if self._file is not None:
            self._file.close()

    # ------------------------------------------------------------------ database stores
    def _engine(self):
        return self.store.storage.engine

    def _table(self):
        import sqlalchemy as sa

        if not hasattr(DriverLock, "_TABLE"):
            DriverLock._TABLE = sa.Table(
                TABLE, sa.MetaData(), sa.Column("experiment", sa.String(512), primary_key=True),
                sa.Column("owner", sa.String(64), nullable=False), sa.Column("host", sa.String(255)),
                sa.Column("pid", sa.Integer), sa.Column("heartbeat", sa.Float, nullable=False))
        return DriverLock._TABLE

    def _mine(self):
        table = self._table()
        return (table.c.experiment == self.experiment) & (table.c.owner == self.owner)

    def _acquire_row(self) -> None:
        import sqlalchemy as sa

        table = self._table()
        row = {"owner": self.owner, "host": socket.gethostname()[:255], "pid": os.getpid(), "heartbeat": time.time()}
        try:
            try:
                table.create(self._engine(), checkfirst=True)
            except sa.exc.SQLAlchemyError:
                pass  # another driver created it at the same moment
            for _ in range(3):
                try:
                    with self._engine().begin() as conn:
                        conn.execute(table.insert().values(experiment=self.experiment, **row))
                    return
                except sa.exc.IntegrityError:
                    pass
                holder = read_holder(self.store, self.experiment)
                if holder is None:  # released meanwhile: try again
                    continue
                if holder.live():
                    raise ExperimentBusyError(
                        f"experiment {self.experiment!r} is already running ({holder.describe()}); wait for it to "
                        f"end or stop it (a driver killed on another machine is taken over {EXPIRY:.0f}s after "
                        f"its last heartbeat)")
                with self._engine().begin() as conn:  # gone: take it over, unless another driver just did
                    gone = table.c.experiment == self.experiment
                    if holder.owner is not None:
                        gone = gone & (table.c.owner == holder.owner)
                    if conn.execute(table.update().where(gone).values(**row)).rowcount == 1:
                        return
        except sa.exc.SQLAlchemyError as e:
            raise ExperimentError(f"cannot lock experiment {self.experiment!r} in {self.store.url}: its table "
                                  f"{TABLE} is not one retiarii made ({type(e).__name__}: {first_line(e)})") from None
        raise ExperimentBusyError(f"experiment {self.experiment!r}: other drivers keep taking it; try again")

    def _beat(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                with self._engine().begin() as conn:
                    updated = conn.execute(self._table().update().where(self._mine())
                                           .values(heartbeat=time.time())).rowcount
            except Exception:  # noqa: BLE001 - a busy or briefly unreachable store: try again next beat
                continue
            if updated == 0:
                self.lost = True
                return

    # ------------------------------------------------------------------ journal files
    def _lock_file(self, journal: str) -> None:
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: one driver is the user's to ensure
            return
        path = f"{journal}.{self.experiment}.lock"
        try:  # never through a link a stranger left: the file is ours or refused
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as e:
            raise ExperimentError(f"cannot lock {path}: {e.strerror}") from None
        self._file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            self._file = None
            raise ExperimentBusyError(f"experiment {self.experiment!r} is already running (another process holds "
                                      f"{journal}.{self.experiment}.lock); wait for it to end or stop it") from None


@dataclass(frozen=True)
class Holder:
    """A lock row as read back; any field a stranger made unreadable is None."""

    owner: str | None
    host: str | None
    pid: int | None
    heartbeat: float | None

    def live(self) -> bool:
        """A fresh heartbeat (not from the future), from a process that still runs if it ran here."""
        now = time.time()
        if self.heartbeat is None or not now - EXPIRY <= self.heartbeat <= now + EXPIRY:
            return False
        return not (self.host == socket.gethostname()[:255] and not _alive(self.pid))

    def describe(self) -> str:
        age = f", last heartbeat {time.time() - self.heartbeat:.0f}s ago" if self.heartbeat is not None else ""
        return f"process {self.pid} on {printable(self.host or '?', 255)}{age}"


def read_holder(store, experiment: str) -> Holder | None:
    """The row that locks ``experiment``, its fields checked; None when there is none."""
    import sqlalchemy as sa

    table = DriverLock(store, experiment)._table()
    with store.storage.engine.connect() as conn:
        result = conn.execute(sa.select(sa.cast(table.c.owner, sa.String), sa.cast(table.c.host, sa.String),
                                        sa.cast(table.c.pid, sa.String), sa.cast(table.c.heartbeat, sa.String))
                              .where(table.c.experiment == experiment))
        raw = result.first()
    if raw is None:
        return None
    owner, host, pid, heartbeat = raw
    return Holder(owner if isinstance(owner, str) else None, host if isinstance(host, str) else None,
                  _number(pid, int), _number(heartbeat, float))


def _number(text, kind):
    try:
        value = kind(float(text)) if kind is int else float(text)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if math.isfinite(value) and abs(value) < 2**53 else None


def driver_state(store, experiment: str) -> str | None:
    """Whether a driver runs ``experiment`` now, in words, for ``status``; None where the store
    cannot tell (a journal file) or no driver ever locked one of its experiments."""
    import sqlalchemy as sa

    if store.url.startswith("journal://"):
        return None
    try:
        holder = read_holder(store, experiment)
    except sa.exc.SQLAlchemyError:  # no lock table: no driver has run here since locks came
        return None
    if holder is None:
        return "no driver running"
    if not holder.live():
        return f"its driver ({holder.describe()}) is gone; trials it left running are re-queued by resume"
    return f"driven by {holder.describe()}"


def _alive(pid: int | None) -> bool:
    """Whether a process of this machine still runs (one we may not signal counts as running)."""
    if not isinstance(pid, int) or not 0 < pid < 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
