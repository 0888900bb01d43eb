"""Settings validation that guards the server: the test token and the admission caps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from reference_server.settings import Settings


@pytest.mark.parametrize("token", ["", "   ", "\t\n"], ids=["empty", "spaces", "whitespace"])
def test_test_mode_refuses_an_empty_or_blank_token_naming_the_fix(token: str) -> None:
    with pytest.raises(ValidationError, match="omit test_token .* to get a random one"):
        Settings(test_mode=True, test_token=token)


def test_an_empty_token_from_the_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVA_TEST_MODE", "1")
    monkeypatch.setenv("NOVA_TEST_TOKEN", "")
    with pytest.raises(ValidationError, match="test_token is empty"):
        Settings()


def test_the_cli_stops_before_serving_with_the_message(tmp_path: Path) -> None:
    """In a subprocess with a deadline: a CLI that did serve would otherwise never return."""
    args = ["--test-mode", "--test-token", "", "--port", "0", "--frontend-port", "-1"]
    result = subprocess.run(
        [sys.executable, "-m", "reference_server", *args, "--db", str(tmp_path / "nova.db")],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 2, result
    assert "test_token is empty" in result.stderr and "omit test_token" in result.stderr
    assert "listening" not in result.stdout


def test_without_the_token_test_mode_gets_a_random_one() -> None:
    first, second = Settings(test_mode=True), Settings(test_mode=True)
    assert first.test_token.strip() and first.test_token != second.test_token


def test_outside_test_mode_the_token_is_unused_and_not_checked() -> None:
    assert Settings(test_mode=False, test_token="").test_token == ""


def test_the_unauthenticated_caps_have_documented_defaults_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOVA_MAX_UNAUTHENTICATED_PER_ADDRESS", raising=False)
    monkeypatch.delenv("NOVA_MAX_UNAUTHENTICATED_TOTAL", raising=False)
    defaults = Settings()
    assert (defaults.max_unauthenticated_per_address, defaults.max_unauthenticated_total) == (64, 1024)
    monkeypatch.setenv("NOVA_MAX_UNAUTHENTICATED_PER_ADDRESS", "5")
    monkeypatch.setenv("NOVA_MAX_UNAUTHENTICATED_TOTAL", "7")
    configured = Settings()
    assert (configured.max_unauthenticated_per_address, configured.max_unauthenticated_total) == (5, 7)
    with pytest.raises(ValidationError, match="max_unauthenticated_total"):
        Settings(max_unauthenticated_total=0)
