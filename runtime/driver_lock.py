"""One driver per experiment. The driver that runs an experiment holds a row in the store and
refreshes its heartbeat every few seconds; a second ``run`` or ``resume`` of the same experiment
is refused while that heartbeat is fresh. A driver killed with ``kill -9`` stops beating: its row
is taken over at once when it ran on this machine (its process is gone), and from another machine
once the heartbeat is ``EXPIRY`` seconds old. A journal-file store uses an
operating-system lock on a file beside it instead, which dies with its process."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

from .experiment_errors import ExperimentError

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
        try:
            table.create(self._engine(), checkfirst=True)
        except sa.exc.SQLAlchemyError:
            pass  # another driver created it at the same moment
        row = {"owner": self.owner, "host": socket.gethostname()[:255], "pid": os.getpid(), "heartbeat": time.time()}
        try:
            with self._engine().begin() as conn:
                conn.execute(table.insert().values(experiment=self.experiment, **row))
            return
        except sa.exc.IntegrityError:
            pass
        with self._engine().begin() as conn:  # held: take it over only if its heartbeat stopped
            stale = (table.c.experiment == self.experiment) & (table.c.heartbeat < time.time() - EXPIRY)
            if conn.execute(table.update().where(stale).values(**row)).rowcount == 1:
                return
            holder = conn.execute(sa.select(table).where(table.c.experiment == self.experiment)).first()
        if holder is None:  # released between the two statements: try once more
            return self._acquire_row()
        if holder.host == socket.gethostname()[:255] and not _alive(holder.pid):  # killed here: no need to wait
            with self._engine().begin() as conn:
                dead = (table.c.experiment == self.experiment) & (table.c.owner == holder.owner)
                if conn.execute(table.update().where(dead).values(**row)).rowcount == 1:
                    return
            return self._acquire_row()
        age = time.time() - float(holder.heartbeat)
        raise ExperimentBusyError(f"experiment {self.experiment!r} is already running (process {holder.pid} on "
                                  f"{holder.host}, last heartbeat {age:.0f}s ago); wait for it to end or stop it "
                                  f"(a driver that was killed is taken over {EXPIRY:.0f}s after its last heartbeat)")

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
        self._file = open(f"{journal}.{self.experiment}.lock", "a+")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            self._file = None
            raise ExperimentBusyError(f"experiment {self.experiment!r} is already running (another process holds "
                                      f"{journal}.{self.experiment}.lock); wait for it to end or stop it") from None


def driver_state(store, experiment: str) -> str | None:
    """Whether a driver runs ``experiment`` now, in words, for ``status``; None where the store
    cannot tell (a journal file) or no driver ever ran it."""
    import sqlalchemy as sa

    if store.url.startswith("journal://"):
        return None
    table = DriverLock(store, experiment)._table()
    try:
        with store.storage.engine.connect() as conn:
            holder = conn.execute(sa.select(table).where(table.c.experiment == experiment)).first()
    except sa.exc.SQLAlchemyError:  # no driver has locked an experiment of this store yet
        return None
    if holder is None:
        return "no driver running"
    age = time.time() - float(holder.heartbeat)
    here = holder.host == socket.gethostname()[:255]
    if age > EXPIRY or (here and not _alive(holder.pid)):
        return (f"its driver (process {holder.pid} on {holder.host}) is gone; trials it left running are "
                f"re-queued by resume")
    return f"driven by process {holder.pid} on {holder.host} (heartbeat {age:.0f}s ago)"


def _alive(pid: int | None) -> bool:
    """Whether a process of this machine still runs (one we may not signal counts as running)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
