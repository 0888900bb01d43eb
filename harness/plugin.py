"""The ``nova_ws`` pytest plugin (entry point ``pytest11``): hooks, options, markers, fixtures.

Each fixture is a few lines over a library class; see docs/plugin-reference.md.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import pytest

from .artifacts import write_failure_artifacts
from .client import NovaClient
from .config import SETTINGS, WsConfig, resolve_config
from .errors import ConfigurationError
from .faults import Faults
from .helper import WebSocketTestHelper, new_client_id
from .server import ServerUnderTest, start_server, worker_id

_HELPER_KEY = pytest.StashKey[WebSocketTestHelper]()
_OUTPUT_KEY = pytest.StashKey[str]()

MARKERS = {
    "ws_real_time": "ws_real_time: run the page with real timers (no virtual clock) for this test",
    "ws_mode": "ws_mode(mode): 'real' (faults happen on the server) or 'synthetic' (window events) for this test",
    "ws_allow_invalid_frames": "ws_allow_invalid_frames: do not fail the test on frames that violate the protocol",
    "ws_client_id": "ws_client_id(id): load the page with this client id instead of a unique one",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nova_ws", "Nova WebSocket harness (CLI > env > ini > default)")
    for setting in SETTINGS:
        group.addoption(
            setting.option,
            dest=f"nova_ws_{setting.field}",
            default=None,
            metavar=setting.option.removeprefix("--ws-").upper().replace("-", "_"),
            help=f"{setting.help}; env {setting.env}, ini {setting.ini}",
        )
        ini_type: Literal["linelist", "string"] = "linelist" if setting.field == "test_ids" else "string"
        parser.addini(setting.ini, help=setting.help, type=ini_type, default=None)


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS.values():
        config.addinivalue_line("markers", line)
    if config.pluginmanager.hasplugin("playwright"):
        from . import _browser_fixtures

        config.pluginmanager.register(_browser_fixtures, "nova_ws_browser")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    helper = item.stash.get(_HELPER_KEY, None)
    if helper is None:
        return
    out_dir = Path(item.stash.get(_OUTPUT_KEY, str(item.config.rootpath / "test-results")))
    paths = write_failure_artifacts(helper, out_dir)
    if paths:
        report.sections.append(("nova-ws artifacts", "\n".join(f"{k}: {p}" for k, p in paths.items())))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def ws_config(pytestconfig: pytest.Config) -> WsConfig:
    """The resolved harness configuration (:class:`harness.WsConfig`).

    Resolution: CLI option > environment variable > ini key > default (the
    reference app).  Override this fixture to change values in Python, e.g.
    ``return ws_config.replace(api_key="my-key")``.
    """
    cli = {s.field: pytestconfig.getoption(f"nova_ws_{s.field}") for s in SETTINGS}
    ini = {s.field: pytestconfig.getini(s.ini) for s in SETTINGS}
    try:
        return resolve_config(cli, os.environ, ini)
    except ConfigurationError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def ws_server(ws_config: WsConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerUnderTest]:
    """The server under test, one per session (so one per xdist worker).

    The reference server in test mode on an ephemeral loopback port by default;
    ``--ws-app module:attr`` runs another ASGI app in-process instead and
    ``--ws-base-url`` uses an app already running.  Exposes ``http_url``,
    ``ws_url(client_id)``, ``page_url(client_id)``, ``faults`` (the fault
    control client) and ``log_lines()`` (this worker's server log).
    """
    workdir = tmp_path_factory.mktemp(f"nova-ws-{worker_id()}")
    server = start_server(ws_config, workdir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def _ws_prepared_context(request: pytest.FixtureRequest, context: Any, ws_config: WsConfig) -> bool:
    """The test's browser context, seeded and with its clock paused, before ``page`` opens."""
    WebSocketTestHelper.prepare_context(
        context, seed=ws_config.seed, virtual_time=request.node.get_closest_marker("ws_real_time") is None
    )
    return True


@pytest.fixture
def ws_helper(
    request: pytest.FixtureRequest,
    _ws_prepared_context: bool,
    page: Any,
    ws_server: ServerUnderTest,
    ws_config: WsConfig,
    output_path: str,
) -> Iterator[WebSocketTestHelper]:
    """A :class:`harness.WebSocketTestHelper` on a fresh page with a unique client id.

    Before the test: the page's sockets are routed through the frame journal,
    Playwright's clock is installed before the page loads (marker
    ``ws_real_time`` opts out), the page's randomness is seeded, and in real
    mode the helper waits for an open socket.  After the test: faults for the
    client are lifted and every journaled frame must have matched the
    protocol (marker ``ws_allow_invalid_frames`` opts out).  On failure the
    journal, the status history and the client's server log lines are written
    next to pytest-playwright's artifacts.
    """
    mode_marker = request.node.get_closest_marker("ws_mode")
    id_marker = request.node.get_closest_marker("ws_client_id")
    helper = WebSocketTestHelper(
        page,
        ws_server,
        ws_config,
        client_id=id_marker.args[0] if id_marker else None,
        mode=_mode_from_marker(mode_marker),
        virtual_time=request.node.get_closest_marker("ws_real_time") is None,
        validate_frames=request.node.get_closest_marker("ws_allow_invalid_frames") is None,
        context_prepared=_ws_prepared_context,
    )
    request.node.stash[_HELPER_KEY] = helper
    request.node.stash[_OUTPUT_KEY] = output_path
    helper.initialize()
    yield helper
    helper.cleanup()
    helper.check_frames()


def _mode_from_marker(marker: pytest.Mark | None) -> Any:
    if marker is None:
        return None
    mode = marker.args[0] if marker.args else marker.kwargs.get("mode")
    if mode not in ("real", "synthetic"):
        raise pytest.UsageError(f"@pytest.mark.ws_mode takes 'real' or 'synthetic', got {mode!r}")
    return mode


@pytest.fixture
def ws_faults(ws_helper: WebSocketTestHelper) -> Faults:
    """``ws_helper.faults``: faults at the server, message and network depths for this test's page.

    Each call returns a handle that is also a context manager; every fault
    still active is undone at teardown.  See docs/faults.md.
    """
    return ws_helper.faults


class WsClientFactory(Protocol):
    """The ``ws_client`` fixture: ``ws_client(api_key=..., client_id=..., authenticate=True)``."""

    def __call__(
        self, api_key: str | None = None, *, client_id: str | None = None, authenticate: bool = True
    ) -> NovaClient: ...


@pytest.fixture
def ws_client(ws_server: ServerUnderTest, ws_config: WsConfig) -> Iterator[WsClientFactory]:
    """A factory of Python protocol clients (:class:`harness.NovaClient`) for multi-party tests.

    ``ws_client()`` returns a client connected to the server under test and
    authenticated with the configured API key (``api_key=`` to use another,
    ``authenticate=False`` to stop after ``connection_established``).  Every
    client is closed at teardown.
    """
    clients: list[NovaClient] = []

    def make(
        api_key: str | None = None, *, client_id: str | None = None, authenticate: bool = True
    ) -> NovaClient:
        cid = client_id or new_client_id("py")
        client = NovaClient(ws_server.ws_url(cid), cid, default_timeout=ws_config.timeout)
        clients.append(client)
        client.connect()
        if authenticate:
            client.authenticate(ws_config.api_key if api_key is None else api_key)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close(timeout=2)
