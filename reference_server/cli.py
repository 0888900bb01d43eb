"""Command line: ``nova-ws serve`` / ``python -m reference_server`` and ``... schema``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from .settings import Settings

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nova-ws",
        description="The Nova reference WebSocket server and its tools.",
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the reference server (the default command)")
    _serve_args(serve)
    schema = sub.add_parser("schema", help="print the protocol's JSON Schema")
    schema.add_argument("--indent", type=int, default=2)
    return parser


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
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


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


def serve(settings: Settings, log_level: str = "info") -> None:
    from .app import create_app
    from .runner import NovaUvicornServer, ServerThread, bind_socket, uvicorn_config
    from .web import frontend_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = bind_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    front_thread: ServerThread | None = None
    if settings.frontend_port is not None:
        fsock = bind_socket(settings.host, settings.frontend_port)
        fport = fsock.getsockname()[1]
        front_server = NovaUvicornServer(
            uvicorn_config(frontend_app(settings, api_port=port), max_message_bytes=1024, log_level="warning")
        )
        front_thread = ServerThread(front_server, fsock, name="nova-frontend")
        front_thread.start()
        print(f"Nova page on http://{_host(settings.host)}:{fport}/", flush=True)
    app = create_app(settings)
    server = NovaUvicornServer(
        uvicorn_config(app, max_message_bytes=settings.max_message_bytes, log_level=log_level),
        before_shutdown=lambda: app.state.hub.close_all(1001, "server shutting down"),
    )
    print(f"Nova server listening on http://{_host(settings.host)}:{port}", flush=True)
    if settings.test_mode:
        print(f"Test mode: /__harness enabled, X-Harness-Token: {settings.test_token}", flush=True)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        if front_thread is not None:
            front_thread.stop()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")  # serve is the default command; bare --help lists the commands
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        from .protocol import json_schema

        print(json.dumps(json_schema(), indent=args.indent))
        return 0
    try:
        settings = settings_from_args(args)
    except (ValidationError, SettingsError, ValueError) as exc:  # show the settings errors plainly
        print(f"nova-ws: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    try:
        serve(settings, log_level=args.log_level)
    except OSError as exc:
        print(f"nova-ws: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
