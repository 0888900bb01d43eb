"""Configuration of the harness: everything that names the app under test.

The reference app is the default; another project changes only what
differs.  Each setting resolves in the order CLI option > environment
variable > ini key > default (:func:`resolve_config`, a pure function).  The
``ws_config`` fixture returns the resolved :class:`WsConfig`; a project can
override that fixture to compute values in Python::

    @pytest.fixture(scope="session")
    def ws_config(ws_config):
        return ws_config.replace(api_key="my-key", test_ids={"auth_status": "login-state"})
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import ConfigurationError

__all__ = [
    "SETTINGS",
    "Mode",
    "Setting",
    "TestIds",
    "WsConfig",
    "resolve_config",
]

Mode = Literal["real", "synthetic"]

#: The placeholder of ``ws_path`` and ``ws_page_path`` patterns.
PLACEHOLDER = "{client_id}"


@dataclass(frozen=True)
class TestIds:
    """The test id of every element the helper reads or drives.

    An empty value means the app has no such element: UI actions skip that
    step (``publish(channel, content)`` on an app without a channel input
    only types the message), and a wait on it is refused with an error
    naming the setting.
    """

    __test__ = False  # not a pytest test class

    connection_status: str = "connection-status"
    reconnect_info: str = "reconnect-info"
    next_reconnect: str = "next-reconnect"
    error_details: str = "error-details"
    status_history: str = "status-history"
    status_history_entry: str = "status-history-entry"
    client_id: str = "client-id"
    client_metadata: str = "client-metadata"
    api_key_input: str = "api-key-input"
    authenticate_button: str = "authenticate-button"
    auth_status: str = "auth-status"
    channel_input: str = "channel-input"
    subscribe_button: str = "subscribe-button"
    channel_list: str = "channel-list"
    message_input: str = "message-input"
    publish_button: str = "publish-button"
    message_log: str = "message-log"
    reconnect_button: str = "reconnect-button"
    disconnect_button: str = "disconnect-button"

    def replace(self, **changes: str) -> TestIds:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigurationError(
                f"unknown test id name(s) {sorted(unknown)}; known: "
                f"{', '.join(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class WsConfig:
    """Resolved harness configuration (see docs/plugin-reference.md for each field)."""

    app: str | None = None
    base_url: str | None = None
    ws_path: str = "/debug/{client_id}"
    page_path: str = "/?client_id={client_id}"
    api_key: str = "valid-test-key"
    mode: Mode = "real"
    timeout: float = 5.0
    seed: int = 1234
    proxy: bool = True
    test_ids: TestIds = field(default_factory=TestIds)
    harness_token: str | None = None
    profile: str | None = None
    wait_for_socket: bool = True
    type_key: str = "type"
    frame_schema: str | None = None
    error_frame: str = '{"type": "error", "message": "{message}"}'
    reconnect_info_format: str = "Reconnection attempts: {n}"
    test_id_attribute: str = "data-testid"

    @property
    def profile_name(self) -> str:
        """The app profile in use: ``ws_profile``, else ``nova`` for the reference server, else ``generic``."""
        if self.profile:
            return self.profile
        return "generic" if (self.app or self.base_url) else "nova"

    def replace(self, **changes: Any) -> WsConfig:
        """A copy with ``changes``; ``test_ids`` may be a dict of the names to change."""
        ids = changes.get("test_ids")
        if isinstance(ids, Mapping):
            changes["test_ids"] = self.test_ids.replace(**ids)
        result = dataclasses.replace(self, **changes)
        _validate(result)
        return result

    def ws_url(self, http_url: str, client_id: str) -> str:
        """The WebSocket URL for ``client_id`` on a server at ``http_url``."""
        scheme, rest = http_url.split("://", 1)
        ws_scheme = "wss" if scheme == "https" else "ws"
        return f"{ws_scheme}://{rest.rstrip('/')}{self.ws_path.replace(PLACEHOLDER, client_id)}"

    def page_url(self, http_url: str, client_id: str) -> str:
        """The page URL for ``client_id`` on a server at ``http_url`` (patterns need no placeholder)."""
        return f"{http_url.rstrip('/')}{self.page_path.replace(PLACEHOLDER, client_id)}"

    @property
    def keyed_by_cookie(self) -> bool:
        """Whether the app's WebSocket URL carries no client id, so faults find the test's socket by cookie."""
        return PLACEHOLDER not in self.ws_path


def _validate(config: WsConfig) -> None:
    if config.mode not in get_args(Mode):
        raise ConfigurationError(
            f"ws mode must be one of {get_args(Mode)}, got {config.mode!r}; "
            "use 'synthetic' for apps without a cooperating server"
        )
    if config.timeout <= 0:
        raise ConfigurationError(f"ws timeout must be a positive number of seconds, got {config.timeout!r}")
    if config.app and config.base_url:
        raise ConfigurationError(
            "--ws-app and --ws-base-url are exclusive: one runs an ASGI app in-process, "
            "the other uses an app already running; pick one"
        )
    if config.app and ":" not in config.app:
        raise ConfigurationError(
            f"--ws-app must be 'module:attribute' (e.g. 'myproject.main:app'), got {config.app!r}"
        )
    if config.base_url and not config.base_url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"--ws-base-url must be an http(s) URL such as http://127.0.0.1:8000, got {config.base_url!r}"
        )
    for name, value in (("ws_path", config.ws_path), ("ws_page_path", config.page_path)):
        if not value.startswith("/"):
            raise ConfigurationError(f"{name} must be a path starting with '/', got {value!r}")
    if config.profile is not None and config.profile not in ("nova", "generic") and ":" not in config.profile:
        raise ConfigurationError(
            f"ws_profile must be 'nova', 'generic' or 'module:attribute' naming a profile of your own, "
            f"got {config.profile!r}"
        )
    if not config.type_key or any(not part for part in config.type_key.split(".")):
        raise ConfigurationError(
            f"ws_type_key must be a key or a dotted path such as 'type' or 'meta.kind', got {config.type_key!r}"
        )
    _check_error_frame(config.error_frame)
    if "{n}" not in config.reconnect_info_format:
        raise ConfigurationError(
            "ws_reconnect_info_format must contain '{n}' where the attempt count is shown, "
            f"e.g. 'Retries: {{n}}'; got {config.reconnect_info_format!r}"
        )
    if not config.test_id_attribute.strip():
        raise ConfigurationError("ws_test_id_attribute must name an HTML attribute, e.g. data-testid")
    if config.frame_schema is not None:
        frame_schema_paths(config.frame_schema)


def _check_error_frame(template: str) -> None:
    try:
        json.loads(template)
    except ValueError as exc:
        raise ConfigurationError(
            f"ws_error_frame must be a JSON frame template with '{{message}}' in a string, "
            f"e.g. {{\"type\": \"error\", \"message\": \"{{message}}\"}}; got {template!r}: {exc}"
        ) from None
    if "{message}" not in template:
        raise ConfigurationError(
            f"ws_error_frame must contain '{{message}}' where the error text goes; got {template!r}"
        )


def frame_schema_paths(value: str) -> dict[str, str]:
    """``ws_frame_schema`` as ``{"sent": path, "received": path}``.

    One path applies to both directions; ``sent=a.json, received=b.json``
    gives each direction its own (a direction left out is not validated).
    """
    value = value.strip()
    if "=" not in value:
        if not value:
            raise ConfigurationError("ws_frame_schema is empty: name a JSON Schema file, or leave it unset")
        return {"sent": value, "received": value}
    result: dict[str, str] = {}
    for item in value.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, path = item.partition("=")
        name = name.strip()
        if name in ("to_server", "sent"):
            name = "sent"
        elif name in ("to_client", "received"):
            name = "received"
        else:
            raise ConfigurationError(
                f"ws_frame_schema: unknown direction {name!r} in {value!r}; "
                "use 'sent=<file>, received=<file>' or one file for both"
            )
        if not path.strip():
            raise ConfigurationError(f"ws_frame_schema: no file given for {name!r} in {value!r}")
        result[name] = path.strip()
    return result


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _test_ids(text: str | list[str]) -> dict[str, str]:
    items = text if isinstance(text, list) else text.replace(",", "\n").splitlines()
    result: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"test id entries are name=value, got {item!r}")
        result[name.strip().replace("-", "_")] = value.strip()
    return result


@dataclass(frozen=True)
class Setting:
    """One configurable value: its field, CLI flag, env variable, ini key and parser."""

    field: str
    option: str
    env: str
    ini: str
    help: str
    parse: Callable[[Any], Any] = str


SETTINGS: tuple[Setting, ...] = (
    Setting("app", "--ws-app", "NOVA_WS_APP", "ws_app", "ASGI app under test as module:attr (default: the reference server)"),
    Setting("base_url", "--ws-base-url", "NOVA_WS_BASE_URL", "ws_base_url", "use an app already running at this http(s) URL"),
    Setting("ws_path", "--ws-path", "NOVA_WS_PATH", "ws_path", "WebSocket path pattern, {client_id} where the client id goes, if anywhere (default /debug/{client_id})"),
    Setting("page_path", "--ws-page-path", "NOVA_WS_PAGE_PATH", "ws_page_path", "page path pattern, {client_id} where the client id goes, if anywhere (default /?client_id={client_id})"),
    Setting("api_key", "--ws-api-key", "NOVA_WS_API_KEY", "ws_api_key", "API key tests authenticate with (default valid-test-key)"),
    Setting("mode", "--ws-mode", "NOVA_WS_MODE", "ws_mode", "real (default: faults happen on the server) or synthetic (window events)"),
    Setting("timeout", "--ws-timeout", "NOVA_WS_TIMEOUT", "ws_timeout", "default wait timeout in seconds (default 5)", float),
    Setting("seed", "--ws-seed", "NOVA_WS_SEED", "ws_seed", "seed of the page's randomness (jitter) (default 1234)", int),
    Setting("proxy", "--ws-proxy", "NOVA_WS_PROXY", "ws_proxy", "route the page's traffic through the fault proxy for network faults: true (default) or false", _bool),
    Setting("harness_token", "--ws-harness-token", "NOVA_WS_HARNESS_TOKEN", "ws_harness_token", "X-Harness-Token of an app already running in test mode"),
    Setting("test_ids", "--ws-test-ids", "NOVA_WS_TEST_IDS", "ws_test_ids", "test id overrides as name=value, comma separated; name= (empty) when the app has no such element", _test_ids),
    Setting("profile", "--ws-profile", "NOVA_WS_PROFILE", "ws_profile", "app profile: nova, generic or module:attr (default: nova for the reference server, generic otherwise)"),
    Setting("wait_for_socket", "--ws-wait-for-socket", "NOVA_WS_WAIT_FOR_SOCKET", "ws_wait_for_socket", "real mode: wait for the page's first open socket after loading: true (default) or false", _bool),
    Setting("type_key", "--ws-type-key", "NOVA_WS_TYPE_KEY", "ws_type_key", "key (dotted path allowed) that types a JSON frame (default type)"),
    Setting("frame_schema", "--ws-frame-schema", "NOVA_WS_FRAME_SCHEMA", "ws_frame_schema", "JSON Schema file every frame must match, or sent=FILE,received=FILE (generic profile; default: no validation)"),
    Setting("error_frame", "--ws-error-frame", "NOVA_WS_ERROR_FRAME", "ws_error_frame", "frame simulate_error pushes, {message} where the text goes (default {\"type\": \"error\", \"message\": \"{message}\"})"),
    Setting("reconnect_info_format", "--ws-reconnect-info-format", "NOVA_WS_RECONNECT_INFO_FORMAT", "ws_reconnect_info_format", "text of the reconnect info, {n} for the attempts (default 'Reconnection attempts: {n}')"),
    Setting("test_id_attribute", "--ws-test-id-attribute", "NOVA_WS_TEST_ID_ATTRIBUTE", "ws_test_id_attribute", "HTML attribute holding test ids (default data-testid)"),
)


def resolve_config(
    cli: Mapping[str, Any], env: Mapping[str, str], ini: Mapping[str, Any], base: WsConfig | None = None
) -> WsConfig:
    """Resolve every :data:`SETTINGS` entry: CLI > env > ini > default.

    ``cli`` and ``ini`` are keyed by field name (``None``/empty means unset);
    ``env`` is the process environment.  A value that does not parse raises
    :class:`ConfigurationError` naming where it came from.
    """
    config = base or WsConfig()
    changes: dict[str, Any] = {}
    for setting in SETTINGS:
        for source, value in (
            (setting.option, cli.get(setting.field)),
            (setting.env, env.get(setting.env)),
            (f"ini {setting.ini}", ini.get(setting.field)),
        ):
            if value is None or value == "" or value == []:
                continue
            try:
                changes[setting.field] = setting.parse(value) if isinstance(value, (str, list)) else value
            except ValueError as exc:
                raise ConfigurationError(f"{source}: invalid value {value!r}: {exc}") from None
            break
    return config.replace(**changes)
