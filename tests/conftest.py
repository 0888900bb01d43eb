"""Fixtures for the fast suite: a real uvicorn server on an ephemeral port, per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from reference_server.app import create_app
from reference_server.runner import NovaUvicornServer, ServerThread, bind_socket, uvicorn_config
from reference_server.settings import Settings

TEST_TOKEN = "test-harness-token"


@dataclass
class LiveServer:
    """A reference server running on its own thread, on an ephemeral loopback port."""

    app: FastAPI
    settings: Settings
    thread: ServerThread

    @property
    def port(self) -> int:
        return self.thread.port

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, client_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/debug/{client_id}"

    @property
    def harness_headers(self) -> dict[str, str]:
        return {"X-Harness-Token": self.settings.test_token}

    def stop(self) -> None:
        self.thread.stop()


def start_server(db: Path, **overrides: Any) -> LiveServer:
    """Start a server in test mode on 127.0.0.1:0 with its own database; caller stops it."""
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "frontend_port": None,
        "db": db,
        "test_mode": True,
        "test_token": TEST_TOKEN,
    }
    options.update(overrides)
    settings = Settings(**options)
    app = create_app(settings)
    sock = bind_socket(settings.host, settings.port)
    server = NovaUvicornServer(
        uvicorn_config(app, max_message_bytes=settings.max_message_bytes, log_level="warning"),
        before_shutdown=lambda: app.state.hub.close_all(1001, "server shutting down"),
    )
    thread = ServerThread(server, sock)
    thread.start()
    return LiveServer(app, settings, thread)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A fresh reference server (test mode, own SQLite file) for one test."""
    server = start_server(tmp_path / "nova.db")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers with custom settings: ``server_factory(auth_timeout_ms=200)``."""
    started: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        db = overrides.pop("db", tmp_path / f"nova-{len(started)}.db")
        server = start_server(db, **overrides)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
