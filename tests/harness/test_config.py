"""Configuration resolution: CLI > env > ini > default, and clear errors."""

from __future__ import annotations

import pytest

from harness.config import WsConfig, resolve_config
from harness.errors import ConfigurationError


def test_defaults_are_the_reference_app() -> None:
    config = resolve_config({}, {}, {})
    assert config == WsConfig()
    assert config.api_key == "valid-test-key"
    assert config.ws_url("http://127.0.0.1:9000", "abc") == "ws://127.0.0.1:9000/debug/abc"
    assert config.page_url("http://127.0.0.1:9000/", "abc") == "http://127.0.0.1:9000/?client_id=abc"


def test_cli_beats_env_beats_ini() -> None:
    ini = {"api_key": "from-ini", "timeout": "7", "mode": "synthetic"}
    env = {"NOVA_WS_API_KEY": "from-env", "NOVA_WS_TIMEOUT": "3"}
    cli = {"api_key": "from-cli"}
    config = resolve_config(cli, env, ini)
    assert config.api_key == "from-cli"
    assert config.timeout == 3.0
    assert config.mode == "synthetic"


def test_https_base_url_gives_wss() -> None:
    config = resolve_config({"base_url": "https://app.example.test"}, {}, {})
    assert config.ws_url(config.base_url or "", "c1") == "wss://app.example.test/debug/c1"


def test_test_ids_override_by_name() -> None:
    config = resolve_config({}, {"NOVA_WS_TEST_IDS": "auth-status=login-state, reconnect_info=retries"}, {})
    assert config.test_ids.auth_status == "login-state"
    assert config.test_ids.reconnect_info == "retries"
    assert config.test_ids.error_details == "error-details"


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"mode": "fake"}, "ws mode must be one of"),
        ({"timeout": "soon"}, "--ws-timeout: invalid value 'soon'"),
        ({"timeout": "-1"}, "positive number of seconds"),
        ({"app": "no_colon"}, "module:attribute"),
        ({"base_url": "localhost:8000"}, "http(s) URL"),
        ({"app": "a:b", "base_url": "http://x"}, "exclusive"),
        ({"ws_path": "ws"}, "starting with '/'"),
        ({"type_key": "a..b"}, "dotted path"),
        ({"error_frame": "{}"}, "{message}"),
        ({"reconnect_info_format": "Retries"}, "{n}"),
        ({"profile": "mine"}, "module:attribute"),
        ({"frame_schema": "up=a.json"}, "unknown direction"),
        ({"test_ids": "nonsense"}, "name=value"),
        ({"test_ids": "no_such_id=x"}, "unknown test id"),
    ],
)
def test_bad_values_name_the_problem(cli: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as info:
        resolve_config(cli, {}, {})
    assert message in str(info.value)


def test_replace_validates() -> None:
    with pytest.raises(ConfigurationError):
        WsConfig().replace(timeout=0)
    assert WsConfig().replace(test_ids={"auth_status": "x"}).test_ids.auth_status == "x"
