"""The server under test: the reference server, another project's ASGI app, or a running app.

One server per pytest session, so one per xdist worker.  In-process servers
run on their own thread and event loop, on a socket bound to
``127.0.0.1:0`` before start and read back, and log to a per-worker file;
a failed start raises :class:`ServerStartError` with the last log lines.

- ``--ws-app`` apps are wrapped in :class:`harness.asgi.FaultMiddleware`
  (server-depth faults keyed by the ``ws_path`` client id) and served by
  plain uvicorn (its ``websockets-sansio`` WebSocket implementation) on a
  :class:`UvicornThread`; ``ServerUnderTest.faults`` talks to the
  middleware's control API with a random token (or ``--ws-harness-token``).
- The reference server runs as it does in production, in test mode, with its
  own uvicorn protocol and server classes (:mod:`reference_server.runner`).
- ``--ws-base-url`` attaches to a running app; the fault proxy goes in front
  of it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import secrets
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from .asgi import FaultMiddleware
from .config import WsConfig
from .control import FaultControl
from .errors import HarnessError, ServerStartError
from .proxy import FaultProxy
from .proxy.control import ProxyFaultControl

__all__ = [
    "ServerUnderTest",
    "UvicornThread",
    "bind_loopback",
    "load_asgi_app",
    "plain_uvicorn_config",
    "start_server",
    "worker_id",
]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: uvicorn's WebSocket implementation for ``--ws-app`` apps: it offers the denial-response
#: extension (HTTP status and body for a rejected handshake) and, with uvicorn 0.55, logs a
#: denial without "ASGI callable returned without completing handshake" (uvicorn#3138).
_APP_WS_IMPLEMENTATION = "websockets-sansio"


def worker_id() -> str:
    """The pytest-xdist worker id (``gw0``...), or ``main`` when not distributed."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@dataclass
class ServerUnderTest:
    """What the ``ws_server`` fixture yields: URLs, the fault control client and the log.

    ``kind`` is ``reference`` (the bundled server, test mode), ``app`` (an
    ASGI app given with ``--ws-app``) or ``external`` (``--ws-base-url``).
    ``http_url`` reaches the server directly (REST calls, ``ws_client``);
    the page is loaded through ``proxy`` (the fault proxy, unless
    ``--ws-proxy=false``), so network faults can reach its sockets.
    ``faults`` is the server-depth fault control (None for an external app
    without ``--ws-harness-token``); for an ``app`` it talks to
    ``middleware``, the :class:`~harness.asgi.FaultMiddleware` wrapping it.
    """

    http_url: str
    config: WsConfig
    kind: str
    log_path: Path | None = None
    faults: FaultControl | ProxyFaultControl | None = None
    app: Any = None
    proxy: FaultProxy | None = None
    middleware: FaultMiddleware | None = None
    _stop: Any = field(default=None, repr=False)
    _log_handler: logging.Handler | None = field(default=None, repr=False)

    def ws_url(self, client_id: str) -> str:
        """The WebSocket URL of ``client_id``."""
        return self.config.ws_url(self.http_url, client_id)

    @property
    def page_http_url(self) -> str:
        """Where the browser loads the app: the fault proxy when there is one, else ``http_url``."""
        if self.proxy is not None:
            return self.proxy.url
        return self.http_url

    def page_url(self, client_id: str) -> str:
        """The page URL that makes the browser client use ``client_id`` (through the proxy)."""
        return self.config.page_url(self.page_http_url, client_id)

    @property
    def has_fault_control(self) -> bool:
        """Whether server-depth faults are available (reference server, ``--ws-app``, or a token)."""
        return self.faults is not None

    def error_records(self, since: float = 0.0) -> list[logging.LogRecord]:
        """ERROR (and worse) records the server logged at or after ``since`` (``time.time()``), oldest first.

        In-process servers only (the reference server, ``--ws-app``); an app
        already running keeps its log to itself, so this is empty for it.
        """
        handler = self._log_handler
        if not isinstance(handler, _LogHandler):
            return []
        return [r for r in list(handler.error_log) if r.created >= since]

    def log_lines(self, contains: str | None = None, *, last: int | None = None) -> list[str]:
        """Lines of this worker's server log, optionally only those containing ``contains``."""
        if self.log_path is None or not self.log_path.exists():
            return []
        if self._log_handler is not None:
            self._log_handler.flush()
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        if contains is not None:
            lines = [line for line in lines if contains in line]
        return lines[-last:] if last else lines

    def stop(self) -> None:
        """Shut the server down and detach the log."""
        try:
            if self.proxy is not None:
                self.proxy.stop()
                self.proxy = None
            if self._stop is not None:
                self._stop()
                self._stop = None
        finally:
            if isinstance(self.faults, FaultControl):
                self.faults.close()  # its HTTP client; the proxy's control goes with the proxy
            if self._log_handler is not None:
                _detach(self._log_handler)
                self._log_handler = None


def load_asgi_app(spec: str) -> Any:
    """Import ``module:attr`` (attr may be dotted, or a factory called with no arguments)."""
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ServerStartError(
            f"--ws-app {spec!r}: cannot import module {module_name!r}: {exc}; "
            "check the name and that the project is installed or on sys.path (rootdir)"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ServerStartError(
                f"--ws-app {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(obj):
        raise ServerStartError(f"--ws-app {spec!r} is not an ASGI application (not callable)")
    return obj


# ----------------------------------------------------------------- plain uvicorn on a thread


def bind_loopback(port: int = 0) -> socket.socket:
    """A listening TCP socket on ``127.0.0.1:port`` (0: ephemeral; read it back with getsockname).

    Created with ``proto=IPPROTO_TCP`` because asyncio sets ``TCP_NODELAY``
    only on sockets whose proto says TCP (accepted sockets inherit it):
    without it Nagle's algorithm and the peer's delayed ACK add about 40 ms
    to keep-alive HTTP answers.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServerStartError(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; use port 0 (ephemeral) "
            "or stop the process holding the port"
        ) from exc
    return sock


def plain_uvicorn_config(app: Any, **overrides: Any) -> uvicorn.Config:
    """uvicorn's config for an app under test: logging left to the caller, no access log.

    ``lifespan="auto"`` (apps without a lifespan handler are fine), the
    ``websockets-sansio`` WebSocket implementation, a 5 s graceful shutdown;
    ``overrides`` are passed to :class:`uvicorn.Config` as they are.
    """
    options: dict[str, Any] = {
        "lifespan": "auto",
        "log_config": None,
        "access_log": False,
        "ws": _APP_WS_IMPLEMENTATION,
        "timeout_graceful_shutdown": 5,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def _probe_uvicorn_startup() -> None:
    # UvicornThread signals readiness from an override of Server.startup(sockets=...).
    try:
        parameters = inspect.signature(uvicorn.Server.startup).parameters
    except (AttributeError, TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    if "sockets" not in parameters or not inspect.iscoroutinefunction(uvicorn.Server.startup):
        raise ServerStartError(
            f"uvicorn {uvicorn.__version__} has no coroutine Server.startup(sockets=...), which "
            "the harness's server thread overrides to know when the app is up; install a uvicorn "
            "version that has it (0.35 to 0.55 do: pip install 'uvicorn>=0.35,<0.56')"
        )


class _SignallingServer(uvicorn.Server):
    """Plain ``uvicorn.Server`` that sets ``ready`` once its startup finished (or failed)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self._ready.set()


class UvicornThread:
    """Plain uvicorn serving ``config`` on its own thread and event loop, on a bound socket.

    ``start(timeout)`` returns once the app's startup (lifespan) completed
    and the socket is served, or raises :class:`ServerStartError` with the
    startup error; ``stop(timeout)`` shuts it down gracefully (uvicorn closes
    live WebSockets with 1012), forcing it after the deadline.  The socket
    is owned by the thread from ``start`` on.
    """

    def __init__(self, config: uvicorn.Config, sock: socket.socket, *, name: str = "harness-server") -> None:
        _probe_uvicorn_startup()
        self.sock = sock
        self.name = name
        self._ready = threading.Event()
        self.server = _SignallingServer(config, self._ready)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The port the socket listens on."""
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            self._error = exc
        finally:
            self._ready.set()  # a failure before startup() must not leave start() waiting

    def start(self, timeout: float = 15.0) -> None:
        """Start serving; return once it is up (see the class docstring)."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.server.should_exit = True
            raise ServerStartError(
                f"{self.name} did not start within {timeout:.0f} s on port {self.port}; "
                "check its log for a hanging startup (lifespan) step"
            )
        if not self.server.started:
            self._thread.join(timeout)
            raise ServerStartError(
                f"{self.name} failed to start on port {self.port}: {self._error!r}"
            ) from self._error

    def stop(self, timeout: float = 15.0) -> None:
        """Shut down gracefully within ``timeout``, then force; re-raise a crash of the server."""
        if self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(5)
        self._thread = None
        if self._error is not None and not isinstance(self._error, (SystemExit, KeyboardInterrupt)):
            raise HarnessError(f"{self.name} crashed: {self._error!r}") from self._error


# ----------------------------------------------------------------- starting the server under test


def start_server(config: WsConfig, workdir: Path, *, startup_timeout: float = 20.0) -> ServerUnderTest:
    """Start (or attach to) the server the config names; the caller calls ``stop()``."""
    if config.base_url:
        # The app's own /__harness (it mounts FaultMiddleware) when a token is given, else
        # the fault proxy in front of it: an app in any language needs no harness code.
        token = config.harness_token
        external = ServerUnderTest(config.base_url.rstrip("/"), config, "external")
        external.proxy = _start_proxy(config, config.base_url)
        if token:
            external.faults = FaultControl(config.base_url, token)
        elif external.proxy is not None:
            external.faults = ProxyFaultControl(external.proxy)
        return external
    if config.app:
        return _start_app(config, workdir, startup_timeout)
    return _start_reference(config, workdir, startup_timeout)


def _start_app(config: WsConfig, workdir: Path, startup_timeout: float) -> ServerUnderTest:
    app = load_asgi_app(config.app or "")
    token = config.harness_token or secrets.token_urlsafe(16)
    middleware = FaultMiddleware(
        app,
        ws_path=config.ws_path,
        token=token,
        type_key=config.type_key,
    )
    wid = worker_id()
    log_path = workdir / f"server-{wid}.log"
    handler = _attach_log(log_path, ("uvicorn", "harness.asgi"))
    sock = bind_loopback()
    thread = UvicornThread(plain_uvicorn_config(middleware), sock, name=f"ws-app-{wid}")
    http_url = thread.url
    _start_logged(thread.start, startup_timeout, config.app or "", http_url, log_path, handler)
    started = ServerUnderTest(
        http_url,
        config,
        "app",
        log_path=log_path,
        faults=FaultControl(http_url, token),
        app=app,
        middleware=middleware,
        _stop=thread.stop,
        _log_handler=handler,
    )
    return _with_proxy(started)


def _start_reference(config: WsConfig, workdir: Path, startup_timeout: float) -> ServerUnderTest:
    from reference_server.app import create_app
    from reference_server.runner import NovaUvicornServer, ServerThread, uvicorn_config
    from reference_server.settings import Settings

    wid = worker_id()
    log_path = workdir / f"server-{wid}.log"
    handler = _attach_log(log_path, ("uvicorn", "reference_server", "harness.asgi"))
    sock = bind_loopback()
    port = int(sock.getsockname()[1])
    http_url = f"http://127.0.0.1:{port}"
    token = config.harness_token or secrets.token_urlsafe(16)
    settings = Settings(
        host="127.0.0.1",
        port=port,
        frontend_port=None,
        db=workdir / f"nova-{wid}.db",
        test_mode=True,
        test_token=token,
    )
    app = create_app(settings)  # test mode: handshakes go through FaultMiddleware (install_test_mode)
    hub = app.state.hub
    server = NovaUvicornServer(
        uvicorn_config(
            app, max_message_bytes=settings.max_message_bytes, log_level="info", configure_logging=False
        ),
        before_shutdown=lambda: hub.close_all(1001, "server shutting down"),
    )
    thread = ServerThread(server, sock, name=f"nova-server-{wid}")
    _start_logged(thread.start, startup_timeout, "reference server", http_url, log_path, handler)
    started = ServerUnderTest(
        http_url,
        config,
        "reference",
        log_path=log_path,
        faults=FaultControl(http_url, token),
        app=app,
        _stop=thread.stop,
        _log_handler=handler,
    )
    return _with_proxy(started)


def _start_logged(
    start: Callable[[float], None],
    timeout: float,
    what: str,
    http_url: str,
    log_path: Path,
    handler: logging.Handler,
) -> None:
    """Run ``start(timeout)``; on failure detach the log and raise ServerStartError with its tail."""
    try:
        start(timeout)
    except (ServerStartError, RuntimeError, TimeoutError) as exc:
        handler.flush()
        _detach(handler)
        raise ServerStartError(
            f"the server under test ({what}) failed to start on {http_url}: "
            f"{exc}\nlast lines of {log_path}:\n{_tail(log_path)}"
        ) from exc


def _with_proxy(started: ServerUnderTest) -> ServerUnderTest:
    try:
        started.proxy = _start_proxy(started.config, started.http_url)
    except BaseException:
        started.stop()
        raise
    return started


def _start_proxy(config: WsConfig, upstream_url: str) -> FaultProxy | None:
    """A fault proxy in front of ``upstream_url`` (plain http only), unless turned off."""
    if not config.proxy:
        return None
    parsed = urlsplit(upstream_url)
    if parsed.scheme != "http" or parsed.hostname is None:
        return None  # TLS would hide the HTTP upgrade and frames the proxy understands
    return FaultProxy(
        upstream=(parsed.hostname, parsed.port or 80), seed=config.seed, ws_path=config.ws_path
    ).start()


# ----------------------------------------------------------------- the per-worker log


#: How many ERROR records a server keeps for the tests to look at.
_ERRORS_KEPT = 1000


class _LogHandler(logging.FileHandler):
    """The server log's file handler, remembering the loggers it is attached to and its errors."""

    loggers: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The latest ERROR (and worse) records, for ServerUnderTest.error_records.
        self.error_log: deque[logging.LogRecord] = deque(maxlen=_ERRORS_KEPT)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.error_log.append(record)
        super().emit(record)


def _attach_log(log_path: Path, loggers: Iterable[str]) -> logging.Handler:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = _LogHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.setLevel(logging.INFO)
    handler.loggers = tuple(loggers)
    # The handler sits on "uvicorn" only: "uvicorn.error" propagates to it (a handler on
    # both would write each line twice), but its level must let INFO through.
    for name in (*handler.loggers, "uvicorn.error"):
        logger = logging.getLogger(name)
        if name in handler.loggers:
            logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    return handler


def _detach(handler: logging.Handler) -> None:
    for name in getattr(handler, "loggers", ()):
        logging.getLogger(name).removeHandler(handler)
    handler.close()


def _tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join("  " + line for line in lines[-n:]) or "  (log is empty)"
