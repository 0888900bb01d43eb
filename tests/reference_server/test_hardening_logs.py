"""Log lines a client cannot forge and that never carry a key (issue 12, defects 1 and 2).

Live tests read what the server's loggers write through a handler of their own
(:func:`captured`), rendered by the formatters uvicorn and the CLI use.
"""

from __future__ import annotations

import io
import logging
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import Field
from uvicorn.logging import AccessFormatter
from websockets.exceptions import InvalidStatus

from reference_server.app import create_app
from reference_server.logsafe import (
    DEFAULT_REDACTED_PARAMS,
    REDACTED,
    SERVER_LOGGERS,
    LogSanitizer,
    escape_controls,
    install_log_sanitizer,
    redact_query,
    sanitize,
)
from reference_server.settings import Settings
from tests._waits import wait_for
from tests._wsclient import TIMEOUT, ServerFactory, authenticated, new_client_id, nova_client

FORMAT = "%(levelname)s %(name)s: %(message)s"
ACCESS_FORMAT = '%(levelname)s %(name)s: %(client_addr)s - "%(request_line)s" %(status_code)s'


class Capture:
    """What a set of loggers wrote, one formatted record per line (as a file handler writes)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def wait_for(self, needle: str, timeout: float = TIMEOUT) -> str:
        """The first line containing ``needle``, waiting for the server thread to write it."""
        try:
            wait_for(lambda: any(needle in line for line in self.lines), f"a log line with {needle!r}", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{self.text}") from None
        return next(line for line in self.lines if needle in line)


@contextmanager
def captured(*names: str) -> Iterator[Capture]:
    """Handlers on ``names`` (uvicorn.access gets uvicorn's AccessFormatter), at INFO."""
    capture = Capture()
    saved: list[tuple[logging.Logger, logging.Handler, int]] = []
    for name in names:
        logger = logging.getLogger(name)
        handler: logging.Handler = logging.StreamHandler(capture.stream)
        handler.setFormatter(
            AccessFormatter(ACCESS_FORMAT, use_colors=False)
            if name == "uvicorn.access"
            else logging.Formatter(FORMAT)
        )
        saved.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        for logger, handler, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


# ------------------------------------------------------------------ pure


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nERROR: forged", "a\\r\\nERROR: forged"),
        ("tab\there", "tab\\there"),
        ("esc \x1b[31mred", "esc \\x1b[31mred"),
        ("nul\x00 del\x7f nel\x85", "nul\\x00 del\\x7f nel\\x85"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("plain text, \\n stays", "plain text, \\n stays"),
        ("été ünïcode ✓", "été ünïcode ✓"),
    ],
)
def test_control_characters_and_line_separators_are_escaped(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown
    assert len(shown.splitlines()) == 1


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("/debug/x?api_key=development&x=1", f"/debug/x?api_key={REDACTED}&x=1"),
        ("/a?x=1&TOKEN=t0k#frag", f"/a?x=1&TOKEN={REDACTED}#frag"),
        ("/a?API%5FKEY=dev;password=p w", f"/a?API%5FKEY={REDACTED};password={REDACTED} w"),
        ('"GET /a?secret=s&key=k HTTP/1.1"', f'"GET /a?secret={REDACTED}&key={REDACTED} HTTP/1.1"'),
        ("/a?access_token=&monkey=1&keys=2", f"/a?access_token={REDACTED}&monkey=1&keys=2"),
        ("key=value in prose", "key=value in prose"),
    ],
)
def test_sensitive_query_parameters_are_redacted(raw: str, shown: str) -> None:
    assert redact_query(raw) == shown


def test_sanitize_redacts_before_escaping_so_a_line_break_ends_a_value() -> None:
    raw = "/x?api_key=dev\nERROR: forged&token=t"
    assert sanitize(raw) == f"/x?api_key={REDACTED}\\nERROR: forged&token={REDACTED}"


def test_the_filter_keeps_uvicorns_access_arguments_and_redacts_them() -> None:
    """uvicorn's AccessFormatter unpacks the record's five arguments: they must survive."""
    record = logging.getLogger("uvicorn.access").makeRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/health?api_key=development&x=1", "1.1", 200), None,
    )
    assert LogSanitizer().filter(record)
    line = AccessFormatter(ACCESS_FORMAT, use_colors=False).format(record)
    assert line == f'INFO uvicorn.access: 127.0.0.1:5 - "GET /health?api_key={REDACTED}&x=1 HTTP/1.1" 200 OK'


def test_a_non_string_argument_with_a_line_break_is_rendered_escaped() -> None:
    record = logging.makeLogRecord(
        {"msg": "failed: %s (%d)", "args": (ValueError("bad\nERROR: forged"), 3)}
    )
    LogSanitizer().filter(record)
    assert record.getMessage() == "failed: bad\\nERROR: forged (3)"


def test_a_filter_redacts_the_names_it_is_given() -> None:
    sanitizer = LogSanitizer(["session"])
    record = logging.makeLogRecord({"msg": "GET %s", "args": ("/a?Session=s1&api_key=k",)})
    sanitizer.filter(record)
    assert record.getMessage() == f"GET /a?Session={REDACTED}&api_key=k"
    sanitizer.add_names(["api_key"])
    assert sanitizer.names == {"session", "api_key"}


def test_create_app_puts_the_filter_once_on_every_server_logger(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "nova.db", frontend_port=None)
    create_app(settings)
    create_app(settings)
    sanitizer = install_log_sanitizer()
    assert set(DEFAULT_REDACTED_PARAMS) <= sanitizer.names
    names = [
        name
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and name.startswith("reference_server.")
    ]
    assert "reference_server.client_errors" in names and "reference_server.ws" in names
    for name in (*SERVER_LOGGERS, *names):
        filters = logging.getLogger(name).filters
        assert filters.count(sanitizer) == 1, f"{name}: {filters}"


class _RedactingSettings(Settings):
    """Settings with ``log_redact_params`` (declared here as reference_server/settings.py does)."""

    log_redact_params: list[str] = Field(default_factory=lambda: ["sid"])


def test_create_app_redacts_the_names_in_its_settings(tmp_path: Path) -> None:
    create_app(_RedactingSettings(db=tmp_path / "nova.db", frontend_port=None))
    record = logging.makeLogRecord({"msg": "GET /a?sid=abc&x=1"})
    install_log_sanitizer().filter(record)
    assert record.getMessage() == f"GET /a?sid={REDACTED}&x=1"


# ------------------------------------------------------------------ live server


async def test_a_client_error_with_a_newline_writes_one_escaped_line(
    server_factory: ServerFactory,
) -> None:
    """Defect 1: a client cannot write a forged ERROR line into the server log."""
    server = server_factory()
    cid = new_client_id()
    with captured("reference_server") as log:
        async with authenticated(server.ws_url(cid), cid) as client:
            await client.send(
                "client_error",
                {"message": "boom\nERROR: forged", "context": {"where": "x\r\nWARNING: also forged"}},
            )
            await client.request("ping", reply="pong")  # the report has been handled
        line = log.wait_for("reported an error")
    forged = [n for n in log.lines if "forged" in n]
    assert forged == [line], log.text
    assert line.startswith(f"WARNING reference_server.client_errors: client {cid} reported")
    assert "boom\\nERROR: forged" in line and "x\\r\\nWARNING: also forged" in line


async def test_an_unvalidated_client_id_in_the_path_cannot_forge_a_line(
    server_factory: ServerFactory,
) -> None:
    """The Origin refusal logs the client id before it is validated (decoded from %0A)."""
    server = server_factory()
    path_id = urllib.parse.quote("x\nERROR: forged", safe="")
    with captured("reference_server") as log:
        with pytest.raises(InvalidStatus):
            async with nova_client(
                server.ws_url(path_id), "x", origin="http://elsewhere.example"
            ):
                pass
        line = log.wait_for("is not allowed")
    assert "x\\nERROR: forged" in line
    assert not any(n.startswith("ERROR") for n in log.lines), log.text


async def test_a_key_in_a_handshake_url_is_never_logged(server_factory: ServerFactory) -> None:
    """Defect 2: uvicorn's ``"WebSocket /debug/x?api_key=..." [accepted]`` line is redacted."""
    server = server_factory()
    cid = new_client_id()
    with captured("uvicorn.error") as log:
        async with nova_client(f"{server.ws_url(cid)}?api_key=development&x=1", cid):
            pass  # connection_established came: uvicorn logged the accepted handshake before
        line = log.wait_for("[accepted]")
    assert f"/debug/{cid}?api_key={REDACTED}&x=1" in line
    assert "development" not in log.text


def test_a_key_in_a_rest_url_is_never_logged(server_factory: ServerFactory) -> None:
    """Defect 2: the access log line of a REST call is redacted."""
    server = server_factory()
    with captured("uvicorn.access") as log:
        with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as http:
            answer = http.get("/api/channels", params={"api_key": "development", "x": "1"},
                              headers={"X-API-Key": "valid-test-key"})
        assert answer.status_code == 200
        line = log.wait_for("/api/channels")
    assert f'"GET /api/channels?api_key={REDACTED}&x=1 HTTP/1.1" 200 OK' in line
    assert "development" not in log.text

