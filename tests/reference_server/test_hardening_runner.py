"""The runner's deadlines and limits, and a prompt, quiet shutdown (issue 12, defects 7 and 9).

Spec:
- every bad WebSocket handshake (oversized line, path or head, too many
  headers, a control character in a header, a body) is answered with an HTTP
  error status and the server closes the socket;
- a request head must be complete within ``request_head_timeout`` of the
  connection's opening (or of the previous response): an idle connection is
  closed, a head sent a byte at a time gets 408; an accepted WebSocket is
  not cut by that deadline;
- a peer stuck in the middle of a frame cannot answer pings: it is closed
  1011 after ``ws_ping_interval + ws_ping_timeout``;
- shutdown with a peer that stopped reading takes about ``shutdown_timeout``
  (not 5 s), sends 1001 to the others at once and logs no ERROR;
- the command line exits 0 without a traceback on SIGINT and SIGTERM, and
  passes its deadline flags to the server;
- a uvicorn without the internals the runner relies on fails when a config
  is built, naming its version and the fix.

Raw sockets on 127.0.0.1 against the reference app on an ephemeral port,
with short deadlines so the suite stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect as ws_connect
from websockets.uri import parse_uri

from reference_server.app import create_app
from reference_server.runner import (
    NovaUvicornServer,
    ServerThread,
    UvicornInternalsError,
    bind_socket,
    check_uvicorn_internals,
    uvicorn_config,
)
from reference_server.settings import Settings
from tests._waits import wait_for

#: The short deadlines these tests configure (seconds).
HEAD_TIMEOUT = 0.5
PING_INTERVAL = 0.3
PING_TIMEOUT = 0.3
#: Slack on top of a deadline before a test calls it missed (a loaded CI machine, -n 2).
SLACK = 3.0
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@contextmanager
def _server(tmp_path: Path, **options: Any) -> Iterator[tuple[ServerThread, NovaUvicornServer]]:
    """The reference app (not in test mode) on 127.0.0.1:0 with these runner options."""
    settings = Settings(host="127.0.0.1", port=0, frontend_port=None, db=tmp_path / "nova.db")
    app = create_app(settings)
    shutdown_timeout = options.pop("shutdown_timeout", None)
    extra = {} if shutdown_timeout is None else {"shutdown_timeout": shutdown_timeout}
    server = NovaUvicornServer(
        uvicorn_config(
            app,
            max_message_bytes=settings.max_message_bytes,
            log_level="warning",
            configure_logging=False,
            **options,
        ),
        before_shutdown=lambda: app.state.hub.close_all(1001, "server shutting down"),
        **extra,
    )
    thread = ServerThread(server, bind_socket("127.0.0.1", 0), name="hardening-runner")
    thread.start()
    try:
        yield thread, server
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One server for the module, with short head and ping deadlines."""
    with _server(
        tmp_path_factory.mktemp("hardening"),
        request_head_timeout=HEAD_TIMEOUT,
        ws_ping_interval=PING_INTERVAL,
        ws_ping_timeout=PING_TIMEOUT,
    ) as (thread, _):
        yield thread.port


def _upgrade(port: int, path: str = "/debug/hardening", extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode("latin-1")


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; fails if it does not within ``timeout``."""
    started = time.monotonic()
    received = b""
    sock.settimeout(timeout)
    while True:
        remaining = timeout - (time.monotonic() - started)
        if remaining <= 0:
            raise AssertionError(
                f"the server did not close the connection within {timeout} s; "
                f"it sent {received[:200]!r}"
            )
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def _text_frames(client: ClientProtocol) -> list[dict[str, Any]]:
    """The JSON text frames ``client`` has parsed since the last call."""
    return [
        json.loads(bytes(event.data))
        for event in client.events_received()
        if isinstance(event, Frame) and event.opcode is Opcode.TEXT
    ]


def _status(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert match, f"expected an HTTP status line, got {response[:200]!r}"
    return int(match.group(1))


def _bad_handshakes(port: int) -> dict[str, tuple[bytes, int]]:
    many = "".join(f"X-H{i}: v\r\n" for i in range(1000))
    big = "".join(f"X-H{i}: {'v' * 1000}\r\n" for i in range(100))  # 100 KB in short lines
    with_body = _upgrade(port, extra="Content-Length: 5\r\n") + b"hello"
    return {
        "path over 8 KiB": (_upgrade(port, "/debug/" + "a" * 9000), 414),
        "header line over 8 KiB": (_upgrade(port, extra=f"X-Long: {'v' * 9000}\r\n"), 431),
        "1000 headers": (_upgrade(port, extra=many), 431),
        "100 KB of headers": (_upgrade(port, extra=big), 431),
        "control character in Sec-WebSocket-Protocol": (
            _upgrade(port, extra="Sec-WebSocket-Protocol: a\x01b\r\n"),
            400,
        ),
        "body on an upgrade request": (with_body, 400),
    }


@pytest.mark.parametrize(
    "case",
    [
        "path over 8 KiB",
        "header line over 8 KiB",
        "1000 headers",
        "100 KB of headers",
        "control character in Sec-WebSocket-Protocol",
        "body on an upgrade request",
    ],
)
def test_every_bad_handshake_is_answered_and_closed(port: int, case: str) -> None:
    request, status = _bad_handshakes(port)[case]
    with socket.create_connection(("127.0.0.1", port), timeout=SLACK) as sock:
        sock.sendall(request)
        response, _ = _read_until_closed(sock, SLACK)
    assert _status(response) == status, response[:300]
    assert b"Connection: close" in response or b"connection: close" in response


def test_an_idle_connection_is_closed_after_the_head_deadline(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=SLACK) as sock:
        response, elapsed = _read_until_closed(sock, HEAD_TIMEOUT + SLACK)
    assert response == b"", "a peer that sent nothing gets no response, only the close"
    assert elapsed >= HEAD_TIMEOUT * 0.8


def test_a_handshake_sent_a_byte_at_a_time_gets_408_at_the_deadline(port: int) -> None:
    """Each byte would reset a keep-alive timer; the head deadline counts from the opening."""
    request = _upgrade(port)
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", port), timeout=SLACK) as sock:

        def trickle() -> None:
            for byte in request[:-1]:  # never the final byte: the head is never complete
                if stop.wait(0.05):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle, name="trickle")
        sender.start()
        try:
            response, elapsed = _read_until_closed(sock, HEAD_TIMEOUT + SLACK)
        finally:
            stop.set()
            sender.join()
    assert _status(response) == 408, response
    assert elapsed >= HEAD_TIMEOUT * 0.8


def test_the_head_deadline_starts_again_after_each_response(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=SLACK) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        assert _status(first) == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # part of a second head, then nothing
        rest, elapsed = _read_until_closed(sock, HEAD_TIMEOUT + SLACK)
    assert b"HTTP/1.1 408 " in rest, rest
    assert elapsed >= HEAD_TIMEOUT * 0.5


def test_an_accepted_websocket_outlives_the_head_deadline(port: int) -> None:
    with ws_connect(f"ws://127.0.0.1:{port}/debug/outlives", open_timeout=SLACK) as ws:
        assert json.loads(ws.recv(timeout=SLACK))["type"] == "connection_established"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=HEAD_TIMEOUT * 2)  # past the deadline, nothing arrives ...
        assert ws.ping().wait(SLACK), "... and the connection still answers"


def test_a_peer_stuck_in_a_frame_is_closed_1011_after_the_ping_timeout(port: int) -> None:
    client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/debug/stuck"))
    client.send_request(client.connect())
    with socket.create_connection(("127.0.0.1", port), timeout=SLACK) as sock:
        started = time.monotonic()  # pings count from the accept, which comes after this
        sock.sendall(b"".join(client.data_to_send()))
        sock.settimeout(SLACK)
        while not _text_frames(client):
            client.receive_data(sock.recv(65536))  # 101, then connection_established
        sock.sendall(b"\x81")  # the first byte of a frame header, and nothing more
        received, elapsed = _read_until_closed(sock, PING_INTERVAL + PING_TIMEOUT + SLACK)
    client.receive_data(received)
    opcodes = [e.opcode for e in client.events_received() if isinstance(e, Frame)]
    assert Opcode.PING in opcodes
    assert client.close_rcvd is not None and client.close_rcvd.code == 1011, opcodes
    assert time.monotonic() - started >= PING_INTERVAL + PING_TIMEOUT
    assert elapsed < PING_INTERVAL + PING_TIMEOUT + SLACK


# ----------------------------------------------------------------- shutdown


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _captured(*names: str) -> Iterator[list[logging.LogRecord]]:
    """Records of these loggers, whether or not they propagate to the root (uvicorn's do not)."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _frame(kind: str, data: dict[str, Any], client_id: str) -> str:
    return json.dumps(
        {"type": kind, "data": data, "timestamp": "2026-01-01T00:00:00Z", "client_id": client_id}
    )


AUTH = {"api_key": "valid-test-key", "metadata": {}}
#: One publish: with 20 of them (18 MB) more than the kernel buffers on both ends hold.
FLOOD = "x" * 900_000


def _stalled_subscriber(port: int) -> socket.socket:
    """A raw WebSocket client subscribed to ``flood`` that reads nothing more, on a small window."""
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(SLACK)
    stalled.connect(("127.0.0.1", port))
    client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/debug/stalled"))
    client.send_request(client.connect())
    stalled.sendall(b"".join(client.data_to_send()))
    while client.handshake_exc is None and client.state.name == "CONNECTING":
        client.receive_data(stalled.recv(65536))
    client.send_text(_frame("connect", AUTH, "stalled").encode())
    client.send_text(_frame("subscribe", {"channel": "flood"}, "stalled").encode())
    stalled.sendall(b"".join(client.data_to_send()))
    replies: list[str] = []
    while "subscribed" not in replies:
        client.receive_data(stalled.recv(65536))
        replies += [frame["type"] for frame in _text_frames(client)]
    return stalled


def _flood(publisher: Any, enough: Any = lambda: False) -> None:
    """Publish to ``flood`` until ``enough()`` or 20 times, each confirmed."""
    publisher.recv(timeout=SLACK)  # connection_established
    publisher.send(_frame("connect", AUTH, "publisher"))
    assert json.loads(publisher.recv(timeout=SLACK))["type"] == "auth_success"
    for _ in range(20):
        if enough():
            return
        publisher.send(_frame("publish", {"channel": "flood", "content": FLOOD}, "publisher"))
        publisher.recv(timeout=SLACK)  # delivery_confirmation


def test_shutdown_with_a_peer_that_stopped_reading_is_prompt_and_logs_no_error(
    tmp_path: Path,
) -> None:
    """Before: 5.2 s and a TimeoutError traceback at ERROR (5 s outer wait racing 5 s inside)."""
    with _server(tmp_path) as (thread, server), _captured("reference_server", "uvicorn") as records:
        port = thread.port
        stalled = _stalled_subscriber(port)

        def stalled_cannot_take_more() -> bool:
            return any(
                isinstance(p, WebSocketsSansIOProtocol) and not p.writable.is_set()
                for p in list(server.server_state.connections)
            )

        with (
            ws_connect(f"ws://127.0.0.1:{port}/debug/publisher", open_timeout=SLACK) as publisher,
            ws_connect(f"ws://127.0.0.1:{port}/debug/watcher", open_timeout=SLACK) as watcher,
        ):
            watcher.recv(timeout=SLACK)
            _flood(publisher, enough=stalled_cannot_take_more)
            wait_for(stalled_cannot_take_more, "the writes to the stalled peer backed up", SLACK)

            started = time.monotonic()
            stopper = threading.Thread(target=thread.stop, name="stop")
            stopper.start()
            with pytest.raises(ConnectionClosed) as closed:
                watcher.recv(timeout=SLACK)
            seen_by_watcher = time.monotonic() - started
            stopper.join(10)
            took = time.monotonic() - started
            assert not stopper.is_alive(), "shutdown did not finish within 10 s"
        stalled.close()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert seen_by_watcher < 0.5
    assert took < 2.5, f"shutdown took {took:.2f} s"
    errors = [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("aborted 1 WebSocket connection" in r.getMessage() for r in records)


# ----------------------------------------------------------------- command line


def _start_cli(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[str], int]:
    command = [
        sys.executable, "-m", "reference_server", "--host", "127.0.0.1", "--port", "0",
        "--frontend-port", "-1", "--db", str(tmp_path / "nova.db"), "--log-level", "info", *flags,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ}
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if selector.select(remaining):
                line = process.stdout.readline()
                if not line:
                    break
                if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                    return process, int(match.group(1))
    process.kill()
    _, err = process.communicate(timeout=10)
    raise AssertionError(
        f"the server did not say 'listening on' within 20 s; stderr:\n{err[-2000:]}"
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_cli_with_status_0_and_no_traceback(
    tmp_path: Path, sig: signal.Signals
) -> None:
    process, port = _start_cli(tmp_path, f"--request-head-timeout={HEAD_TIMEOUT}")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=SLACK) as idle:
            _, elapsed = _read_until_closed(
                idle, HEAD_TIMEOUT + SLACK
            )  # the flag reached the server
        assert elapsed < HEAD_TIMEOUT + SLACK
        process.send_signal(sig)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert "ERROR" not in err, err[-2000:]


def test_a_second_sigint_cuts_the_shutdown_short_with_status_130_and_no_traceback(
    tmp_path: Path,
) -> None:
    """A stalled peer would hold the shutdown for ``--shutdown-timeout`` (here 20 s)."""
    process, port = _start_cli(tmp_path, "--shutdown-timeout=20")
    assert process.stderr is not None
    lines: list[str] = []

    def read_stderr() -> None:  # so the server never blocks on a full stderr pipe
        assert process.stderr is not None
        lines.extend(process.stderr)

    reader = threading.Thread(target=read_stderr, name="stderr")
    reader.start()
    try:
        stalled = _stalled_subscriber(port)
        with (
            ws_connect(f"ws://127.0.0.1:{port}/debug/publisher", open_timeout=SLACK) as publisher,
            ws_connect(f"ws://127.0.0.1:{port}/debug/watcher", open_timeout=SLACK) as watcher,
        ):
            watcher.recv(timeout=SLACK)
            _flood(publisher)
            process.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed):  # the 1001: the shutdown has begun
                watcher.recv(timeout=SLACK)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
        took = time.monotonic() - started
        stalled.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(10)
    err = "".join(lines)
    assert process.returncode == 130, err[-2000:]
    assert took < 5, f"the forced exit took {took:.1f} s"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]


def test_help_documents_the_deadlines_and_the_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from reference_server.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--request-head-timeout", "--max-request-head-bytes", "--keep-alive-timeout",
        "--ws-ping-interval", "--ws-ping-timeout", "--shutdown-timeout",
    ):  # fmt: skip
        assert flag in out, flag
    assert "exit status: 0 stopped by SIGTERM/SIGINT" in out


@pytest.mark.parametrize(
    "flags",
    [
        ["--request-head-timeout", "0"],
        ["--shutdown-timeout", "-1"],
        ["--max-request-head-bytes", "100"],
    ],
)
def test_a_bad_deadline_flag_exits_2(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from reference_server.cli import main

    try:
        status = main(flags)
    except SystemExit as exited:  # argparse's own refusal
        status = exited.code  # type: ignore[assignment]
    assert status == 2
    assert flags[0].lstrip("-").replace("-", "_") in capsys.readouterr().err.replace("-", "_")


# ----------------------------------------------------------------- uvicorn internals


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app never called: the probe refuses before anything is served."""


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    check_uvicorn_internals.cache_clear()
    yield
    check_uvicorn_internals.cache_clear()


def test_a_uvicorn_that_does_not_answer_bad_handshakes_is_refused(
    fresh_probe: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(WebSocketsSansIOProtocol, "handle_handshake_exception")
    with pytest.raises(UvicornInternalsError) as raised:
        uvicorn_config(_no_app, max_message_bytes=1024)
    message = str(raised.value)
    assert f"uvicorn {uvicorn.__version__}" in message
    assert "does not answer a WebSocket handshake it cannot parse" in message
    assert "pip install 'uvicorn>=" in message


def test_a_uvicorn_missing_an_overridden_method_is_refused(
    fresh_probe: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(H11Protocol, "handle_websocket_upgrade")
    with pytest.raises(UvicornInternalsError, match=r"H11Protocol\.handle_websocket_upgrade"):
        NovaUvicornServer(uvicorn.Config(_no_app))
