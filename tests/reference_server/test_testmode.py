"""Test mode takes its handshake faults from the harness's FaultMiddleware, through an entry point."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from reference_server import cli, testmode
from reference_server.app import create_app
from reference_server.settings import Settings
from tests.conftest import start_server

TIMEOUT = 10.0


def _settings(tmp_path: Path, *, test_mode: bool) -> Settings:
    return Settings(
        host="127.0.0.1", port=0, frontend_port=None, db=tmp_path / "nova.db", test_mode=test_mode
    )


def _no_entry_points(*, group: str) -> list[EntryPoint]:
    return []


def test_a_test_mode_server_has_its_handshakes_rejected_by_the_harness_middleware(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Built as ``nova-ws serve --test-mode`` builds it, the server's /__harness rules reach FaultMiddleware."""
    caplog.set_level(logging.INFO, logger="harness.asgi")
    server = start_server(tmp_path / "nova.db")
    try:
        answer = httpx.post(
            f"{server.http_url}/__harness/clients/tm-client/reject",
            json={"status": 503, "count": 1, "body": "busy"},
            headers=server.harness_headers,
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200, answer.text
        with pytest.raises(InvalidStatus) as refused:
            connect(server.ws_url("tm-client"), open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 503
        assert refused.value.response.body == b"busy"
        with connect(server.ws_url("tm-client"), open_timeout=TIMEOUT) as ws:
            assert '"connection_established"' in str(ws.recv(timeout=TIMEOUT))
    finally:
        server.stop()
    decided = [r for r in caplog.records if r.name == "harness.asgi" and "rejected with 503" in r.getMessage()]
    assert len(decided) == 1, [r.getMessage() for r in caplog.records]


def test_outside_test_mode_nothing_is_loaded_and_there_are_no_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*, group: str) -> list[EntryPoint]:
        raise AssertionError(f"entry points of {group!r} looked up outside test mode")

    monkeypatch.setattr(testmode, "entry_points", refuse)
    app = create_app(_settings(tmp_path, test_mode=False))
    assert app.state.faults is None
    assert not any("FaultMiddleware" in repr(m.cls) for m in app.user_middleware)


def test_test_mode_mounts_the_harness_middleware_inside_the_host_guard(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, test_mode=True))
    names = [getattr(m.cls, "__name__", "") for m in app.user_middleware]  # outermost first
    assert names.index("HostGuard") < names.index("FaultMiddleware")
    from harness.faults.controller import FaultController

    assert isinstance(app.state.faults, FaultController)


def test_test_mode_without_the_installer_says_how_to_reinstall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(testmode, "entry_points", _no_entry_points)
    with pytest.raises(testmode.FaultShimUnavailable) as err:
        create_app(_settings(tmp_path, test_mode=True))
    assert "nova_ws.test_mode" in str(err.value)
    assert "pip install -e" in str(err.value)


def test_test_mode_with_a_broken_installer_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint(name="faults", value="harness.no_such_module:install", group=testmode.TEST_MODE_GROUP)

    def only_broken(*, group: str) -> list[EntryPoint]:
        return [broken] if group == testmode.TEST_MODE_GROUP else []

    monkeypatch.setattr(testmode, "entry_points", only_broken)
    with pytest.raises(testmode.FaultShimUnavailable, match="harness.no_such_module:install"):
        create_app(_settings(tmp_path, test_mode=True))


def test_the_cli_exits_3_with_the_fix_and_listens_on_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(testmode, "entry_points", _no_entry_points)
    bound: list[Any] = []
    monkeypatch.setattr("reference_server.runner.bind_socket", lambda *a: bound.append(a))
    status = cli.main(
        ["serve", "--test-mode", "--port", "0", "--frontend-port", "-1", "--db", str(tmp_path / "n.db")]
    )
    captured = capsys.readouterr()
    assert status == cli.EXIT_STARTUP_FAILED
    assert "nova_ws.test_mode" in captured.err and "pip install -e" in captured.err
    assert bound == [] and "listening" not in captured.out
