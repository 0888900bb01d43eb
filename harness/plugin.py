"""The ``nova_ws`` pytest plugin (entry point ``pytest11``): hooks, options, markers, fixtures.

Each fixture is a few lines over a library class; see docs/plugin-reference.md.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest

from .config import SETTINGS, WsConfig, resolve_config
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .app import AppProfile
    from .client import WsClient
    from .faults import Faults
    from .helper import WebSocketTestHelper
    from .load.fixture import LoadRuns
    from .server import ServerUnderTest

_HELPER_KEY = pytest.StashKey["WebSocketTestHelper"]()
_OUTPUT_KEY = pytest.StashKey[str]()
_CONFIG_KEY = pytest.StashKey[WsConfig]()

MARKERS = {
    "ws_real_time": "ws_real_time: run the page with real timers (no virtual clock) for this test",
    "ws_mode": "ws_mode(mode): 'real' (faults happen on the server) or 'synthetic' (window events) for this test",
    "ws_allow_invalid_frames": "ws_allow_invalid_frames: do not fail the test on frames that violate the protocol",
    "ws_client_id": "ws_client_id(id): load the page with this client id instead of a unique one",
    "ws_allow_server_errors": "ws_allow_server_errors: do not fail the test when the server logs errors for its client",
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
    # Resolved once, here: a bad setting stops the run with one message, not every test.
    cli = {s.field: config.getoption(f"nova_ws_{s.field}") for s in SETTINGS}
    ini = {s.field: config.getini(s.ini) for s in SETTINGS}
    try:
        config.stash[_CONFIG_KEY] = resolve_config(cli, os.environ, ini)
    except ConfigurationError as exc:
        raise pytest.UsageError(f"nova-ws: {exc}") from None
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
    from .artifacts import write_failure_artifacts

    out_dir = Path(item.stash.get(_OUTPUT_KEY, str(item.config.rootpath / "test-results")))
    paths = write_failure_artifacts(helper, out_dir)
    if paths:
        report.sections.append(("nova-ws artifacts", "\n".join(f"{k}: {p}" for k, p in paths.items())))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def ws_config(pytestconfig: pytest.Config) -> WsConfig:
    """The resolved harness configuration (:class:`harness.WsConfig`).

    Resolution: CLI option > environment variable > ini key > default (the
    reference app), once at start-up (a bad value stops the run).  Override
    this fixture to change values in Python, e.g.
    ``return ws_config.replace(api_key="my-key")``; a directory may override
    it for another app, and gets a server of its own.
    """
    return pytestconfig.stash[_CONFIG_KEY]


class ServerPool:
    """The servers of this session (so of this xdist worker): one per distinct configuration.

    Started on first use, stopped at the end of the session.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._servers: dict[WsConfig, ServerUnderTest] = {}
        self._profiles: dict[WsConfig, AppProfile] = {}

    def server(self, config: WsConfig) -> ServerUnderTest:
        """The server for ``config``, started if it is the first test to need it."""
        server = self._servers.get(config)
        if server is None:
            from .server import start_server, worker_id

            workdir = self._tmp.mktemp(f"nova-ws-{worker_id()}")
            server = self._servers[config] = start_server(config, workdir)
        return server

    def profile(self, config: WsConfig, rootdir: Path) -> AppProfile:
        """The app profile for ``config`` (schemas read once)."""
        profile = self._profiles.get(config)
        if profile is None:
            from .app import load_profile

            try:
                http_url = self.server(config).http_url if config.base_url else None
                profile = self._profiles[config] = load_profile(config, rootdir, http_url=http_url)
            except ConfigurationError as exc:
                raise pytest.UsageError(f"nova-ws: {exc}") from None
        return profile

    def stop(self) -> None:
        errors: list[BaseException] = []
        for server in self._servers.values():
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others, then report
                errors.append(exc)
        self._servers.clear()
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def ws_server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """The session's servers under test, one per distinct ``ws_config`` (:class:`ServerPool`).

    For fixtures of a broader scope than a test: ``ws_server_pool.server(ws_config)``.
    """
    pool = ServerPool(tmp_path_factory)
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def ws_server(ws_server_pool: ServerPool, ws_config: WsConfig) -> ServerUnderTest:
    """The server under test for this test's ``ws_config``: started once per session (per xdist worker).

    The reference server in test mode on an ephemeral loopback port by default;
    ``--ws-app module:attr`` runs another ASGI app in-process instead (wrapped
    in :class:`harness.asgi.FaultMiddleware`) and ``--ws-base-url`` uses an app
    already running (behind the fault proxy).  Exposes ``http_url``,
    ``ws_url(client_id)``, ``page_url(client_id)``, ``faults`` (the
    server-depth fault control) and ``log_lines()`` (this worker's server log).
    A directory that overrides ``ws_config`` gets its own server.
    """
    return ws_server_pool.server(ws_config)


def _ws_helper(
    request: pytest.FixtureRequest,
    prepared: bool,
    page: Any,
    ws_server: ServerUnderTest,
    ws_config: WsConfig,
    ws_server_pool: ServerPool,
    output_path: str,
) -> Iterator[WebSocketTestHelper]:
    """The body of the ``ws_helper`` fixture (harness/_browser_fixtures.py, registered with Playwright)."""
    from .helper import WebSocketTestHelper

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
        context_prepared=prepared,
        profile=ws_server_pool.profile(ws_config, request.config.rootpath),
    )
    request.node.stash[_HELPER_KEY] = helper
    request.node.stash[_OUTPUT_KEY] = output_path
    helper.initialize()
    yield helper
    helper.cleanup()
    helper.check_frames()
    if request.node.get_closest_marker("ws_allow_server_errors") is None:
        helper.check_server_errors()


@pytest.fixture
def ws_helper(request: pytest.FixtureRequest) -> Any:
    """A :class:`harness.WebSocketTestHelper`: needs the ``browser`` extra (Playwright).

    Replaced by the real fixture when pytest-playwright is installed; without
    it, this fails with the command that installs it.
    """
    raise pytest.UsageError(
        "ws_helper drives a browser through pytest-playwright, which is not installed: "
        "pip install 'nova-ws-harness[browser]' (then python -m harness ensure-browser)"
    )


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
    ) -> Any: ...


@pytest.fixture
def ws_client(
    request: pytest.FixtureRequest, ws_server: ServerUnderTest, ws_config: WsConfig, ws_server_pool: ServerPool
) -> Iterator[WsClientFactory]:
    """A factory of Python clients of the app under test, for multi-party tests.

    Nova (the reference app): ``ws_client()`` returns a :class:`harness.NovaClient`
    connected and authenticated with the configured API key (``api_key=`` to
    use another, ``authenticate=False`` to stop after
    ``connection_established``).  Other apps (the generic profile): a
    connected :class:`harness.WsClient` (``send``, ``expect``,
    ``expect_nothing``, ``close``); ``api_key`` and ``authenticate`` do not
    apply.  Every client is closed at teardown.
    """
    from .helper import new_client_id

    profile = ws_server_pool.profile(ws_config, request.config.rootpath)
    clients: list[WsClient] = []

    def make(
        api_key: str | None = None, *, client_id: str | None = None, authenticate: bool = True
    ) -> WsClient:
        cid = client_id or new_client_id("py")
        client = profile.client(ws_server.ws_url(cid), cid, timeout=ws_config.timeout)
        clients.append(client)
        client.connect()
        if authenticate and hasattr(client, "authenticate"):
            client.authenticate(ws_config.api_key if api_key is None else api_key)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close(timeout=2)


@pytest.fixture
def ws_load(
    request: pytest.FixtureRequest, ws_server: ServerUnderTest, ws_config: WsConfig, ws_server_pool: ServerPool
) -> Iterator[LoadRuns]:
    """Load in the background against ``ws_server`` while the test runs (:class:`harness.load.LoadRuns`).

    ``ws_load("fanout", subscribers=20, rate=50)`` starts a scenario (by its
    ``nova-ws load`` name with its parameters, or a scenario object) on its
    own thread, speaking the app's profile (Nova, authenticated with
    ``ws_api_key``, or the generic protocol), and returns once its clients
    are connected; ``.stop()`` ends it and returns its figures (a
    :class:`harness.load.RunResult`).  At teardown runs still going are
    stopped, and a run that was aborted or missed one of its
    ``thresholds=[...]`` fails the test (``check=False`` opts a run out).
    """
    from .load.fixture import LoadRuns

    profile = ws_server_pool.profile(ws_config, request.config.rootpath)
    runs = LoadRuns.for_server(ws_server, profile.name)
    try:
        yield runs
    finally:
        runs.stop_all()
    runs.check()
