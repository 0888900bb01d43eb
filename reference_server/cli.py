"""Command line: ``nova-ws serve`` / ``python -m reference_server`` and ``... schema``.

Exit status of ``serve``:

- 0: stopped by SIGTERM or SIGINT (Ctrl-C) after a clean shutdown: every
  WebSocket was sent 1001 (going away), peers that stopped reading were
  aborted after ``--shutdown-timeout``, the database was closed.
- 1: cannot listen (the port is taken, the address is not local).
- 2: invalid settings (flags or ``NOVA_*`` environment); nothing started.
- 3: the application failed to start (uvicorn's lifespan start-up failure, or
  ``--test-mode`` without the harness's fault middleware installed).
- 130: interrupted before serving, or a second SIGINT cut the shutdown short.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from .runner import (
    KEEP_ALIVE_TIMEOUT_S,
    MAX_REQUEST_HEAD_BYTES,
    REQUEST_HEAD_TIMEOUT_S,
    SHUTDOWN_TIMEOUT_S,
    WS_PING_INTERVAL_S,
    WS_PING_TIMEOUT_S,
)
from .settings import Settings
from .testmode import FaultShimUnavailable

__all__ = [
    "EXIT_CANNOT_LISTEN",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID_SETTINGS",
    "EXIT_OK",
    "EXIT_STARTUP_FAILED",
    "PLUGIN_COMMANDS_GROUP",
    "Deadlines",
    "build_parser",
    "deadlines_from_args",
    "main",
    "plugin_commands",
    "serve",
]


#: Exit statuses of ``serve`` (the module docstring says when each happens).
EXIT_OK = 0
EXIT_CANNOT_LISTEN = 1
EXIT_INVALID_SETTINGS = 2
EXIT_STARTUP_FAILED = 3
EXIT_INTERRUPTED = 130

_EXIT_STATUS_HELP = """\
exit status: 0 stopped by SIGTERM/SIGINT after a clean shutdown (WebSockets sent 1001);
1 cannot listen; 2 invalid settings; 3 the application failed to start;
130 interrupted before serving, or a second SIGINT cut the shutdown short"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nova-ws",
        description="The Nova reference WebSocket server and its tools.",
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser(
        "serve",
        help="run the reference server (the default command)",
        epilog=_EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _serve_args(serve)
    schema = sub.add_parser("schema", help="print the protocol's JSON Schema")
    schema.add_argument("--indent", type=int, default=2)
    for name, entry in sorted(plugin_commands().items()):
        # Listed for --help only: main() hands the command line to the plugin's own parser.
        module = entry.value.split(":")[0]
        sub.add_parser(name, help=f"provided by {module}: nova-ws {name} --help", add_help=False)
    return parser


#: Entry point group of ``nova-ws`` subcommands that live in other packages
#: (``nova-ws load`` is the harness's): each names a ``main(argv) -> int``.
PLUGIN_COMMANDS_GROUP = "nova_ws.commands"


def plugin_commands() -> dict[str, EntryPoint]:
    """The subcommands other installed packages add to ``nova-ws``, by name.

    Found through the :data:`PLUGIN_COMMANDS_GROUP` entry point group, so this
    package never imports them; the built-in ``serve`` and ``schema`` win a
    name clash.
    """
    return {
        ep.name: ep
        for ep in entry_points(group=PLUGIN_COMMANDS_GROUP)
        if ep.name not in ("serve", "schema")
    }


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="interface to bind (default 127.0.0.1; env NOVA_HOST)")
    p.add_argument("--port", type=int, help="API/WebSocket port (default 8000; 0 = ephemeral)")
    p.add_argument(
        "--frontend-port",
        type=int,
        help="port serving the browser page on its own origin (default 5173; -1 = off)",
    )
    p.add_argument("--db", type=Path, help="SQLite database path (default nova.db; env NOVA_DB)")
    p.add_argument(
        "--test-mode",
        action="store_true",
        default=None,
        help="enable the /__harness fault control API and the page's test hooks",
    )
    p.add_argument("--test-token", help="token the /__harness API requires (default: random)")
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    limits = p.add_argument_group(
        "deadlines and limits",
        "what a peer starts and never finishes is closed after these; times in seconds",
    )
    limits.add_argument(
        "--request-head-timeout",
        type=_positive_seconds,
        metavar="S",
        help=f"seconds a connection has to send a complete request head, from its opening or "
        f"the end of the previous response; then it is closed, with 408 if it sent part of one "
        f"(default {REQUEST_HEAD_TIMEOUT_S:g})",
    )
    limits.add_argument(
        "--max-request-head-bytes",
        type=int,
        metavar="N",
        help=f"largest WebSocket upgrade request head; bigger gets 431 "
        f"(default {MAX_REQUEST_HEAD_BYTES}, at least 1024)",
    )
    limits.add_argument(
        "--keep-alive-timeout",
        type=int,
        metavar="S",
        help=f"idle seconds allowed between HTTP requests on one connection "
        f"(default {KEEP_ALIVE_TIMEOUT_S})",
    )
    limits.add_argument(
        "--ws-ping-interval",
        type=_seconds_or_off,
        metavar="S",
        help=f"seconds between the server's WebSocket pings; 0 = no pings "
        f"(default {WS_PING_INTERVAL_S:g})",
    )
    limits.add_argument(
        "--ws-ping-timeout",
        type=_seconds_or_off,
        metavar="S",
        help=f"seconds a peer has to answer a ping (one stuck mid-frame cannot) before it is "
        f"closed 1011; 0 = wait forever (default {WS_PING_TIMEOUT_S:g})",
    )
    limits.add_argument(
        "--shutdown-timeout",
        type=_positive_seconds,
        metavar="S",
        help=f"seconds shutdown waits for close frames (1001) to be delivered before aborting "
        f"peers that stopped reading (default {SHUTDOWN_TIMEOUT_S:g})",
    )


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _seconds_or_off(text: str) -> float | None:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds >= 0 (0 = off), got {text!r}"
        )
    return value or None


@dataclass(frozen=True)
class Deadlines:
    """The runner's deadlines and limits for one ``serve`` (see :mod:`reference_server.runner`)."""

    request_head_timeout: float = REQUEST_HEAD_TIMEOUT_S
    max_request_head_bytes: int = MAX_REQUEST_HEAD_BYTES
    keep_alive_timeout: int = KEEP_ALIVE_TIMEOUT_S
    ws_ping_interval: float | None = WS_PING_INTERVAL_S
    ws_ping_timeout: float | None = WS_PING_TIMEOUT_S
    shutdown_timeout: float = SHUTDOWN_TIMEOUT_S

    def config_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~reference_server.runner.uvicorn_config`."""
        options = asdict(self)
        del options["shutdown_timeout"]
        return options


#: Flag (argparse dest) -> the Settings field that would hold it.
_DEADLINE_SETTINGS = {
    "request_head_timeout": "request_head_timeout_s",
    "max_request_head_bytes": "max_request_head_bytes",
    "keep_alive_timeout": "keep_alive_timeout_s",
    "ws_ping_interval": "ws_ping_interval_s",
    "ws_ping_timeout": "ws_ping_timeout_s",
    "shutdown_timeout": "shutdown_timeout_s",
}


def deadlines_from_args(args: argparse.Namespace, settings: Settings) -> Deadlines:
    """Each deadline from its flag, else from ``settings`` (when it has the field), else the default."""
    values: dict[str, Any] = {}
    for dest, setting in _DEADLINE_SETTINGS.items():
        flag = getattr(args, dest, None)
        if flag is not None:
            values[dest] = flag
        elif hasattr(settings, setting):
            values[dest] = getattr(settings, setting)
            if dest.startswith("ws_ping_"):
                values[dest] = values[dest] or None  # 0 = off, as on the command line
    if values.get("max_request_head_bytes", MAX_REQUEST_HEAD_BYTES) < 1024:
        raise ValueError("max_request_head_bytes must be at least 1024")
    if values.get("keep_alive_timeout", KEEP_ALIVE_TIMEOUT_S) < 1:
        raise ValueError("keep_alive_timeout must be at least 1 second")
    return Deadlines(**values)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    for name in ("host", "port", "db", "test_mode", "test_token"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    fport = getattr(args, "frontend_port", None)
    if fport is not None:
        overrides["frontend_port"] = None if fport < 0 else fport
    return Settings(**overrides)  # type: ignore[arg-type]


def serve(settings: Settings, log_level: str = "info", deadlines: Deadlines | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; return the exit status (see the module docstring)."""
    from .app import create_app
    from .runner import NovaUvicornServer, ServerThread, bind_socket, uvicorn_config
    from .web import frontend_app

    deadlines = deadlines or Deadlines()
    app = create_app(settings)  # before binding: a test mode that cannot start leaves nothing running
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sock = bind_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    front_thread: ServerThread | None = None
    if settings.frontend_port is not None:
        fsock = bind_socket(settings.host, settings.frontend_port)
        fport = fsock.getsockname()[1]
        front_server = NovaUvicornServer(
            uvicorn_config(
                frontend_app(settings, api_port=port),
                max_message_bytes=1024,
                log_level="warning",
                **deadlines.config_options(),
            ),
            shutdown_timeout=deadlines.shutdown_timeout,
        )
        front_thread = ServerThread(front_server, fsock, name="nova-frontend")
        front_thread.start()
        print(f"Nova page on http://{_host(settings.host)}:{fport}/", flush=True)
    server = NovaUvicornServer(
        uvicorn_config(
            app,
            max_message_bytes=settings.max_message_bytes,
            log_level=log_level,
            **deadlines.config_options(),
        ),
        before_shutdown=lambda: app.state.hub.close_all(1001, "server shutting down"),
        shutdown_timeout=deadlines.shutdown_timeout,
    )
    print(f"Nova server listening on http://{_host(settings.host)}:{port}", flush=True)
    if settings.test_mode:
        print(f"Test mode: /__harness enabled, X-Harness-Token: {settings.test_token}", flush=True)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        if front_thread is not None:
            front_thread.stop()
    return EXIT_INTERRUPTED if server.forced else EXIT_OK


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("serve", "schema"):
        plugins = plugin_commands()
        if argv[0] in plugins:
            command: Callable[[list[str]], int] = plugins[argv[0]].load()
            return int(command(argv[1:]))
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")  # serve is the default command; bare --help lists the commands
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        from .protocol import json_schema

        print(json.dumps(json_schema(), indent=args.indent))
        return 0
    try:
        settings = settings_from_args(args)
        deadlines = deadlines_from_args(args, settings)
    except (ValidationError, SettingsError, ValueError) as exc:  # show the settings errors plainly
        print(f"nova-ws: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_INVALID_SETTINGS
    try:
        return serve(settings, log_level=args.log_level, deadlines=deadlines)
    except FaultShimUnavailable as exc:
        print(f"nova-ws: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    except OSError as exc:
        print(f"nova-ws: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signal, or after it
        print("nova-ws: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
