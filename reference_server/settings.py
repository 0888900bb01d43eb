"""Server settings: one object, read from ``NOVA_*`` environment variables.

Resolution order: explicit keyword arguments (the CLI passes its flags this
way) > environment (``NOVA_PORT=9000``) > defaults.  Complex values (API keys,
origins) are JSON in the environment, e.g.
``NOVA_API_KEYS='{"my-key": ["read", "write"]}'``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .hosts import DEFAULT_ALLOWED_HOSTS, HostPolicy
from .logsafe import DEFAULT_REDACTED_PARAMS

__all__ = ["DEFAULT_API_KEYS", "Settings"]

#: API key -> permissions.  ``admin`` may publish to ``announcements`` and use
#: ``admin:*`` channels (see docs/protocol.md, "Access control").
DEFAULT_API_KEYS: dict[str, list[str]] = {
    "development": ["read", "write", "admin"],
    "valid-test-key": ["read", "write"],
}


class Settings(BaseSettings):
    """Every knob of the reference server.  Env prefix ``NOVA_``.

    Connections that have not authenticated yet are capped, per client
    address (``max_unauthenticated_per_address``, default 64) and in total
    (``max_unauthenticated_total``, default 1024).  Past either cap the
    server accepts the handshake and closes at once with 1013 (try again
    later), so a browser sees the code and backs off; the refusals are
    logged at WARNING once per 10 s with their count, not once each.  A
    connection stops counting when it authenticates or goes away.

    ``test_mode`` needs a ``test_token`` that is not empty or blank: leave it
    out to get a random one (printed at start-up).
    """

    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="Interface to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="API/WebSocket port; 0 = ephemeral.")
    frontend_port: int | None = Field(
        default=5173,
        ge=0,
        le=65535,
        description="Second port serving only the browser page (a different origin); None = off.",
    )
    api_keys: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_API_KEYS.items()},
        description="API key -> permissions.",
    )
    allowed_origins: list[str] = Field(
        default_factory=lambda: ["http://localhost:5173", "http://127.0.0.1:5173"],
        description="Browser origins allowed to open WebSockets, besides the server's own.",
    )
    max_message_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest frame accepted; bigger closes 1009."
    )
    rate_limit_per_second: float = Field(
        default=100.0, gt=0, description="Sustained messages per second per connection."
    )
    rate_limit_burst: int = Field(default=200, ge=1, description="Token-bucket burst size.")
    rate_limit_strikes: int = Field(
        default=20,
        ge=1,
        description="Messages refused with rate_limited before the connection is closed 1008.",
    )
    auth_timeout_ms: int = Field(
        default=10_000, ge=1, description="Time allowed between accept and `connect`; then 4002."
    )
    max_unauthenticated_per_address: int = Field(
        default=64,
        ge=1,
        description="Connections one client address may hold before authenticating; more close 1013.",
    )
    max_unauthenticated_total: int = Field(
        default=1024,
        ge=1,
        description="Connections all clients together may hold before authenticating; more close 1013.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_HOSTS),
        description=(
            "Host header names the server answers to, any port (a guard against DNS rebinding): "
            "host names or IP literals without a port, '*.example.com' for subdomains, '*' for any "
            "host. The bind address is always allowed. Others get 400 (NOVA_ALLOWED_HOSTS, a JSON list)."
        ),
    )
    log_redact_params: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REDACTED_PARAMS),
        description=(
            "Query parameters whose values every server log line shows as [REDACTED] "
            "(NOVA_LOG_REDACT_PARAMS, a JSON list)."
        ),
    )
    db: Path = Field(default=Path("nova.db"), description="SQLite database path (NOVA_DB).")
    db_synchronous: str = Field(
        default="NORMAL",
        description=(
            "SQLite synchronous mode. NORMAL (WAL) survives a killed process; "
            "FULL also survives power loss at some throughput cost."
        ),
    )
    test_mode: bool = Field(default=False, description="Enable /__harness fault control and test hooks.")
    test_token: str = Field(
        default_factory=lambda: secrets.token_urlsafe(16),
        description="Value of the X-Harness-Token header the /__harness API requires.",
    )
    outbound_queue_size: int = Field(
        default=1000, ge=1, description="Frames buffered per slow client before it is closed 1008."
    )
    recent_messages_limit: int = Field(default=50, ge=1, le=1000)

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        HostPolicy.build(value)  # a ValueError naming a malformed entry
        return value

    @field_validator("db_synchronous")
    @classmethod
    def _check_sync(cls, value: str) -> str:
        value = value.upper()
        if value not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(
                f"db_synchronous must be one of OFF, NORMAL, FULL, EXTRA; got {value!r}"
            )
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if not value:
            raise ValueError("api_keys is empty: no client could ever authenticate; add a key")
        return value

    @field_validator("test_token")
    @classmethod
    def _check_test_token(cls, value: str, info: ValidationInfo) -> str:
        # test_mode is declared first, so it is validated and in info.data by now.
        if info.data.get("test_mode") and not value.strip():
            raise ValueError(
                f"test_token is {'empty' if not value else 'blank'}, so with test_mode anyone "
                "who reaches the port could use the /__harness fault API with an empty "
                "X-Harness-Token; omit test_token (--test-token / NOVA_TEST_TOKEN) to get a "
                "random one, or set a secret value"
            )
        return value
