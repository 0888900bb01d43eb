"""The endpoint's own plumbing: the lean outbound queue and the middleware that serves /debug/{client_id}."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from reference_server.ws import EndpointMiddleware, _CloseItem, _endpoint_client_id, _Out, _OutQueue
from tests.conftest import LiveServer, start_server

TIMEOUT = 10.0


def _out(n: int) -> _Out:
    return _Out({"n": n}, "t")


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Let other tasks run until ``condition`` holds, for at most 100 loop iterations."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)  # one loop iteration, not a timed wait
    raise AssertionError(f"not reached within 100 loop iterations: {what}")


# ----------------------------------------------------------------- _OutQueue


@pytest.mark.asyncio
async def test_the_queue_is_fifo_and_refuses_past_its_size() -> None:
    q = _OutQueue(2)
    assert q.empty() and q.qsize() == 0
    q.put_nowait(_out(1))
    q.put_nowait(_CloseItem(1000, "bye"))
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(_out(3))
    assert q.full() and q.qsize() == 2
    assert await q.get() == _out(1)
    assert q.get_nowait() == _CloseItem(1000, "bye")
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


@pytest.mark.asyncio
async def test_get_waits_for_the_next_frame() -> None:
    q = _OutQueue(4)
    getter = asyncio.ensure_future(q.get())
    await _until(lambda: q._getter is not None, "the getter waits")
    assert not getter.done()
    q.put_nowait(_out(7))
    assert await asyncio.wait_for(getter, TIMEOUT) == _out(7)


@pytest.mark.asyncio
async def test_waiting_producers_get_space_in_arrival_order() -> None:
    q = _OutQueue(1)
    q.put_nowait(_out(0))
    first = asyncio.ensure_future(q.put(_out(1)))
    second = asyncio.ensure_future(q.put(_out(2)))
    await _until(lambda: q._putters is not None and len(q._putters) == 2, "both producers wait")
    assert not first.done() and not second.done()
    got = [await q.get()]
    while len(got) < 3:
        got.append(await asyncio.wait_for(q.get(), TIMEOUT))
    await asyncio.wait_for(asyncio.gather(first, second), TIMEOUT)
    assert got == [_out(0), _out(1), _out(2)]


@pytest.mark.asyncio
async def test_a_cancelled_producer_that_was_woken_passes_its_turn_on() -> None:
    q = _OutQueue(1)
    q.put_nowait(_out(0))
    woken = asyncio.ensure_future(q.put(_out(1)))
    waiting = asyncio.ensure_future(q.put(_out(2)))
    await _until(lambda: q._putters is not None and len(q._putters) == 2, "both producers wait")
    q.get_nowait()  # wakes `woken` ...
    woken.cancel()  # ... which is cancelled before it runs
    await asyncio.wait_for(waiting, TIMEOUT)
    assert q.get_nowait() == _out(2)
    assert woken.cancelled()


@pytest.mark.asyncio
async def test_a_cancelled_get_leaves_the_queue_usable() -> None:
    q = _OutQueue(2)
    getter = asyncio.ensure_future(q.get())
    await _until(lambda: q._getter is not None, "the getter waits")
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    q.put_nowait(_out(5))
    assert await asyncio.wait_for(q.get(), TIMEOUT) == _out(5)


# ----------------------------------------------------------------- EndpointMiddleware


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/debug/alice", "", "alice"),
        ("/api/debug/alice", "/api", "alice"),
        ("/debug/", "", None),
        ("/debug/a/b", "", None),
        ("/debugger/x", "", None),
        ("/ws/alice", "", None),
    ],
)
def test_only_the_endpoint_path_is_served_by_the_middleware(path: str, root_path: str, expected: str | None) -> None:
    assert _endpoint_client_id({"type": "websocket", "path": path, "root_path": root_path}) == expected


@pytest.mark.asyncio
async def test_other_scopes_reach_the_app_untouched() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    middleware = EndpointMiddleware(app)

    async def nothing() -> dict[str, Any]:
        return {}

    async def drop(message: Any) -> None:
        return None

    for scope in ({"type": "http", "path": "/debug/alice"}, {"type": "websocket", "path": "/other/x"}):
        await middleware(dict(scope), nothing, drop)
    assert [s["path"] for s in seen] == ["/debug/alice", "/other/x"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "nova.db")
    try:
        yield live
    finally:
        live.stop()


def test_the_endpoint_still_speaks_nova_and_other_ws_paths_are_refused(server: LiveServer) -> None:
    with connect(server.ws_url("ep-client"), open_timeout=TIMEOUT) as ws:
        assert '"connection_established"' in str(ws.recv(timeout=TIMEOUT))
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.port}/debug/a/b", open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 403
