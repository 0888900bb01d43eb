"""The server under test: the reference server, another project's ASGI app, or a running app.

One server per pytest session, so one per xdist worker.  In-process servers
run on their own thread and event loop, on a socket bound to
``127.0.0.1:0`` before start and read back, and log to a per-worker file;
a failed start raises :class:`ServerStartError` with the last log lines.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import WsConfig
from .control import FaultControl
from .errors import ServerStartError
from .proxy import FaultProxy

__all__ = ["ServerUnderTest", "load_asgi_app", "start_server", "worker_id"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    """

    http_url: str
    config: WsConfig
    kind: str
    log_path: Path | None = None
    faults: FaultControl | None = None
    app: Any = None
    proxy: FaultProxy | None = None
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
        """Whether the server offers the /__harness fault control API (reference server)."""
        return self.faults is not None

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
        """Shut the server down (closing sockets with 1001) and detach the log."""
        try:
            if self.proxy is not None:
                self.proxy.stop()
                self.proxy = None
            if self._stop is not None:
                self._stop()
                self._stop = None
        finally:
            if self.faults is not None:
                self.faults.close()
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


def _attach_log(log_path: Path) -> logging.Handler:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "reference_server"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    return handler


def _tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join("  " + line for line in lines[-n:]) or "  (log is empty)"


def start_server(config: WsConfig, workdir: Path, *, startup_timeout: float = 20.0) -> ServerUnderTest:
    """Start (or attach to) the server the config names; the caller calls ``stop()``."""
    if config.base_url:
        token = config.harness_token
        control = FaultControl(config.base_url, token) if token else None
        external = ServerUnderTest(config.base_url.rstrip("/"), config, "external", faults=control)
        external.proxy = _start_proxy(config, config.base_url)
        return external

    from reference_server.runner import NovaUvicornServer, ServerThread, bind_socket, uvicorn_config

    wid = worker_id()
    log_path = workdir / f"server-{wid}.log"
    handler = _attach_log(log_path)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    http_url = f"http://127.0.0.1:{port}"
    before_shutdown = None
    if config.app:
        try:
            app = load_asgi_app(config.app)
        except ServerStartError:
            sock.close()
            _detach(handler)
            raise
        kind = "app"
        token = config.harness_token
        max_size = 16 * 1024 * 1024
    else:
        from reference_server.app import create_app
        from reference_server.settings import Settings

        token = config.harness_token or secrets.token_urlsafe(16)
        settings = Settings(
            host="127.0.0.1",
            port=port,
            frontend_port=None,
            db=workdir / f"nova-{wid}.db",
            test_mode=True,
            test_token=token,
        )
        app = create_app(settings)
        kind = "reference"
        max_size = settings.max_message_bytes
        hub = app.state.hub
        before_shutdown = lambda: hub.close_all(1001, "server shutting down")
    server = NovaUvicornServer(
        uvicorn_config(app, max_message_bytes=max_size, log_level="info", configure_logging=False), before_shutdown=before_shutdown
    )
    thread = ServerThread(server, sock, name=f"nova-server-{wid}")
    try:
        thread.start(timeout=startup_timeout)
    except (RuntimeError, TimeoutError) as exc:
        handler.flush()
        _detach(handler)
        raise ServerStartError(
            f"the server under test ({config.app or 'reference server'}) failed to start on {http_url}: "
            f"{exc}\nlast lines of {log_path}:\n{_tail(log_path)}"
        ) from exc
    control = FaultControl(http_url, token) if token else None
    started = ServerUnderTest(
        http_url, config, kind, log_path=log_path, faults=control, app=app, _stop=thread.stop, _log_handler=handler
    )
    try:
        started.proxy = _start_proxy(config, http_url)
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
    return FaultProxy(upstream=(parsed.hostname, parsed.port or 80), seed=config.seed).start()


def _detach(handler: logging.Handler) -> None:
    for name in ("uvicorn", "uvicorn.error", "reference_server"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()

