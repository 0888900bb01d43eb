"""Fixtures for the fast suite: a real uvicorn server on an ephemeral port, per test."""

from __future__ import annotations

import asyncio
import inspect
import threading
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "asyncio: a coroutine test, run on a fresh event loop in its own thread"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run coroutine tests with ``asyncio.run`` on a thread of their own.

    Playwright's sync API keeps an event loop registered on the main thread
    once a browser test has run in the worker, so a coroutine test cannot
    start a loop there; a fresh thread has none, whatever ran before.
    """
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            asyncio.run(func(**kwargs))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"test-{pyfuncitem.name}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return True


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
