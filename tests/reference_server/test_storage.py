"""Durable storage (reference_server/storage.py), without a server.

Spec: per-channel seq strictly increasing and gap-free under concurrent
appends (from one or several event loops); idempotent message ids; since /
recent queries; threads; client errors; a failing write fails alone; close
checkpoints the WAL into the database file; data and seq survive a reopen.

Where the work happens: the loop's connection is WAL with ``synchronous=NORMAL``
and no automatic checkpoint; the writes of one loop iteration commit in one
transaction and each returns only once it is committed (another connection sees
it); the checkpointer thread copies commits into the database file while the
storage serves, and while it holds writers back to start a WAL generation the
loop keeps serving and the writes resume after; ``FULL`` commits on a writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from reference_server import storage as storage_module
from reference_server.storage import Storage, StoredMessage, _ready_queue
from tests._waits import wait_until


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


def _insert_behind_its_back(path: Path, seq: int, content: str) -> None:
    """Another connection stores a message on 'general' under ``seq``."""
    foreign = sqlite3.connect(path)
    with foreign:
        foreign.execute(
            "INSERT INTO messages VALUES ('general', ?, ?, 'x', ?, '2026-01-01T00:00:00.000Z')",
            (seq, f"foreign-{seq}", content),
        )
    foreign.close()


@pytest.mark.asyncio
async def test_a_seq_another_writer_took_is_skipped_not_an_error(tmp_path: Path) -> None:
    """The storage keeps each channel's highest seq; a row written behind its back is read, not clobbered."""
    path = tmp_path / "db.sqlite"
    async with opened(path) as storage:
        for i in range(3):
            await storage.append_message("general", sender="s", content=str(i))
        _insert_behind_its_back(path, 4, "behind its back")
        alone, created = await storage.append_message("general", sender="s", content="alone")
        assert (alone.seq, created) == (5, True)
        _insert_behind_its_back(path, 6, "again")
        grouped = await asyncio.gather(
            *(storage.append_message("general", sender="s", content=f"g{i}") for i in range(5))
        )
        assert [m.seq for m, _ in grouped] == [7, 8, 9, 10, 11]
        stored = await storage.messages_since("general", 0)
        _assert_gap_free(stored)
        assert [m.content for m in stored][3:6] == ["behind its back", "alone", "again"]


@pytest.mark.asyncio
async def test_a_new_database_has_small_pages_and_an_existing_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    """A publish appends whole pages to the WAL: new databases use PAGE_SIZE (1 KiB) pages."""
    fresh = tmp_path / "fresh.sqlite"
    async with opened(fresh) as storage:
        await storage.append_message("general", sender="s", content="x")
    with sqlite3.connect(fresh) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == storage_module.PAGE_SIZE == 1024
    existing = tmp_path / "existing.sqlite"
    with sqlite3.connect(existing) as db:
        db.execute("PRAGMA page_size=4096")
        db.execute("CREATE TABLE other (x)")
    async with opened(existing) as storage:
        stored, _ = await storage.append_message("general", sender="s", content="x")
        assert stored.seq == 1
    with sqlite3.connect(existing) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 4096


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


# ------------------------------------------------------------------ where the work happens


def _main_file_messages(path: Path, copy: Path) -> int:
    """How many messages the database file holds by itself, without its WAL (0 if unreadable yet)."""
    copy.write_bytes(path.read_bytes())  # a copy has no -wal next to it: only checkpointed pages
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    except sqlite3.DatabaseError:  # copied while a checkpoint wrote it, or before the schema landed
        return 0
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_the_loop_connection_commits_in_wal_normal_with_autocheckpoint_off(tmp_path: Path) -> None:
    """Commits that sync nothing may run on the event loop; checkpoints are never theirs."""
    async with opened(tmp_path / "db.sqlite") as storage:
        assert storage.commits_on_event_loop
        assert await storage.connection_settings() == {
            "journal_mode": "wal",
            "synchronous": 1,  # NORMAL
            "wal_autocheckpoint": 0,
            "busy_timeout": 0,  # the loop never waits for a lock
        }


@pytest.mark.asyncio
async def test_the_checkpointer_copies_commits_into_the_database_file_while_storage_is_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    storage = Storage(path, checkpoint_interval_s=0.02)
    await storage.open()
    try:
        for i in range(20):
            await storage.append_message("general", sender="s", content=str(i))
        await wait_until(
            lambda: _main_file_messages(path, tmp_path / "copy.sqlite") == 20,
            "the 20 committed messages are in the database file itself (a checkpoint ran)",
            timeout=10,
        )
        assert storage.stats().checkpoints >= 1
        # and the storage keeps serving while it checkpoints
        msg, _ = await storage.append_message("general", sender="s", content="after")
        assert msg.seq == 21
    finally:
        await storage.close()


@pytest.mark.asyncio
async def test_writes_of_one_loop_iteration_commit_in_one_transaction_and_each_returns_after_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    async with opened(path) as storage:
        reader = sqlite3.connect(path)  # another connection: sees only what was committed
        seen_on_return: list[bool] = []

        async def append(i: int) -> None:
            msg, _ = await storage.append_message("general", sender="s", content=str(i), message_id=f"m{i}")
            row = reader.execute(
                "SELECT seq FROM messages WHERE channel = 'general' AND message_id = ?", (f"m{i}",)
            ).fetchone()
            seen_on_return.append(row == (msg.seq,))

        try:
            before = storage.stats()
            await asyncio.gather(*(append(i) for i in range(100)))
            after = storage.stats()
            assert after.writes - before.writes == 100
            assert after.commits - before.commits == 1, "100 writes of one iteration: one group commit"
            assert seen_on_return == [True] * 100
            # a group is capped, so one huge burst is a few transactions, not one
            await asyncio.gather(*(append(i) for i in range(100, 400)))
            assert storage.stats().commits - after.commits == 2
            assert seen_on_return == [True] * 400
        finally:
            reader.close()
        _assert_gap_free(await storage.messages_since("general", 0))


@pytest.mark.asyncio
async def test_a_lone_write_commits_and_is_visible_to_another_connection_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with opened(path) as storage:
        reader = sqlite3.connect(path)
        try:
            for i in range(1, 6):
                before = storage.stats().commits
                msg, _ = await storage.append_message("general", sender="s", content=str(i))
                assert storage.stats().commits == before + 1
                assert reader.execute("SELECT MAX(seq) FROM messages").fetchone() == (msg.seq,) == (i,)
        finally:
            reader.close()


@pytest.mark.asyncio
async def test_while_the_checkpointer_holds_writers_the_loop_keeps_serving_and_writes_resume_after(
    tmp_path: Path,
) -> None:
    """The gate the checkpointer takes to start a new WAL generation defers writes, never blocks the loop."""
    async with opened(tmp_path / "db.sqlite") as storage:
        await storage.append_message("general", sender="s", content="first")
        checkpointer = storage._checkpointer
        assert checkpointer is not None
        with checkpointer.hold():
            lone = asyncio.create_task(storage.append_message("general", sender="s", content="lone"))
            group = [
                asyncio.create_task(storage.append_message("general", sender="s", content=f"g{i}"))
                for i in range(5)
            ]
            for _ in range(20):  # the loop turns: the writes wait, reads are answered
                await asyncio.sleep(0)
            assert not lone.done() and not any(task.done() for task in group)
            assert await storage.last_seq("general") == 1
        results = await asyncio.wait_for(asyncio.gather(lone, *group), 10)
        assert sorted(msg.seq for msg, _ in results) == list(range(2, 8))
        _assert_gap_free(await storage.messages_since("general", 0))


@pytest.mark.asyncio
async def test_every_write_completes_while_the_checkpointer_keeps_starting_new_wal_generations(
    tmp_path: Path,
) -> None:
    storage = Storage(
        tmp_path / "db.sqlite", checkpoint_interval_s=0.002, checkpoint_after_writes=5, recycle_wal_frames=30
    )
    await storage.open()
    try:

        async def writes() -> None:
            for i in range(300):
                await storage.append_message("lone", sender="s", content=str(i))
                await asyncio.gather(
                    *(storage.append_message("grouped", sender="s", content=f"{i}.{j}") for j in range(3))
                )

        await asyncio.wait_for(writes(), 60)
        assert storage.stats().wal_generations >= 2, storage.stats()
        _assert_gap_free(await storage.messages_since("lone", 0))
        _assert_gap_free(await storage.messages_since("grouped", 0))
    finally:
        await storage.close()
    async with opened(tmp_path / "db.sqlite") as reopened:
        assert (await reopened.last_seq("lone"), await reopened.last_seq("grouped")) == (300, 900)


@pytest.mark.asyncio
async def test_full_synchronous_commits_on_a_writer_thread_and_still_groups(tmp_path: Path) -> None:
    """FULL syncs every commit: then commits leave the loop for a writer thread of their own."""
    path = tmp_path / "db.sqlite"
    storage = Storage(path, synchronous="FULL")
    await storage.open()
    try:
        assert not storage.commits_on_event_loop
        assert (await storage.connection_settings())["synchronous"] == 2
        results = await asyncio.gather(
            *(storage.append_message("general", sender="s", content=str(i)) for i in range(200))
        )
        assert sorted(msg.seq for msg, _ in results) == list(range(1, 201))
        stats = storage.stats()
        assert stats.writes == 200 and stats.commits < 200, stats
    finally:
        await storage.close()
    async with opened(path) as reopened:
        _assert_gap_free(await reopened.messages_since("general", 0))


@pytest.mark.asyncio
async def test_the_event_loop_internal_a_lone_write_relies_on_is_present() -> None:
    """A lone write commits at once only when the loop has nothing else ready: asyncio's ``_ready``."""
    assert _ready_queue(asyncio.get_running_loop()) is not None


def test_an_asyncio_loop_without_its_ready_queue_is_logged_once_with_the_fix(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_module, "_WARNED_LOOP_TYPES", set())
    loop = asyncio.new_event_loop()
    saved = loop._ready  # type: ignore[attr-defined]
    try:
        loop._ready = None  # type: ignore[attr-defined]
        with caplog.at_level(logging.WARNING, logger="reference_server.storage"):
            assert _ready_queue(loop) is None
            assert _ready_queue(loop) is None
        warnings = [r.getMessage() for r in caplog.records if "no _ready deque" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "every write now waits one loop iteration" in warnings[0]
        assert "update _ready_queue in reference_server/storage.py" in warnings[0]
    finally:
        loop._ready = saved  # type: ignore[attr-defined]
        loop.close()
