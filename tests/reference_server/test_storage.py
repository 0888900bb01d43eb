"""Durable storage (reference_server/storage.py), without a server.

Spec: per-channel seq strictly increasing and gap-free under concurrent
appends (from one or several event loops); idempotent message ids; since /
recent queries; threads; client errors; a failing write fails alone; close
checkpoints the WAL into the database file; data and seq survive a reopen.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from reference_server.storage import Storage, StoredMessage


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[Storage]:
    """An open :class:`Storage` on ``path``, closed afterwards."""
    storage = Storage(path)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


def _assert_gap_free(messages: list[StoredMessage]) -> None:
    seqs = [m.seq for m in messages]
    assert seqs == list(range(1, len(messages) + 1)), f"seqs not 1..{len(messages)}: {seqs[:20]}..."


# ------------------------------------------------------------------ seq


@pytest.mark.asyncio
async def test_seq_is_gap_free_under_concurrent_appends(tmp_path: Path) -> None:
    channels = ("a", "b", "thread:x")
    async with opened(tmp_path / "db.sqlite") as storage:
        results = await asyncio.gather(
            *(
                storage.append_message(channels[i % 3], sender=f"c{i}", content=str(i))
                for i in range(300)
            )
        )
        assert all(created for _, created in results)
        for channel in channels:
            returned = sorted(m.seq for m, _ in results if m.channel == channel)
            assert returned == list(range(1, 101)), channel
            stored = await storage.messages_since(channel, 0)
            _assert_gap_free(stored)
            assert await storage.last_seq(channel) == 100


@pytest.mark.asyncio
async def test_seq_is_gap_free_with_appends_from_several_event_loops(tmp_path: Path) -> None:
    """The server's loop and other loops (tests, tools) may share one storage."""
    async with opened(tmp_path / "db.sqlite") as storage:
        errors: list[BaseException] = []

        def other_loop(tag: str) -> None:
            async def run() -> None:
                await asyncio.gather(
                    *(storage.append_message("shared", sender=tag, content=f"{tag}{i}") for i in range(100))
                )

            try:
                asyncio.run(run())
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=other_loop, args=(f"t{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        await asyncio.gather(*(storage.append_message("shared", sender="main", content=str(i)) for i in range(100)))
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
        assert not errors
        stored = await storage.messages_since("shared", 0)
        assert len(stored) == 400
        _assert_gap_free(stored)


@pytest.mark.asyncio
async def test_seq_continues_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with opened(path) as storage:
        for i in range(3):
            await storage.append_message("general", sender="s", content=str(i))
    async with opened(path) as storage:
        msg, created = await storage.append_message("general", sender="s", content="after")
        assert (msg.seq, created) == (4, True)
        _assert_gap_free(await storage.messages_since("general", 0))


@pytest.mark.asyncio
async def test_a_failing_write_fails_alone_and_leaves_no_gap(tmp_path: Path) -> None:
    """A lone surrogate cannot be stored; its neighbours in the same group commit still are."""
    async with opened(tmp_path / "db.sqlite") as storage:
        contents = [f"ok{i}" for i in range(20)]
        contents[7] = "bad \ud800"
        results = await asyncio.gather(
            *(storage.append_message("general", sender="s", content=c) for c in contents),
            return_exceptions=True,
        )
        assert isinstance(results[7], UnicodeEncodeError)
        good = [r for i, r in enumerate(results) if i != 7]
        assert all(isinstance(r, tuple) and r[1] for r in good)
        stored = await storage.messages_since("general", 0)
        assert len(stored) == 19
        _assert_gap_free(stored)
        assert [m.content for m in stored] == [c for i, c in enumerate(contents) if i != 7]


# ------------------------------------------------------------------ idempotency


@pytest.mark.asyncio
async def test_repeated_message_id_returns_the_stored_message(tmp_path: Path) -> None:
    async with opened(tmp_path / "db.sqlite") as storage:
        first, created = await storage.append_message("general", sender="a", content="one", message_id="m1")
        again, created_again = await storage.append_message("general", sender="b", content="two", message_id="m1")
        assert (created, created_again) == (True, False)
        assert again == first
        other, created_other = await storage.append_message("random", sender="a", content="x", message_id="m1")
        assert created_other and other.seq == 1
        assert await storage.last_seq("general") == 1


@pytest.mark.asyncio
async def test_concurrent_duplicates_create_exactly_one_message(tmp_path: Path) -> None:
    async with opened(tmp_path / "db.sqlite") as storage:
        results = await asyncio.gather(
            *(storage.append_message("general", sender="a", content=str(i), message_id="dup") for i in range(20))
        )
        assert sum(created for _, created in results) == 1
        assert {m for m, _ in results} == {results[0][0]}
        assert len(await storage.messages_since("general", 0)) == 1


@pytest.mark.asyncio
async def test_generated_message_ids_are_unique(tmp_path: Path) -> None:
    async with opened(tmp_path / "db.sqlite") as storage:
        results = await asyncio.gather(*(storage.append_message("g", sender="a", content="x") for _ in range(50)))
        assert len({m.message_id for m, _ in results}) == 50


# ------------------------------------------------------------------ queries


@pytest.mark.asyncio
async def test_since_and_recent_queries(tmp_path: Path) -> None:
    async with opened(tmp_path / "db.sqlite") as storage:
        for i in range(1, 11):
            await storage.append_message("general", sender="s", content=f"m{i}")
        await storage.append_message("other", sender="s", content="elsewhere")
        assert [m.seq for m in await storage.messages_since("general", 7)] == [8, 9, 10]
        assert [m.seq for m in await storage.messages_since("general", 2, limit=3)] == [3, 4, 5]
        assert await storage.messages_since("general", 10) == []
        assert await storage.messages_since("general", 99) == []
        assert [m.seq for m in await storage.recent_messages("general", 3)] == [8, 9, 10]
        assert [m.seq for m in await storage.recent_messages("general", 50)] == list(range(1, 11))
        assert await storage.recent_messages("never", 5) == []
        assert await storage.last_seq("never") == 0
        assert [(c.name, c.last_seq) for c in await storage.channels()] == [("general", 10), ("other", 1)]


@pytest.mark.asyncio
async def test_content_round_trips_exactly(tmp_path: Path) -> None:
    contents = ["", "héllo ✓ 日本語 🚀", "nul\x00inside", "x" * 100_000, "'; DROP TABLE messages; --"]
    async with opened(tmp_path / "db.sqlite") as storage:
        for content in contents:
            await storage.append_message("general", sender="s", content=content)
        assert [m.content for m in await storage.messages_since("general", 0)] == contents


@pytest.mark.asyncio
async def test_stored_message_fields(tmp_path: Path) -> None:
    async with opened(tmp_path / "db.sqlite") as storage:
        msg, _ = await storage.append_message("general", sender="client-1", content="hi", message_id="m")
        assert msg.to_dict() == {
            "channel": "general",
            "seq": 1,
            "message_id": "m",
            "sender": "client-1",
            "content": "hi",
            "sent_at": msg.sent_at,
        }
        assert msg.sent_at.endswith("Z")


# ------------------------------------------------------------------ threads


@pytest.mark.asyncio
async def test_threads_create_get_list(tmp_path: Path) -> None:
    async with opened(tmp_path / "db.sqlite") as storage:
        assert await storage.list_threads() == []
        first = await storage.create_thread("First", created_by="rest")
        second = await storage.create_thread("Second 🚀", created_by="client-1")
        assert first.id != second.id
        assert first.channel == f"thread:{first.id}"
        assert first.to_dict()["channel"] == first.channel
        assert await storage.get_thread(second.id) == second
        assert await storage.get_thread("missing") is None
        assert await storage.list_threads() == [first, second]


# ------------------------------------------------------------------ client errors


@pytest.mark.asyncio
async def test_client_errors_filtered_and_limited(tmp_path: Path) -> None:
    async with opened(tmp_path / "db.sqlite") as storage:
        assert await storage.client_errors() == []
        for i in range(5):
            await storage.add_client_error("a" if i % 2 == 0 else "b", f"e{i}", {"i": i, "nested": [1, {"x": None}]})
        everything = await storage.client_errors()
        assert [e.message for e in everything] == ["e0", "e1", "e2", "e3", "e4"]
        assert everything[0].context == {"i": 0, "nested": [1, {"x": None}]}
        assert [e.message for e in await storage.client_errors("a")] == ["e0", "e2", "e4"]
        assert [e.message for e in await storage.client_errors(limit=2)] == ["e3", "e4"]
        assert [e.message for e in await storage.client_errors("b", limit=1)] == ["e3"]
        assert len({e.id for e in everything}) == 5


# ------------------------------------------------------------------ lifecycle


@pytest.mark.asyncio
async def test_close_checkpoints_the_wal_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with opened(path) as storage:
        for i in range(50):
            await storage.append_message("general", sender="s", content=str(i))
        await storage.create_thread("t", created_by="rest")
        wal = Path(f"{path}-wal")
        assert wal.exists() and wal.stat().st_size > 0
    assert not wal.exists() or wal.stat().st_size == 0
    # everything is in the main file: a plain reader without the WAL sees it
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT COUNT(*), MAX(seq) FROM messages").fetchone() == (50, 50)
        assert conn.execute("SELECT COUNT(*) FROM threads").fetchone() == (1,)
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_open_and_close_are_idempotent_and_use_after_close_is_clear(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite")
    with pytest.raises(RuntimeError, match="not open; call `await storage.open\\(\\)` first"):
        await storage.last_seq("general")
    await storage.open()
    await storage.open()
    await storage.append_message("general", sender="s", content="x")
    await storage.close()
    await storage.close()
    with pytest.raises(RuntimeError, match="not open"):
        await storage.append_message("general", sender="s", content="x")


@pytest.mark.asyncio
async def test_database_directory_is_created(tmp_path: Path) -> None:
    async with opened(tmp_path / "deep" / "er" / "db.sqlite") as storage:
        await storage.append_message("general", sender="s", content="x")
    assert (tmp_path / "deep" / "er" / "db.sqlite").exists()


@pytest.mark.asyncio
async def test_in_memory_database_works(tmp_path: Path) -> None:
    del tmp_path
    async with opened(Path(":memory:")) as storage:
        msg, _ = await storage.append_message("general", sender="s", content="x")
        assert msg.seq == 1


#: The schema of databases written before messages became a WITHOUT ROWID table and
#: before channels stopped keeping a last_seq column.
_EARLIER_SCHEMA = """
CREATE TABLE channels (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE messages (
    channel TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL, sender TEXT NOT NULL,
    content TEXT NOT NULL, sent_at TEXT NOT NULL, PRIMARY KEY (channel, seq), UNIQUE (channel, message_id)
);
INSERT INTO channels VALUES ('general', 2, '2026-01-01T00:00:00.000Z');
INSERT INTO messages VALUES ('general', 1, 'm1', 'a', 'one', '2026-01-01T00:00:00.000Z');
INSERT INTO messages VALUES ('general', 2, 'm2', 'a', 'two', '2026-01-01T00:00:01.000Z');
"""


@pytest.mark.asyncio
async def test_a_database_from_the_earlier_schema_keeps_its_messages_and_numbering(tmp_path: Path) -> None:
    path = tmp_path / "earlier.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(_EARLIER_SCHEMA)
    conn.close()
    async with opened(path) as storage:
        assert await storage.last_seq("general") == 2
        stored, created = await storage.append_message("general", sender="b", content="three")
        assert (stored.seq, created) == (3, True)
        again, created = await storage.append_message("general", sender="a", content="one", message_id="m1")
        assert (again.seq, again.content, created) == (1, "one", False)
        await storage.append_message("fresh", sender="b", content="first")
        assert [(c.name, c.last_seq) for c in await storage.channels()] == [("fresh", 1), ("general", 3)]
        assert [m.content for m in await storage.messages_since("general", 0)] == ["one", "two", "three"]


@pytest.mark.asyncio
async def test_a_database_another_server_holds_is_a_clear_error_and_nothing_is_left_open(tmp_path: Path) -> None:
    path = tmp_path / "held.sqlite"
    async with opened(path) as first:
        await first.append_message("general", sender="a", content="kept")
        second = Storage(path, busy_timeout_s=0.1)
        with pytest.raises(RuntimeError, match=r"in use by another process .*\(--db / NOVA_DB\)"):
            await second.open()
        with pytest.raises(RuntimeError, match="not open"):
            await second.last_seq("general")
        assert await first.last_seq("general") == 1  # the holder is untouched
