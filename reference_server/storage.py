"""Durable storage: SQLite in WAL mode, driven from one dedicated thread.

Every operation runs on a single worker thread that owns the connection, so
the event loop never blocks on disk and writes are serialised: per-channel
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
import sqlite3
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Storage", "StoredMessage", "Thread", "ClientErrorRecord", "ChannelInfo"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL DEFAULT 0,
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
);
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


class Storage:
    """Async facade over one SQLite connection living on its own thread."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread_ident: int | None = None

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open (creating if needed) the database; idempotent."""
        if self._executor is not None:
            return
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nova-sqlite")
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        self._thread_ident = threading.get_ident()
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=True)
        conn.row_factory = sqlite3.Row
        if str(self.path) != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        """Checkpoint the WAL, close the connection and stop the thread; idempotent."""
        if self._executor is None:
            return
        try:
            await self._run(self._close_sync)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close_sync(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()
                self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("Storage is not open; call `await storage.open()` first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

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
        mid = message_id or uuid.uuid4().hex
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT * FROM messages WHERE channel = ? AND message_id = ?", (channel, mid)
            ).fetchone()
            if row is not None:
                db.execute("COMMIT")
                return _message(row), False
            db.execute(
                "INSERT OR IGNORE INTO channels (name, last_seq, created_at) VALUES (?, 0, ?)",
                (channel, _now()),
            )
            db.execute("UPDATE channels SET last_seq = last_seq + 1 WHERE name = ?", (channel,))
            (seq,) = db.execute("SELECT last_seq FROM channels WHERE name = ?", (channel,)).fetchone()
            msg = StoredMessage(channel, int(seq), mid, sender, content, _now())
            db.execute(
                "INSERT INTO messages (channel, seq, message_id, sender, content, sent_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (msg.channel, msg.seq, msg.message_id, msg.sender, msg.content, msg.sent_at),
            )
            db.execute("COMMIT")
            return msg, True
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
        row = self._db.execute("SELECT last_seq FROM channels WHERE name = ?", (channel,)).fetchone()
        return int(row[0]) if row else 0

    async def channels(self) -> list[ChannelInfo]:
        """Every channel that has ever had a message, by name."""
        return await self._run(self._channels_sync)

    def _channels_sync(self) -> list[ChannelInfo]:
        rows = self._db.execute("SELECT name, last_seq FROM channels ORDER BY name").fetchall()
        return [ChannelInfo(r["name"], int(r["last_seq"])) for r in rows]

    # ------------------------------------------------------------ threads

    async def create_thread(self, title: str, *, created_by: str) -> Thread:
        return await self._run(self._create_thread_sync, title, created_by)

    def _create_thread_sync(self, title: str, created_by: str) -> Thread:
        thread = Thread(uuid.uuid4().hex[:12], title, created_by, _now())
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
        rows = self._db.execute("SELECT * FROM threads ORDER BY created_at, id").fetchall()
        return [Thread(r["id"], r["title"], r["created_by"], r["created_at"]) for r in rows]

    # ------------------------------------------------------------ client errors

    async def add_client_error(
        self, client_id: str, message: str, context: dict[str, Any]
    ) -> ClientErrorRecord:
        return await self._run(self._add_error_sync, client_id, message, context)

    def _add_error_sync(self, client_id: str, message: str, context: dict[str, Any]) -> ClientErrorRecord:
        received = _now()
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
