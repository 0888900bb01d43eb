"""Durable storage: SQLite in WAL mode, driven from one dedicated thread.

Every operation runs on a single worker thread that owns the connection, so
the event loop never blocks on disk and writes are serialised (operations
that queue up while the thread works are committed together, in order): per-channel
``seq`` numbers are assigned inside the same transaction that stores the
message, which keeps them strictly increasing and gap-free.  A coroutine
returns only after its transaction has committed, so anything the server
acknowledges (a ``delivery_confirmation`` or a ``201``) is in the WAL file
and survives ``kill -9`` of the process.

Channel messages, chat-thread messages (channel ``thread:{id}``) and REST
publishes share one table and one seq space per channel.  Publishing twice
with the same ``message_id`` on a channel is idempotent: the second call
returns the stored message and ``created=False`` (a client retrying after a
reconnect never creates a duplicate).
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from .protocol import now_iso

__all__ = ["ChannelInfo", "ClientErrorRecord", "Storage", "StoredMessage", "Thread"]

T = TypeVar("T")

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
CREATE TABLE IF NOT EXISTS client_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    message TEXT NOT NULL,
    context TEXT NOT NULL,
    received_at TEXT NOT NULL
);
"""


#: One statement stores a message: its seq is the channel's highest plus one, computed
#: inside the statement (the ``(channel, seq)`` primary key makes that an index
#: lookup), a repeated ``(channel, message_id)`` inserts nothing and returns no row,
#: and a trigger records a channel's first message.  Alone it is its own transaction.
#: A publish writes two pages: the messages' primary key and their message-id index.
_APPEND_SQL = (
    "INSERT INTO messages (channel, seq, message_id, sender, content, sent_at)"
    " SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5 FROM messages WHERE channel = ?1"
    " ON CONFLICT (channel, message_id) DO NOTHING RETURNING seq"
)


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


class _Job:
    __slots__ = ("args", "fn", "future", "loop", "transactional")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        transactional: bool,
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.loop = loop
        self.transactional = transactional


def _settle(results: list[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, value, error in results:
        if job.future.done():
            continue
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)


class Storage:
    """Async facade over one SQLite connection living on its own thread.

    Jobs queue up while the thread works; the thread then runs every queued
    job in one transaction (group commit) and settles their futures after
    the commit.  A failing job rolls the group back, and the group is re-run
    one job per transaction so only the failing job reports the error.
    """

    _MAX_BATCH = 256

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._queue: queue.SimpleQueue[_Job | None] | None = None
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._known_threads: set[str] = set()  # threads are never deleted: a found id stays found

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open (creating if needed) the database; idempotent."""
        if self._thread is not None:
            return
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._worker, name="nova-sqlite", daemon=True)
        self._thread.start()
        try:
            await self._run(self._open_sync, transactional=False)
        except BaseException:
            await self._stop_thread()
            raise

    def _open_sync(self) -> None:
        conn = sqlite3.connect(
            str(self.path), timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=True
        )
        try:
            conn.row_factory = sqlite3.Row
            if str(self.path) != ":memory:":
                # The server is the database's only user: one file lock, taken once,
                # instead of locking the WAL index on every commit.
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc):
                raise RuntimeError(
                    f"the database {self.path} is in use by another process (another Nova "
                    "server?): the server holds its database exclusively while it runs; stop "
                    "the other process or give this server its own database (--db / NOVA_DB)"
                ) from exc
            raise
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        """Checkpoint the WAL, close the connection and stop the thread; idempotent."""
        if self._thread is None or self._queue is None:
            return
        try:
            await self._run(self._close_sync, transactional=False)
        finally:
            await self._stop_thread()

    async def _stop_thread(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
        self._thread = None
        self._queue = None

    def _close_sync(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()
                self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any, transactional: bool = True) -> T:
        """Run ``fn(*args)`` on the storage thread.

        ``transactional`` jobs that queue up together share one transaction.
        Each job runs one SQL statement (or reads only), which SQLite makes atomic
        by itself, so a job alone in its batch runs without BEGIN/COMMIT.
        """
        if self._queue is None:
            raise RuntimeError("Storage is not open; call `await storage.open()` first")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, args, future, loop, transactional))
        return await future

    # ------------------------------------------------------------ the worker thread

    def _worker(self) -> None:
        assert self._queue is not None
        q = self._queue
        stopping = False
        while not stopping:
            job = q.get()
            if job is None:
                break
            batch = [job]
            while job.transactional and len(batch) < self._MAX_BATCH:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                if not nxt.transactional:
                    self._execute(batch)
                    batch = [nxt]
                    break
                batch.append(nxt)
            self._execute(batch)

    def _execute(self, batch: list[_Job]) -> None:
        results: list[tuple[_Job, Any, BaseException | None]]
        if len(batch) == 1:
            job = batch[0]
            try:
                results = [(job, job.fn(*job.args), None)]
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                results = [(job, None, exc)]
        else:
            try:
                results = self._in_transaction(batch)
            except Exception:  # noqa: BLE001 - re-run alone so only the culprit fails
                results = []
                for job in batch:
                    try:
                        results.extend(self._in_transaction([job]))
                    except BaseException as exc:  # noqa: BLE001
                        results.append((job, None, exc))
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
        for item in results:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # the loop is closed: nobody awaits these any more
                pass

    def _in_transaction(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            results: list[tuple[_Job, Any, BaseException | None]] = [
                (job, job.fn(*job.args), None) for job in batch
            ]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return results

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "storage used before open()"
        return self._conn

    # ------------------------------------------------------------ messages

    async def append_message(
        self, channel: str, *, sender: str, content: str, message_id: str | None = None
    ) -> tuple[StoredMessage, bool]:
        """Store a message; return it and whether it is new (False: same id seen before)."""
        return await self._run(self._append_sync, channel, sender, content, message_id)

    def _append_sync(
        self, channel: str, sender: str, content: str, message_id: str | None
    ) -> tuple[StoredMessage, bool]:
        db = self._db
        msg_id = message_id or uuid.uuid4().hex
        sent_at = now_iso()
        row = db.execute(_APPEND_SQL, (channel, msg_id, sender, content, sent_at)).fetchone()
        if row is None:  # this id is stored already: hand back the stored message
            stored = db.execute(
                "SELECT * FROM messages WHERE channel = ? AND message_id = ?", (channel, msg_id)
            ).fetchone()
            return _message(stored), False
        return StoredMessage(channel, int(row[0]), msg_id, sender, content, sent_at), True

    async def messages_since(self, channel: str, since_seq: int, limit: int | None = None) -> list[StoredMessage]:
        """Messages with ``seq > since_seq`` in seq order."""
        return await self._run(self._since_sync, channel, since_seq, limit)

    def _since_sync(self, channel: str, since_seq: int, limit: int | None) -> list[StoredMessage]:
        sql = "SELECT * FROM messages WHERE channel = ? AND seq > ? ORDER BY seq"
        args: tuple[Any, ...] = (channel, since_seq)
        if limit is not None:
            sql += " LIMIT ?"
            args += (limit,)
        return [_message(r) for r in self._db.execute(sql, args).fetchall()]

    async def recent_messages(self, channel: str, limit: int) -> list[StoredMessage]:
        """The last ``limit`` messages of a channel, oldest first."""
        return await self._run(self._recent_sync, channel, limit)

    def _recent_sync(self, channel: str, limit: int) -> list[StoredMessage]:
        rows = self._db.execute(
            "SELECT * FROM messages WHERE channel = ? ORDER BY seq DESC LIMIT ?", (channel, limit)
        ).fetchall()
        return [_message(r) for r in reversed(rows)]

    async def last_seq(self, channel: str) -> int:
        """The channel's highest seq, 0 when it has none."""
        return await self._run(self._last_seq_sync, channel)

    def _last_seq_sync(self, channel: str) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM messages WHERE channel = ?", (channel,)).fetchone()
        return int(row[0] or 0)

    async def channels(self) -> list[ChannelInfo]:
        """Every channel that has ever had a message, by name."""
        return await self._run(self._channels_sync)

    def _channels_sync(self) -> list[ChannelInfo]:
        rows = self._db.execute(
            "SELECT name, (SELECT MAX(seq) FROM messages WHERE channel = name) AS last_seq"
            " FROM channels ORDER BY name"
        ).fetchall()
        return [ChannelInfo(r["name"], int(r["last_seq"] or 0)) for r in rows]

    # ------------------------------------------------------------ threads

    async def create_thread(self, title: str, *, created_by: str) -> Thread:
        thread = await self._run(self._create_thread_sync, title, created_by)
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

    def _create_thread_sync(self, title: str, created_by: str) -> Thread:
        thread = Thread(uuid.uuid4().hex[:12], title, created_by, now_iso())
        self._db.execute(
            "INSERT INTO threads (id, title, created_by, created_at) VALUES (?, ?, ?, ?)",
            (thread.id, thread.title, thread.created_by, thread.created_at),
        )
        return thread

    async def get_thread(self, thread_id: str) -> Thread | None:
        return await self._run(self._get_thread_sync, thread_id)

    def _get_thread_sync(self, thread_id: str) -> Thread | None:
        row = self._db.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return Thread(row["id"], row["title"], row["created_by"], row["created_at"]) if row else None

    async def list_threads(self) -> list[Thread]:
        return await self._run(self._list_threads_sync)

    def _list_threads_sync(self) -> list[Thread]:
        # insertion order: ids are random and creation times collide within a millisecond
        rows = self._db.execute("SELECT * FROM threads ORDER BY rowid").fetchall()
        return [Thread(r["id"], r["title"], r["created_by"], r["created_at"]) for r in rows]

    # ------------------------------------------------------------ client errors

    async def add_client_error(
        self, client_id: str, message: str, context: dict[str, Any]
    ) -> ClientErrorRecord:
        return await self._run(self._add_error_sync, client_id, message, context)

    def _add_error_sync(self, client_id: str, message: str, context: dict[str, Any]) -> ClientErrorRecord:
        received = now_iso()
        cur = self._db.execute(
            "INSERT INTO client_errors (client_id, message, context, received_at) VALUES (?, ?, ?, ?)",
            (client_id, message, json.dumps(context), received),
        )
        return ClientErrorRecord(int(cur.lastrowid or 0), client_id, message, context, received)

    async def client_errors(self, client_id: str | None = None, limit: int = 100) -> list[ClientErrorRecord]:
        return await self._run(self._errors_sync, client_id, limit)

    def _errors_sync(self, client_id: str | None, limit: int) -> list[ClientErrorRecord]:
        if client_id is None:
            rows = self._db.execute(
                "SELECT * FROM client_errors ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._db.execute(
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
