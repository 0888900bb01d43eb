"""The command line: ``python -m reference_server`` / ``nova-ws``.

Spec: ``schema`` prints the protocol's JSON Schema; ``--help`` documents the
commands and the serve options; invalid settings (flags or ``NOVA_*``
environment) exit with status 2 and a message naming the setting, without
starting anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reference_server import cli
from reference_server.cli import main
from reference_server.protocol import json_schema


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m reference_server ARGS`` in a subprocess, bounded."""
    return subprocess.run(
        [sys.executable, "-m", "reference_server", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_schema_command_prints_the_protocol_json_schema() -> None:
    result = _run("schema")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json_schema()


def test_schema_indent_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--indent", "0"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == json_schema()
    assert "\n  " not in out


def test_help_lists_commands_and_serve_options() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for word in ("serve", "schema"):
        assert word in result.stdout
    serve = _run("serve", "--help")
    assert serve.returncode == 0
    for option in ("--host", "--port", "--frontend-port", "--db", "--test-mode", "--test-token"):
        assert option in serve.stdout, option


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--port", "70000"], {}, "port"),
        (["--port", "-5"], {}, "port"),
        (["--frontend-port", "99999"], {}, "frontend_port"),
        ([], {"NOVA_DB_SYNCHRONOUS": "sometimes"}, "db_synchronous must be one of OFF, NORMAL, FULL, EXTRA"),
        ([], {"NOVA_API_KEYS": "{}"}, "api_keys is empty"),
        ([], {"NOVA_API_KEYS": "not json"}, "api_keys"),
        ([], {"NOVA_AUTH_TIMEOUT_MS": "0"}, "auth_timeout_ms"),
    ],
)
def test_invalid_settings_exit_2_naming_the_setting(
    argv: list[str],
    env: dict[str, str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nova-ws: invalid settings:")
    assert needle in err


def test_invalid_settings_exit_2_from_the_real_entry_point() -> None:
    result = _run("--port", "70000")
    assert result.returncode == 2
    assert "invalid settings" in result.stderr and "port" in result.stderr
    assert "listening" not in result.stdout


def test_unknown_option_is_an_argparse_error() -> None:
    result = _run("serve", "--no-such-option")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-option" in result.stderr


def _fake_command(argv: list[str]) -> int:
    print("fake command got", argv)
    return 7


def test_a_plugin_command_gets_the_rest_of_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``nova-ws NAME ...`` runs the ``nova_ws.commands`` entry point NAME with the rest, and returns its status."""
    from importlib.metadata import EntryPoint

    fake = EntryPoint(name="fake", value=f"{__name__}:_fake_command", group=cli.PLUGIN_COMMANDS_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [fake] if group == cli.PLUGIN_COMMANDS_GROUP else [])
    assert cli.main(["fake", "--clients", "3"]) == 7
    assert "fake command got ['--clients', '3']" in capsys.readouterr().out
    assert "provided by" in cli.build_parser().format_help() and "fake" in cli.build_parser().format_help()


def test_a_plugin_cannot_shadow_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point named like a built-in command is ignored: ``serve`` stays the server's."""
    from importlib.metadata import EntryPoint

    fake = EntryPoint(name="serve", value=f"{__name__}:_fake_command", group=cli.PLUGIN_COMMANDS_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [fake])
    assert "serve" not in cli.plugin_commands()


def test_the_installed_load_command_is_listed() -> None:
    """The harness's ``load`` command is registered through the entry point group (pyproject.toml)."""
    assert "load" in cli.plugin_commands()
