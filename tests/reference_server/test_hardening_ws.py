"""WebSocket hardening (issue 12, defects 3, 5, 6), against a real server.

- Connections that have not authenticated are capped per client address and in
  total: past the cap the server accepts and closes 1013 at once, and logs one
  line per burst, then a count per interval.  Every test's address is 127.0.0.1.
- A frame the rate limiter drops is answered with ``rate_limited`` naming its id.
- Inputs that used to escape the parser (deep nesting, huge integers, a seq past
  SQLite's range) get an ``error`` frame, never a 1006, and log no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from reference_server import ws
from reference_server.protocol import MAX_JSON_DEPTH, MAX_SEQ, now_iso
from tests._waits import wait_until
from tests._wsclient import (
    TIMEOUT,
    NovaTestClient,
    ServerFactory,
    authenticated,
    module_server,
    new_channel,
    new_client_id,
    nova_client,
)
from tests.conftest import LiveServer

#: The loggers the server writes to: its own and uvicorn's (which does not propagate to root).
SERVER_LOGGERS = ("reference_server", "uvicorn")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at_least(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]

    def describe(self) -> list[str]:
        return [
            f"{r.levelname} {r.name}: {r.getMessage()}{' (with traceback)' if r.exc_info else ''}"
            for r in self.records
        ]


@pytest.fixture
def server_log() -> Iterator[_Records]:
    """Every record the server logs during the test, uvicorn's included."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in SERVER_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module's input tests; isolated by client ids."""
    yield from module_server(tmp_path_factory, "ws-hardening")


async def _until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    await wait_until(condition, what, timeout)


# ------------------------------------------------------------ unauthenticated cap


@asynccontextmanager
async def _open(server: LiveServer, count: int) -> AsyncIterator[list[NovaTestClient]]:
    """``count`` greeted, unauthenticated connections, all closed on exit."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            cid = new_client_id()
            clients.append(await stack.enter_async_context(nova_client(server.ws_url(cid), cid)))
        yield clients


async def _refused(server: LiveServer) -> tuple[int | None, str | None, list[Any]]:
    """Open one more connection; return its close code, reason and whatever it received first."""
    cid = new_client_id()
    received: list[Any] = []
    async with connect(server.ws_url(cid), proxy=None, open_timeout=TIMEOUT) as sock:
        try:
            while True:
                received.append(await asyncio.wait_for(sock.recv(), TIMEOUT))
        except ConnectionClosed:
            pass
        except TimeoutError:
            raise AssertionError(
                f"connection past the cap still open after {TIMEOUT} s; received {received}"
            ) from None
        return sock.close_code, sock.close_reason, received


async def _alive(client: NovaTestClient) -> None:
    """The connection still answers (before authentication: ``not_authenticated``)."""
    await client.send("ping", id="still-there")
    error = await client.expect_error("not_authenticated")
    assert error["id"] == "still-there"


def _cap_lines(log: _Records) -> list[logging.LogRecord]:
    return [r for r in log.records if r.name == "reference_server.ws" and "1013" in r.getMessage()]


@pytest.mark.asyncio
async def test_past_the_per_address_cap_a_connection_is_closed_1013_and_the_others_stay(
    server_factory: ServerFactory, server_log: _Records
) -> None:
    server = server_factory(max_unauthenticated_per_address=3)
    async with _open(server, 3) as waiting:
        code, reason, received = await _refused(server)
        assert (code, reason) == (1013, ws.TRY_AGAIN_LATER_REASON)
        assert received == [], "a refused connection gets no connection_established"
        for client in waiting:
            await _alive(client)

        await waiting[0].authenticate()  # frees its slot: authenticated clients never count
        cid = new_client_id()
        async with nova_client(server.ws_url(cid), cid) as newcomer:
            await _alive(newcomer)
            assert (await _refused(server))[0] == 1013  # full again
    lines = _cap_lines(server_log)
    assert len(lines) == 1, server_log.describe()
    assert lines[0].levelno == logging.WARNING
    assert "per-address cap" in lines[0].getMessage() and "'127.0.0.1'" in lines[0].getMessage()


@pytest.mark.asyncio
async def test_a_forwarded_for_header_does_not_pass_for_another_address(server_factory: ServerFactory) -> None:
    server = server_factory(max_unauthenticated_per_address=1)
    async with _open(server, 1):
        cid = new_client_id()
        headers = {"X-Forwarded-For": "10.9.8.7"}
        async with connect(
            server.ws_url(cid), proxy=None, open_timeout=TIMEOUT, additional_headers=headers
        ) as sock:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(sock.recv(), TIMEOUT)
            assert sock.close_code == 1013


@pytest.mark.asyncio
async def test_a_burst_past_the_cap_is_logged_once_then_counted_per_interval(
    server_factory: ServerFactory, server_log: _Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws, "CAP_LOG_INTERVAL_S", 0.3)
    server = server_factory(max_unauthenticated_per_address=2)
    async with _open(server, 2):
        codes = [(await _refused(server))[0] for _ in range(6)]
        assert codes == [1013] * 6
        assert len(_cap_lines(server_log)) == 1, server_log.describe()
        await _until(lambda: len(_cap_lines(server_log)) == 2, "the interval's count is logged")
    summary = _cap_lines(server_log)[1].getMessage()
    assert "closed 5 more unauthenticated connections with 1013" in summary, summary
    assert "'127.0.0.1' (5)" in summary, summary


@pytest.mark.asyncio
async def test_past_the_total_cap_a_connection_is_closed_1013(
    server_factory: ServerFactory, server_log: _Records
) -> None:
    server = server_factory(max_unauthenticated_per_address=50, max_unauthenticated_total=2)
    async with _open(server, 2):
        assert (await _refused(server))[0] == 1013
    lines = _cap_lines(server_log)
    assert len(lines) == 1 and "total cap" in lines[0].getMessage(), server_log.describe()


@pytest.mark.asyncio
async def test_authenticated_connections_never_count_and_a_closed_one_frees_its_slot(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(max_unauthenticated_per_address=2)
    async with AsyncExitStack() as stack:
        for _ in range(4):  # twice the cap, each authenticated before the next opens
            cid = new_client_id()
            await stack.enter_async_context(authenticated(server.ws_url(cid), cid))
        async with _open(server, 2) as waiting:
            assert (await _refused(server))[0] == 1013
            await waiting[0].ws.close()
            cap = server.app.state.admission.cap
            await _until(lambda: cap.count == 1, "the closed connection gives its slot back")
            async with _open(server, 1) as (newcomer,):
                await _alive(newcomer)
    await _until(lambda: cap.count == 0, "every slot is given back")


# ------------------------------------------------------------ rate limit names the operation


@pytest.mark.asyncio
async def test_every_publish_in_a_burst_is_confirmed_or_refused_by_its_id(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(rate_limit_per_second=1, rate_limit_burst=6, rate_limit_strikes=1000)
    cid = new_client_id()
    channel = new_channel()
    ids = [f"pub-{i}" for i in range(40)]
    async with authenticated(server.ws_url(cid), cid) as client:
        frames = [
            json.dumps(
                {
                    "type": "publish",
                    "data": {"channel": channel, "content": f"message {op}"},
                    "timestamp": now_iso(),
                    "client_id": cid,
                    "id": op,
                }
            )
            for op in ids
        ]
        for raw in frames:  # no wait for answers: the burst arrives faster than the rate
            await client.ws.send(raw)
        answers = [await client.recv() for _ in ids]
    by_id: dict[str, dict[str, Any]] = {}
    for frame in answers:
        assert frame["id"] not in by_id, f"{frame['id']} answered twice: {frame}"
        by_id[frame["id"]] = frame
    assert set(by_id) == set(ids), f"unanswered: {set(ids) - set(by_id)}"
    refused = [op for op in ids if by_id[op]["type"] == "error"]
    confirmed = [op for op in ids if by_id[op]["type"] == "delivery_confirmation"]
    assert refused and confirmed and len(refused) + len(confirmed) == len(ids)
    for op in refused:
        data = by_id[op]["data"]
        assert (data["code"], data["operation_id"]) == ("rate_limited", op), by_id[op]
    for op in confirmed:
        assert by_id[op]["data"]["message_id"] == op


@pytest.mark.asyncio
async def test_the_refusal_that_closes_the_connection_names_its_operation_too(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(rate_limit_per_second=0.001, rate_limit_burst=1, rate_limit_strikes=1)
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:  # the connect spends the token
        await client.send("ping", id="last-straw")
        error = await client.expect_error("rate_limited")
        code, _ = await client.closed()
    assert error["id"] == error["data"]["operation_id"] == "last-straw"
    assert code == 1008


# ------------------------------------------------------------ inputs that escaped the parser


def _envelope(type: str, data: str, op: str) -> str:
    """A frame with ``data`` spliced in as raw JSON text."""
    return (
        f'{{"type": "{type}", "data": {data}, "timestamp": "{now_iso()}", '
        f'"client_id": "x", "id": "{op}"}}'
    )


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


PARSER_ESCAPES = {
    "array-nested-1000-deep": (_nested(1000), None, "nested too deeply"),
    "context-nested-900-deep": (
        _envelope("client_error", '{"message": "m", "context": {"a": ' + _nested(900) + "}}", "op-d"),
        "op-d",
        "nested too deeply",
    ),
    "context-nested-past-the-limit": (
        _envelope(
            "client_error",
            '{"message": "m", "context": {"a": ' + _nested(MAX_JSON_DEPTH) + "}}",
            "op-l",
        ),
        "op-l",
        "nested too deeply",
    ),
    "integer-of-5000-digits": (
        _envelope("ping", "{}", "op-i").replace('"id"', '"n": ' + "9" * 5000 + ', "id"'),
        None,
        "integer too long",
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("authenticate", [False, True], ids=["before-auth", "after-auth"])
@pytest.mark.parametrize("name", list(PARSER_ESCAPES))
async def test_input_that_escaped_the_parser_gets_invalid_message_and_no_traceback(
    server: LiveServer, server_log: _Records, name: str, authenticate: bool
) -> None:
    payload, op, json_error = PARSER_ESCAPES[name]
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        if authenticate:
            await client.authenticate()
        await client.send_raw(payload)
        error = await client.expect_error("invalid_message")
        assert error["data"]["details"]["json_error"] == json_error
        assert error["data"]["operation_id"] == op
        if authenticate:
            await client.request("ping", reply="pong")  # the connection keeps working
        else:
            await _alive(client)
    assert not [r for r in server_log.records if r.exc_info], server_log.describe()
    assert len(server_log.at_least(logging.WARNING)) <= 1, server_log.describe()


@pytest.mark.asyncio
async def test_since_seq_past_sqlites_range_is_invalid_not_an_internal_error(
    server: LiveServer, server_log: _Records
) -> None:
    cid = new_client_id()
    channel = new_channel()
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.send("subscribe", {"channel": channel, "since_seq": MAX_SEQ + 1}, id="too-far")
        error = await client.expect_error("invalid_message")
        assert error["data"]["operation_id"] == "too-far"
        assert error["data"]["details"][0]["loc"] == ["subscribe", "data", "since_seq"]
        subscribed = await client.request(
            "subscribe", {"channel": channel, "since_seq": MAX_SEQ}, reply="subscribed"
        )
        assert subscribed["data"]["last_seq"] == 0
    assert not server_log.at_least(logging.ERROR), server_log.describe()


@pytest.mark.asyncio
@pytest.mark.parametrize("authenticate", [False, True], ids=["before-auth", "after-auth"])
async def test_invalid_utf8_closes_1007_without_a_traceback(
    server: LiveServer, server_log: _Records, authenticate: bool
) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        if authenticate:
            await client.authenticate()
        await client.ws.send(b'{"type": "ping", "data": "\xff\xfe"}', text=True)
        code, _ = await client.closed()
    assert code == 1007  # uvicorn logs the bad frame before it sends the close
    assert not [r for r in server_log.records if r.exc_info], server_log.describe()
    assert not server_log.at_least(logging.ERROR), server_log.describe()
    assert any("not UTF-8: closed with 1007" in r.getMessage() for r in server_log.records), (
        server_log.describe()
    )
