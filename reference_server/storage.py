"""Durable storage: SQLite in WAL mode, committed on the event loop, checkpointed on a thread.

Writes are serialised per connection, and per-channel ``seq`` numbers are assigned in
the transaction that stores the message (from the storage's record of each channel's
highest seq, read from the database on the channel's first write, and given back when
the transaction rolls back), which keeps them strictly increasing and gap-free.  A
coroutine returns only after its transaction has committed, so anything the
server acknowledges (a ``delivery_confirmation`` or a ``201``) is in the WAL file and
survives ``kill -9`` of the process.

Where the work happens, so the event loop never waits on ``fsync``:

- **Commits run on the event loop** when ``synchronous`` is ``NORMAL`` (the default) or
  ``OFF``.  In WAL mode such a commit appends the transaction's pages to the WAL file
  through the page cache and syncs nothing; the page cache is the kernel's, so it
  survives a killed process.  A power loss may lose the last commits (SQLite's
  documented trade-off for ``synchronous=NORMAL``); ``FULL`` and ``EXTRA`` survive it
  but sync on every commit, so with them commits run on a writer thread with its own
  connection instead.
- **Group commit.** The writes callbacks submit during one loop iteration (many
  publishes arriving together) are committed in one transaction at the start of the
  next; a write submitted when nothing else is ready to run in the iteration is a
  complete group by itself and commits at once.  While a writer thread commits, the
  next group gathers.  Each write's coroutine resumes only after its own
  transaction committed.
- **Checkpoints run on their own thread and connections** (:class:`_Checkpointer`).
  The loop's connection has ``wal_autocheckpoint`` off; the checkpointer runs
  ``PASSIVE`` checkpoints (which never block writers) every
  ``checkpoint_after_writes`` writes or every ``checkpoint_interval_s`` seconds with
  anything new, and a ``TRUNCATE`` checkpoint at :meth:`Storage.close`.  SQLite
  also syncs the WAL header when a writer starts the WAL file over after a complete
  checkpoint; the checkpointer keeps that write its own too (readers it holds stop
  writers from starting the WAL over, and it starts it over itself, holding
  writers' groups back meanwhile without blocking the loop).
- **Reads run on the event loop** on its connection: WAL readers never wait for the
  writer or the checkpointer.

Channel messages, chat-thread messages (channel ``thread:{id}``) and REST publishes
share one table and one seq space per channel.  Publishing twice with the same
``message_id`` on a channel is idempotent: the second call returns the stored message
and ``created=False`` (a client retrying after a reconnect never creates a duplicate).

One server per database: :meth:`Storage.open` takes an exclusive advisory lock
(``flock``) on ``{db}-lock`` next to the database (POSIX only), so a second Nova server
on the same file is refused with a message naming the fix.  Other processes may read the database with ``sqlite3``
while the server runs; they must not write to it (the loop's connection never waits
for a lock, so a foreign writer makes the server's writes fail instead).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sized
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from .protocol import now_iso

__all__ = [
    "PAGE_SIZE",
    "ChannelInfo",
    "ClientErrorRecord",
    "Storage",
    "StorageStats",
    "StoredMessage",
    "Thread",
]

T = TypeVar("T")

log = logging.getLogger("reference_server.storage")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    content TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    PRIMARY KEY (channel, seq),
    UNIQUE (channel, message_id)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS messages_new_channel AFTER INSERT ON messages BEGIN
    INSERT OR IGNORE INTO channels (name, created_at) VALUES (NEW.channel, NEW.sent_at);
END;
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS wal_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS client_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    message TEXT NOT NULL,
    context TEXT NOT NULL,
    received_at TEXT NOT NULL
);
"""


#: One statement stores a message under the seq :class:`_Seqs` gives it; a repeated
#: ``(channel, message_id)`` inserts nothing (no row changed), and a trigger records a
#: channel's first message.  Alone it is its own transaction.  A publish writes two
#: pages: the messages' primary key and their message-id index.
_INSERT_MESSAGE_SQL = (
    "INSERT INTO messages (channel, seq, message_id, sender, content, sent_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel, message_id) DO NOTHING"
)

#: The page size of a database this module creates.  A publish changes about three
#: pages, each appended whole to the WAL file and later copied back by a checkpoint, and
#: a message row is small: 1 KiB pages make a commit write a quarter of what SQLite's
#: 4 KiB default does.  A database keeps the page size it was created with.
PAGE_SIZE = 1024

#: In WAL mode a commit under these modes syncs nothing, so it may run on the event loop.
_LOOP_COMMIT_MODES = frozenset({"OFF", "NORMAL"})


@dataclass(frozen=True)
class StoredMessage:
    channel: str
    seq: int
    message_id: str
    sender: str
    content: str
    sent_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Thread:
    id: str
    title: str
    created_by: str
    created_at: str

    @property
    def channel(self) -> str:
        return f"thread:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "channel": self.channel}


@dataclass(frozen=True)
class ClientErrorRecord:
    id: int
    client_id: str
    message: str
    context: dict[str, Any]
    received_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChannelInfo:
    name: str
    last_seq: int


@dataclass(frozen=True)
class StorageStats:
    """Counters since the :class:`Storage` was made (kept after close), for tests and benchmarks.

    ``writes``: write operations run (each a message, thread or client error);
    ``commits``: transactions committed, fewer than ``writes`` when group commit
    batched them; ``checkpoints``: ``PASSIVE`` checkpoints the checkpointer thread ran;
    ``wal_generations``: times it started the WAL file over.
    """

    writes: int
    commits: int
    checkpoints: int
    wal_generations: int


_Result = tuple["_Job", Any, "BaseException | None"]


class _Job:
    __slots__ = ("args", "fn", "future", "on_commit")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        on_commit: Callable[[Any], None] | None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.on_commit = on_commit


class _Writer:
    """One event loop's writes: the group gathering, and whether a commit is in flight."""

    __slots__ = ("busy", "deferred", "idle", "pending", "scheduled")

    def __init__(self) -> None:
        self.pending: list[_Job] = []
        self.scheduled = False
        self.busy = False  # a writer thread is committing this loop's previous group
        self.deferred = False  # waiting for the checkpointer's gate
        self.idle: asyncio.Future[None] | None = None


class _Seqs:
    """Each channel's highest seq, so storing a message needs no ``MAX(seq)`` lookup.

    ``committed`` holds what committed transactions stored; ``pending`` the seqs the
    open transaction took, moved to ``committed`` when it commits and dropped when it
    rolls back (:meth:`settle`).  A channel not known yet is read from the database.
    Only this storage's connections write messages (one server per database), so the
    record stays right; should another writer take a seq anyway, the insert fails on
    the ``(channel, seq)`` key and :func:`_append_sync` reads the channel again.
    """

    __slots__ = ("committed", "pending")

    def __init__(self) -> None:
        self.committed: dict[str, int] = {}
        self.pending: dict[str, int] = {}

    def next(self, db: sqlite3.Connection, channel: str) -> int:
        """The seq the channel's next message gets (within the open transaction, if any)."""
        last = self.pending.get(channel)
        if last is None:
            last = self.committed.get(channel)
            if last is None:
                last = _last_seq_sync(db, channel)
        return last + 1

    def took(self, channel: str, seq: int) -> None:
        self.pending[channel] = seq

    def forget(self, channel: str) -> None:
        self.pending.pop(channel, None)
        self.committed.pop(channel, None)

    def settle(self, *, committed: bool) -> None:
        """The open transaction committed (its seqs stand) or rolled back (they are free again)."""
        if self.pending:
            if committed:
                self.committed.update(self.pending)
            self.pending.clear()


def _settle(results: list[_Result]) -> None:
    """Resolve each job's future in commit order, after running its ``on_commit``."""
    for job, value, error in results:
        if error is None and job.on_commit is not None:
            try:
                job.on_commit(value)
            except Exception:
                log.exception("a storage on_commit callback failed (the write is committed)")
        if job.future.done():  # cancelled while queued: the write still happened
            continue
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)


def _ready_queue(loop: asyncio.AbstractEventLoop) -> Sized | None:
    """The loop's queue of callbacks still to run in this iteration and the next, if it has one.

    ``asyncio``'s loops keep it in ``_ready``; a loop without one (uvloop) gets
    group commit one iteration later, every write, which is correct but slower.  An
    ``asyncio`` loop without it (a Python that changed the internal) is logged once.
    """
    ready = getattr(loop, "_ready", None)
    if isinstance(ready, collections.deque):
        return ready
    if isinstance(loop, asyncio.BaseEventLoop) and type(loop) not in _WARNED_LOOP_TYPES:
        _WARNED_LOOP_TYPES.add(type(loop))
        log.warning(
            "asyncio's %s on Python %s has no _ready deque (an internal reference_server/storage.py "
            "reads to commit a lone write at once): every write now waits one loop iteration; "
            "update _ready_queue in reference_server/storage.py for this Python",
            type(loop).__name__, sys.version.split()[0],
        )
    return None


_WARNED_LOOP_TYPES: set[type] = set()


def _lock_exclusively(path: Path) -> int | None:
    """Hold ``{path}-lock`` with ``flock`` for as long as the returned descriptor is open.

    A file of its own, never the database: closing any descriptor of the database
    file would drop the POSIX locks SQLite holds on it in this process.
    """
    if sys.platform == "win32":  # pragma: no cover - the reference server targets POSIX
        return None
    import fcntl

    lock_path = Path(f"{path}-lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(
            f"the database {path} is in use by another process (another Nova server?): "
            f"the server holds {lock_path} while it runs; stop the other process or give "
            "this server its own database (--db / NOVA_DB)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


#: The write that starts a WAL generation: the first frame of a WAL file is written
#: with its header, and SQLite syncs that header (so out-of-order writes after a
#: restart cannot corrupt the database).  Only the checkpointer and ``open`` run it.
_NEW_GENERATION_SQL = (
    "INSERT INTO wal_generation (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1"
)


class _Checkpointer:
    """Checkpoints the WAL and recycles it on its own thread and connections.

    Two kinds of ``fsync`` happen in WAL mode under ``synchronous=NORMAL``: a
    checkpoint syncs the WAL and the database file, and the first write of a new WAL
    generation (after a checkpoint copied everything back, the next writer starts the
    WAL file over) syncs the WAL header.  Both happen here, never in a writer's commit:

    - a *pin* (a connection holding a read transaction) keeps some WAL frames in use,
      so no writer can restart the WAL; two pins take turns so the pinned point moves
      forward after each checkpoint;
    - ``PASSIVE`` checkpoints copy frames up to the pinned point while writers append;
    - once a checkpoint has copied everything (a pause in writes), or the WAL has
      ``recycle_frames`` frames, the checkpointer holds the *gate*: writers keep
      their groups pending (the event loop never waits, see :meth:`try_enter`), the
      pins let go, the last frames are copied, and the checkpointer's own write starts
      the new generation, syncing its header; then it pins again and lets writers in.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        interval_s: float,
        recycle_frames: int,
        path: Path,
    ) -> None:
        self._connect = connect
        self._interval_s = interval_s
        self._recycle_frames = recycle_frames
        self._path = path
        self._conn = connect()
        self._pins = [connect(), connect()]
        self._pinned: sqlite3.Connection | None = None
        self._gate = threading.Lock()
        self._deferral = threading.Lock()
        self._deferred: list[
            tuple[Callable[[asyncio.AbstractEventLoop, _Writer], None], asyncio.AbstractEventLoop, _Writer]
        ] = []
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.writes = 0  # bumped by the writers; read here to skip idle rounds
        self.checkpoints = 0
        self.generations = 0

    # ------------------------------------------------------------ writers' side

    def try_enter(
        self,
        resume: Callable[[asyncio.AbstractEventLoop, _Writer], None],
        loop: asyncio.AbstractEventLoop,
        writer: _Writer,
        *,
        defer: bool = True,
    ) -> bool:
        """Take the gate without waiting.

        If the checkpointer holds it, return False, and with ``defer`` have
        ``resume(loop, writer)`` called on ``loop`` once it lets go.
        """
        if self._gate.acquire(blocking=False):
            return True
        if not defer:
            return False
        with self._deferral:
            if self._gate.acquire(blocking=False):  # released in between
                return True
            self._deferred.append((resume, loop, writer))
            return False

    def enter(self) -> None:
        """Take the gate, waiting (a writer thread's commits may wait; the loop's never do)."""
        self._gate.acquire()

    def leave(self) -> None:
        self._gate.release()

    def nudge(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Pin the WAL (``open`` has written its first frame) and start the thread."""
        self._pin(self._pins[0])
        self._thread = threading.Thread(target=self._run, name="nova-sqlite-checkpointer", daemon=True)
        self._thread.start()

    def stop(self, *, final_checkpoint: bool) -> None:
        """Stop the thread, let go of the pins, ``TRUNCATE`` the WAL if asked, close the connections."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        try:
            self._unpin()
            if final_checkpoint:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            for conn in (*self._pins, self._conn):
                conn.close()

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        settled_at = -1  # writes counted when the WAL was last recycled: nothing new since
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stop:
                return
            if self.writes == settled_at:
                continue
            try:
                settled = self._round()
            except sqlite3.Error as exc:
                log.warning(
                    "WAL checkpoint of %s failed, retried within %.1f s: %s", self._path, self._interval_s, exc
                )
                continue
            if settled is not None:
                settled_at = settled

    def _round(self) -> int | None:
        """One checkpoint; returns the write count if the WAL was recycled, else None."""
        _, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        if frames and (copied == frames or frames >= self._recycle_frames):
            return self._recycle()
        spare = self._pins[1] if self._pinned is self._pins[0] else self._pins[0]
        old = self._pinned
        self._pin(spare)  # the new pin first: the WAL is never without one
        if old is not None:
            old.rollback()
        return None

    def _recycle(self) -> int | None:
        with self.hold():
            writes = self.writes
            self._unpin()
            _, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            recycled = frames > 0 and copied == frames
            if recycled:
                self._conn.execute(_NEW_GENERATION_SQL)
                self.generations += 1
            self._pin(self._pins[0])
        return writes if recycled else None

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the gate: writers' groups stay pending until it is let go, then resume."""
        self._gate.acquire()
        try:
            yield
        finally:
            with self._deferral:
                self._gate.release()
                deferred, self._deferred = self._deferred, []
            for resume, loop, writer in deferred:
                try:
                    loop.call_soon_threadsafe(resume, loop, writer)
                except RuntimeError:  # the loop is closed: nobody awaits its writes any more
                    pass

    def _pin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT n FROM wal_generation").fetchall()
        self._pinned = conn

    def _unpin(self) -> None:
        for conn in self._pins:
            if conn.in_transaction:
                conn.rollback()
        self._pinned = None


class Storage:
    """Async facade over SQLite: commits on the event loop, checkpoints on a thread.

    Every write is a job; the jobs one event loop submits during one iteration are
    committed together in the next (group commit), each job's coroutine resuming only
    after its transaction committed.  A failing job rolls its group back, and the
    group is re-run one job per transaction so only the failing job reports the
    error.  ``synchronous`` ``FULL``/``EXTRA`` commit on a writer thread instead
    (they ``fsync`` each commit).  Several event loops may share one storage.
    """

    _MAX_BATCH = 256

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 5.0,
        checkpoint_interval_s: float = 1.0,
        checkpoint_after_writes: int = 1000,
        recycle_wal_frames: int = 20_000,
    ) -> None:
        """Describe a database; nothing is opened until :meth:`open`.

        The checkpointer thread runs a ``PASSIVE`` checkpoint after
        ``checkpoint_after_writes`` writes (about two WAL pages each) or every
        ``checkpoint_interval_s`` seconds with anything new; it starts the WAL over
        after a checkpoint that copied everything, or, under writes that never
        pause, once the WAL has ``recycle_wal_frames`` frames.  ``busy_timeout_s``
        bounds the waits of the checkpointer's and the writer thread's connections for
        SQLite's locks; the event loop's connection never waits for one.
        """
        if checkpoint_interval_s <= 0 or checkpoint_after_writes < 1 or recycle_wal_frames < 1:
            raise ValueError(
                "checkpoint_interval_s must be > 0, checkpoint_after_writes and recycle_wal_frames "
                f">= 1; got {checkpoint_interval_s!r}, {checkpoint_after_writes!r} and "
                f"{recycle_wal_frames!r}"
            )
        self.path = Path(path)
        self._synchronous = synchronous.upper()
        self._busy_timeout_s = busy_timeout_s
        self._checkpoint_interval_s = checkpoint_interval_s
        self._checkpoint_after_writes = checkpoint_after_writes
        self._recycle_wal_frames = recycle_wal_frames
        self._memory = str(self.path) == ":memory:"
        self._open = False
        # The loop connection serves reads (and writes, committing on the loop) from
        # every thread whose event loop uses this storage: one at a time.
        self._lock = threading.Lock()
        self._seqs = _Seqs()
        self._conn: sqlite3.Connection | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._writer_pool: ThreadPoolExecutor | None = None
        self._checkpointer: _Checkpointer | None = None
        self._lock_fd: int | None = None
        self._writers: dict[asyncio.AbstractEventLoop, _Writer] = {}
        self._writes = 0
        self._commits = 0
        self._writes_at_nudge = 0
        self._checkpoint_counts = (0, 0)
        self._known_threads: set[str] = set()  # threads are never deleted: a found id stays found

    # ------------------------------------------------------------ lifecycle

    @property
    def commits_on_event_loop(self) -> bool:
        """Whether commits run on the caller's event loop (``synchronous`` OFF/NORMAL, or in memory)."""
        return self._memory or self._synchronous in _LOOP_COMMIT_MODES

    async def open(self) -> None:
        """Open (creating if needed) the database; idempotent.

        The opening work (recovering a WAL left by a killed server, creating the
        schema) runs on a worker thread.  Raises RuntimeError naming the fix when
        another process holds the database.
        """
        if self._open:
            return
        await asyncio.to_thread(self._open_sync)
        self._open = True

    def _connect(self, timeout_s: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        # Checkpoints are the checkpointer thread's alone: an automatic one would run
        # inside whichever commit crossed the threshold, fsync included.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _open_sync(self) -> None:
        try:
            if not self._memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_fd = _lock_exclusively(self.path)
            conn = self._conn = self._connect(self._busy_timeout_s)
            self._seqs = _Seqs()  # the file may have changed while it was closed
            if not self._memory:
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # no effect on an existing database
                conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            if self._memory:
                return
            # Here, off the loop: the first frame of a WAL file syncs its header.
            conn.execute(_NEW_GENERATION_SQL)
            conn.execute("PRAGMA busy_timeout=0")
            if not self.commits_on_event_loop:
                self._writer_conn = self._connect(self._busy_timeout_s)
                self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="nova-sqlite-writer")
            self._checkpointer = _Checkpointer(
                lambda: self._connect(self._busy_timeout_s),
                interval_s=self._checkpoint_interval_s,
                recycle_frames=self._recycle_wal_frames,
                path=self.path,
            )
            self._checkpointer.start()
        except BaseException:
            self._teardown_sync(final_checkpoint=False)
            raise

    async def close(self) -> None:
        """Commit what this loop has pending, checkpoint the WAL into the database, close; idempotent.

        The final ``TRUNCATE`` checkpoint and the closing run on a worker thread.
        """
        if not self._open:
            return
        self._open = False  # from now on new operations fail; pending ones still commit
        loop = asyncio.get_running_loop()
        writer = self._writers.get(loop)
        if writer is not None:
            self._flush(loop, writer)
            if writer.busy or writer.pending:
                writer.idle = loop.create_future()
                await writer.idle
        await asyncio.to_thread(self._teardown_sync, final_checkpoint=True)

    def _teardown_sync(self, *, final_checkpoint: bool) -> None:
        failure: BaseException | None = None
        if self._writer_pool is not None:
            self._writer_pool.shutdown(wait=True)
            self._writer_pool = None
        if self._checkpointer is not None:
            self._checkpoint_counts = (self._checkpointer.checkpoints, self._checkpointer.generations)
            try:
                self._checkpointer.stop(final_checkpoint=final_checkpoint)
            except BaseException as exc:  # noqa: BLE001 - raised once everything is closed
                failure = exc
            self._checkpointer = None
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._writers.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # after the connections: the lock outlives every use
            self._lock_fd = None
        if failure is not None:
            raise failure

    # ------------------------------------------------------------ writes

    def _not_open(self) -> RuntimeError:
        return RuntimeError("Storage is not open; call `await storage.open()` first")

    async def _write(
        self, fn: Callable[..., T], *args: Any, on_commit: Callable[[T], None] | None = None
    ) -> T:
        """Run ``fn(connection, *args)`` (one statement, or reads) in this iteration's group commit."""
        if not self._open:
            raise self._not_open()
        loop = asyncio.get_running_loop()
        writer = self._writers.get(loop)
        if writer is None:
            writer = self._writers.setdefault(loop, _Writer())
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, args, future, on_commit)
        if not (writer.scheduled or writer.busy or writer.deferred) and self._writer_pool is None:
            ready = _ready_queue(loop)
            if ready is not None and not ready and self._commit_now(loop, writer, [job], defer=False):
                # Nothing else runs in this iteration, so no other write could join the
                # group: it is complete, and commits without a trip through the loop.
                return future.result()
        writer.pending.append(job)
        if not (writer.scheduled or writer.busy or writer.deferred):
            # At the start of the next iteration: every write this iteration submits joins.
            writer.scheduled = True
            loop.call_soon(self._flush, loop, writer)
        # The flush was queued before this task's own next step, so after one yield
        # the group has usually committed: the result is read without a second
        # wake-up through the future.
        await asyncio.sleep(0)
        if future.done():
            return future.result()
        return await future

    def _commit_now(
        self, loop: asyncio.AbstractEventLoop, writer: _Writer, jobs: list[_Job], *, defer: bool
    ) -> bool:
        """Commit ``jobs`` on this thread unless the checkpointer holds the gate.

        Then return False; with ``defer``, the checkpointer resumes ``writer`` once it lets go.
        """
        checkpointer = self._checkpointer
        if checkpointer is not None and not checkpointer.try_enter(self._resume, loop, writer, defer=defer):
            return False
        results: list[_Result]
        try:
            with self._lock:
                results = (
                    self._commit(self._conn, jobs)
                    if self._conn is not None
                    else [(job, None, self._not_open()) for job in jobs]
                )
        finally:
            if checkpointer is not None:
                checkpointer.leave()
        _settle(results)
        return True

    def _flush(self, loop: asyncio.AbstractEventLoop, writer: _Writer) -> None:
        writer.scheduled = False
        if writer.busy or writer.deferred or not writer.pending:
            return
        pool, conn = self._writer_pool, self._writer_conn
        if pool is not None and conn is not None:
            jobs, writer.pending = writer.pending, []
            writer.busy = True
            done = pool.submit(self._commit_waiting, conn, jobs)

            def landed(_: ThreadFuture[list[_Result]]) -> None:
                try:
                    loop.call_soon_threadsafe(self._landed, loop, writer, jobs, done)
                except RuntimeError:  # the loop is closed: nobody awaits these any more
                    pass

            done.add_done_callback(landed)
            return
        jobs, writer.pending = writer.pending, []
        if not self._commit_now(loop, writer, jobs, defer=True):
            writer.pending = jobs + writer.pending
            writer.deferred = True  # the checkpointer is starting a WAL generation: wait for it, not block
            return
        self._went_idle(writer)

    def _resume(self, loop: asyncio.AbstractEventLoop, writer: _Writer) -> None:
        writer.deferred = False
        self._flush(loop, writer)

    def _landed(
        self,
        loop: asyncio.AbstractEventLoop,
        writer: _Writer,
        jobs: list[_Job],
        done: ThreadFuture[list[_Result]],
    ) -> None:
        writer.busy = False
        error = done.exception()
        _settle(done.result() if error is None else [(job, None, error) for job in jobs])
        if writer.pending:
            self._flush(loop, writer)
        else:
            self._went_idle(writer)

    @staticmethod
    def _went_idle(writer: _Writer) -> None:
        if writer.idle is not None and not writer.pending and not writer.busy:
            if not writer.idle.done():
                writer.idle.set_result(None)
            writer.idle = None

    def _commit_waiting(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[_Result]:
        """The writer thread's commit: it may wait for the checkpointer's gate."""
        checkpointer = self._checkpointer
        if checkpointer is None:
            return self._commit(conn, jobs)
        checkpointer.enter()
        try:
            return self._commit(conn, jobs)
        finally:
            checkpointer.leave()

    def _commit(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[_Result]:
        results: list[_Result] = []
        for start in range(0, len(jobs), self._MAX_BATCH):
            results.extend(self._commit_group(conn, jobs[start : start + self._MAX_BATCH]))
        self._writes += len(jobs)
        checkpointer = self._checkpointer
        if checkpointer is not None:
            checkpointer.writes = self._writes
            if self._writes - self._writes_at_nudge >= self._checkpoint_after_writes:
                self._writes_at_nudge = self._writes
                checkpointer.nudge()
        return results

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Job]) -> list[_Result]:
        seqs = self._seqs
        if len(group) == 1:  # one statement is its own transaction
            job = group[0]
            try:
                value = job.fn(conn, *job.args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                seqs.settle(committed=False)
                return [(job, None, exc)]
            seqs.settle(committed=True)
            self._commits += 1
            return [(job, value, None)]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results: list[_Result] = [(job, job.fn(conn, *job.args), None) for job in group]
                conn.execute("COMMIT")
            except BaseException:
                seqs.settle(committed=False)
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception:  # noqa: BLE001 - re-run alone so only the culprit fails
            return [result for job in group for result in self._commit_group(conn, [job])]
        seqs.settle(committed=True)
        self._commits += 1
        return results

    # ------------------------------------------------------------ reads

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the read ``fn(connection, *args)`` now, on the caller's thread."""
        with self._lock:
            if not self._open or self._conn is None:
                raise self._not_open()
            return fn(self._conn, *args)

    # ------------------------------------------------------------ introspection

    def stats(self) -> StorageStats:
        """The counters (see :class:`StorageStats`)."""
        checkpointer = self._checkpointer
        if checkpointer is not None:
            self._checkpoint_counts = (checkpointer.checkpoints, checkpointer.generations)
        return StorageStats(self._writes, self._commits, *self._checkpoint_counts)

    async def connection_settings(self) -> dict[str, Any]:
        """The loop connection's ``journal_mode``, ``synchronous`` (0-3), ``wal_autocheckpoint``, ``busy_timeout``."""

        def read(db: sqlite3.Connection) -> dict[str, Any]:
            return {
                name: db.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "wal_autocheckpoint", "busy_timeout")
            }

        return await self._read(read)

    # ------------------------------------------------------------ messages

    async def append_message(
        self,
        channel: str,
        *,
        sender: str,
        content: str,
        message_id: str | None = None,
        on_commit: Callable[[tuple[StoredMessage, bool]], None] | None = None,
    ) -> tuple[StoredMessage, bool]:
        """Store a message; return it and whether it is new (False: same id seen before).

        ``on_commit``, if given, is called with the same pair on the event loop
        right after the commit, before this coroutine resumes and in commit order
        across appends; it runs even when the awaiting coroutine was cancelled.
        """
        return await self._write(
            _append_sync, self._seqs, channel, sender, content, message_id, on_commit=on_commit
        )

    async def messages_since(self, channel: str, since_seq: int, limit: int | None = None) -> list[StoredMessage]:
        """Messages with ``seq > since_seq`` in seq order."""
        return await self._read(_since_sync, channel, since_seq, limit)

    async def recent_messages(self, channel: str, limit: int) -> list[StoredMessage]:
        """The last ``limit`` messages of a channel, oldest first."""
        return await self._read(_recent_sync, channel, limit)

    async def last_seq(self, channel: str) -> int:
        """The channel's highest seq, 0 when it has none."""
        return await self._read(_last_seq_sync, channel)

    async def channels(self) -> list[ChannelInfo]:
        """Every channel that has ever had a message, by name."""
        return await self._read(_channels_sync)

    # ------------------------------------------------------------ threads

    async def create_thread(self, title: str, *, created_by: str) -> Thread:
        thread = await self._write(_create_thread_sync, title, created_by)
        self._known_threads.add(thread.id)
        return thread

    async def thread_exists(self, thread_id: str) -> bool:
        """Whether a chat thread with this id exists (a storage read only the first time)."""
        if thread_id in self._known_threads:
            return True
        if await self.get_thread(thread_id) is None:
            return False
        self._known_threads.add(thread_id)
        return True

    async def get_thread(self, thread_id: str) -> Thread | None:
        return await self._read(_get_thread_sync, thread_id)

    async def list_threads(self) -> list[Thread]:
        return await self._read(_list_threads_sync)

    # ------------------------------------------------------------ client errors

    async def add_client_error(
        self, client_id: str, message: str, context: dict[str, Any]
    ) -> ClientErrorRecord:
        return await self._write(_add_error_sync, client_id, message, context)

    async def client_errors(self, client_id: str | None = None, limit: int = 100) -> list[ClientErrorRecord]:
        return await self._read(_errors_sync, client_id, limit)


# ---------------------------------------------------------------- statements


def _append_sync(
    db: sqlite3.Connection,
    seqs: _Seqs,
    channel: str,
    sender: str,
    content: str,
    message_id: str | None,
) -> tuple[StoredMessage, bool]:
    msg_id = message_id or uuid.uuid4().hex
    sent_at = now_iso()
    seq = seqs.next(db, channel)
    try:
        inserted = db.execute(_INSERT_MESSAGE_SQL, (channel, seq, msg_id, sender, content, sent_at)).rowcount
    except sqlite3.IntegrityError as exc:
        if "messages.seq" not in str(exc):
            raise
        # The seq is taken: something else wrote to this channel.  Read its highest again.
        seqs.forget(channel)
        seq = seqs.next(db, channel)
        inserted = db.execute(_INSERT_MESSAGE_SQL, (channel, seq, msg_id, sender, content, sent_at)).rowcount
    if not inserted:  # this id is stored already: hand back the stored message
        stored = db.execute(
            "SELECT * FROM messages WHERE channel = ? AND message_id = ?", (channel, msg_id)
        ).fetchone()
        return _message(stored), False
    seqs.took(channel, seq)
    return StoredMessage(channel, seq, msg_id, sender, content, sent_at), True


def _since_sync(db: sqlite3.Connection, channel: str, since_seq: int, limit: int | None) -> list[StoredMessage]:
    sql = "SELECT * FROM messages WHERE channel = ? AND seq > ? ORDER BY seq"
    args: tuple[Any, ...] = (channel, since_seq)
    if limit is not None:
        sql += " LIMIT ?"
        args += (limit,)
    return [_message(r) for r in db.execute(sql, args).fetchall()]


def _recent_sync(db: sqlite3.Connection, channel: str, limit: int) -> list[StoredMessage]:
    rows = db.execute(
        "SELECT * FROM messages WHERE channel = ? ORDER BY seq DESC LIMIT ?", (channel, limit)
    ).fetchall()
    return [_message(r) for r in reversed(rows)]


def _last_seq_sync(db: sqlite3.Connection, channel: str) -> int:
    row = db.execute("SELECT MAX(seq) FROM messages WHERE channel = ?", (channel,)).fetchone()
    return int(row[0] or 0)


def _channels_sync(db: sqlite3.Connection) -> list[ChannelInfo]:
    rows = db.execute(
        "SELECT name, (SELECT MAX(seq) FROM messages WHERE channel = name) AS last_seq"
        " FROM channels ORDER BY name"
    ).fetchall()
    return [ChannelInfo(r["name"], int(r["last_seq"] or 0)) for r in rows]


def _create_thread_sync(db: sqlite3.Connection, title: str, created_by: str) -> Thread:
    thread = Thread(uuid.uuid4().hex[:12], title, created_by, now_iso())
    db.execute(
        "INSERT INTO threads (id, title, created_by, created_at) VALUES (?, ?, ?, ?)",
        (thread.id, thread.title, thread.created_by, thread.created_at),
    )
    return thread


def _get_thread_sync(db: sqlite3.Connection, thread_id: str) -> Thread | None:
    row = db.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
    return Thread(row["id"], row["title"], row["created_by"], row["created_at"]) if row else None


def _list_threads_sync(db: sqlite3.Connection) -> list[Thread]:
    # insertion order: ids are random and creation times collide within a millisecond
    rows = db.execute("SELECT * FROM threads ORDER BY rowid").fetchall()
    return [Thread(r["id"], r["title"], r["created_by"], r["created_at"]) for r in rows]


def _add_error_sync(
    db: sqlite3.Connection, client_id: str, message: str, context: dict[str, Any]
) -> ClientErrorRecord:
    received = now_iso()
    cur = db.execute(
        "INSERT INTO client_errors (client_id, message, context, received_at) VALUES (?, ?, ?, ?)",
        (client_id, message, json.dumps(context), received),
    )
    return ClientErrorRecord(int(cur.lastrowid or 0), client_id, message, context, received)


def _errors_sync(db: sqlite3.Connection, client_id: str | None, limit: int) -> list[ClientErrorRecord]:
    if client_id is None:
        rows = db.execute("SELECT * FROM client_errors ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    else:
        rows = db.execute(
            "SELECT * FROM client_errors WHERE client_id = ? ORDER BY id DESC LIMIT ?",
            (client_id, limit),
        ).fetchall()
    return [
        ClientErrorRecord(r["id"], r["client_id"], r["message"], json.loads(r["context"]), r["received_at"])
        for r in reversed(rows)
    ]


def _message(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        row["channel"], int(row["seq"]), row["message_id"], row["sender"], row["content"], row["sent_at"]
    )
