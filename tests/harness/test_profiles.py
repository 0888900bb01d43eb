"""The app seam without a browser: choosing a profile, the generic profile's settings, request keying.

Pure except :func:`profile_name_for`, which asks a tiny loopback HTTP server
on an ephemeral port what kind of app it is.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.app import (
    CLIENT_ID_COOKIE,
    AppProfile,
    GenericProfile,
    SchemaValidator,
    client_id_from_request,
    load_profile,
    profile_name_for,
    render_error_frame,
)
from harness.app.nova import NovaProfile
from harness.config import SETTINGS, WsConfig, frame_schema_paths, resolve_config
from harness.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "fixtures" / "apps" / "chat"
APP = "fixtures.apps.chat.app:app"

#: What the reference server's /health answers.
REFERENCE_HEALTH = {"status": "ok", "protocol_version": 1, "connections": 0}


# ------------------------------------------------------------------ load_profile


def test_the_reference_server_gets_the_nova_profile_by_default() -> None:
    profile = load_profile(WsConfig())
    assert isinstance(profile, NovaProfile)
    assert (profile.name, profile.page_hook, profile.match_in) == ("nova", True, "data")


def test_an_asgi_app_gets_the_generic_profile() -> None:
    profile = load_profile(WsConfig(app=APP))
    assert isinstance(profile, GenericProfile)
    assert (profile.name, profile.page_hook, profile.match_in, profile.validator) == (
        "generic",
        False,
        None,
        None,
    )


def test_an_app_already_running_that_is_not_the_reference_server_gets_the_generic_profile(
    refusing_url: str,
) -> None:
    assert isinstance(load_profile(WsConfig(base_url=refusing_url)), GenericProfile)


def test_ws_profile_generic_is_used_even_for_the_reference_server() -> None:
    profile = load_profile(WsConfig(profile="generic", type_key="meta.kind"))
    assert isinstance(profile, GenericProfile)
    assert profile.type_key == "meta.kind"


def test_ws_profile_nova_is_used_even_for_another_app() -> None:
    assert isinstance(load_profile(WsConfig(app=APP, profile="nova")), NovaProfile)


_USER_PROFILE = '''
import json


class Mine:
    name = "mine"
    page_hook = False
    type_key = "kind"
    match_in = None
    validator = None

    def error_frame(self, message, client_id):
        return json.dumps({"kind": "oops", "text": message, "to": client_id})

    def is_error_frame(self, frame, message):
        return isinstance(frame, dict) and frame.get("text") == message

    def client(self, url, client_id, *, timeout):
        raise NotImplementedError


profile = Mine()


def make(config):
    made = Mine()
    made.type_key = config.type_key
    return made


class Configured(Mine):
    """A profile class whose constructor takes the WsConfig."""

    def __init__(self, config):
        self.type_key = config.type_key


class Incomplete:
    name = "half"
    page_hook = False


incomplete = Incomplete()
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of an importable module of the user's own holding profiles (see ``_USER_PROFILE``)."""
    name = f"user_profile_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(_USER_PROFILE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield name
    finally:
        sys.modules.pop(name, None)


def test_a_profile_object_of_the_users_own_is_loaded_by_module_and_attribute(user_module: str) -> None:
    profile = load_profile(WsConfig(app=APP, profile=f"{user_module}:profile"))
    assert isinstance(profile, AppProfile)
    assert profile.name == "mine"
    assert json.loads(profile.error_frame("boom", "c1")) == {"kind": "oops", "text": "boom", "to": "c1"}


def test_a_callable_of_the_users_own_is_called_with_the_config(user_module: str) -> None:
    config = WsConfig(app=APP, profile=f"{user_module}:make", type_key="meta.kind")
    profile = load_profile(config)
    assert profile.name == "mine"
    assert profile.type_key == "meta.kind"


def test_a_profile_class_taking_the_config_is_instantiated_with_it(user_module: str) -> None:
    """A class is a callable taking the WsConfig, though its class attributes look like a profile."""
    config = WsConfig(app=APP, profile=f"{user_module}:Configured", type_key="meta.kind")
    profile = load_profile(config)
    assert not isinstance(profile, type), "the class itself was returned instead of an instance"
    assert profile.type_key == "meta.kind"
    assert json.loads(profile.error_frame("boom", "c1"))["text"] == "boom"


def test_an_object_that_is_not_a_profile_is_refused_naming_what_it_lacks(user_module: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_profile(WsConfig(app=APP, profile=f"{user_module}:incomplete"))
    message = str(info.value)
    assert f"{user_module}:incomplete" in message and "is not an app profile" in message
    for lacking in ("type_key", "match_in", "validator", "error_frame", "is_error_frame", "client"):
        assert lacking in message, lacking
    assert "page_hook" not in message.split("lacks", 1)[1]


def test_a_module_that_cannot_be_imported_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_profile(WsConfig(app=APP, profile="no_such_profile_module:profile"))
    message = str(info.value)
    assert "no_such_profile_module" in message and "cannot load it" in message
    assert "module:attribute" in message


def test_a_missing_attribute_is_refused_naming_it(user_module: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_profile(WsConfig(app=APP, profile=f"{user_module}:nothing_here"))
    assert "nothing_here" in str(info.value) and "cannot load it" in str(info.value)


# ------------------------------------------------------------------ profile_name_for


class _Health:
    """A loopback HTTP server on an ephemeral port answering ``/health`` with ``body``."""

    def __init__(self, body: bytes, status: int = 200, content_type: str = "application/json") -> None:
        self.requests: list[str] = []
        answer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer.requests.append(self.path)
                self.send_response(status if self.path == "/health" else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads self.requests, not a log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps shutdown() quick; requests are served as they come either way.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, name="health", daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def health() -> Iterator[Callable[..., _Health]]:
    """Start :class:`_Health` servers: ``health(body_bytes, status=200)``; stopped at teardown."""
    started: list[_Health] = []

    def start(body: bytes, status: int = 200, content_type: str = "application/json") -> _Health:
        server = _Health(body, status, content_type)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """The URL of a loopback port that is bound but not listening: connections are refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_an_app_answering_health_like_the_reference_server_is_nova(health: Callable[..., _Health]) -> None:
    server = health(json.dumps(REFERENCE_HEALTH).encode())
    config = WsConfig(base_url=server.url)
    assert profile_name_for(config) == "nova"
    assert isinstance(load_profile(config), NovaProfile)
    assert server.requests[0] == "/health"


def test_the_served_url_is_asked_when_given(health: Callable[..., _Health], refusing_url: str) -> None:
    server = health(json.dumps(REFERENCE_HEALTH).encode())
    assert profile_name_for(WsConfig(base_url=refusing_url), server.url) == "nova"


@pytest.mark.parametrize(
    ("body", "status", "content_type"),
    [
        (b'{"status": "ok"}', 200, "application/json"),
        (b'{"healthy": true, "protocol_version": 1}', 200, "application/json"),
        (b'["ok"]', 200, "application/json"),
        (b"OK", 200, "text/plain"),
        (b"<h1>Not Found</h1>", 404, "text/html"),
    ],
    ids=["no-protocol-version", "no-status", "not-an-object", "not-json", "no-health-route"],
)
def test_an_app_answering_health_otherwise_is_generic(
    health: Callable[..., _Health], body: bytes, status: int, content_type: str
) -> None:
    server = health(body, status, content_type)
    assert profile_name_for(WsConfig(base_url=server.url)) == "generic"
    assert server.requests == ["/health"]


def test_an_unreachable_app_is_generic(refusing_url: str) -> None:
    assert profile_name_for(WsConfig(base_url=refusing_url)) == "generic"


def test_ws_profile_set_asks_nothing(health: Callable[..., _Health]) -> None:
    server = health(json.dumps(REFERENCE_HEALTH).encode())
    assert profile_name_for(WsConfig(base_url=server.url, profile="generic")) == "generic"
    assert server.requests == []


# ------------------------------------------------------------------ GenericProfile.from_config and schemas


def _validator(frame_schema: str, rootdir: Path = ROOT) -> Any:
    profile = GenericProfile.from_config(WsConfig(app=APP, frame_schema=frame_schema), rootdir)
    assert profile.validator is not None
    return profile.validator


def _error(validator: Any, frame: str | bytes, direction: str) -> str | None:
    try:
        validator(frame, direction)
    except ValueError as exc:
        return str(exc)
    return None


WELCOME = json.dumps({"type": "welcome", "client": "c1", "users": 1})
CHAT_SENT = json.dumps({"type": "chat", "user": "ann", "text": "hi"})
CHAT_RECEIVED = json.dumps({"type": "chat", "user": "ann", "text": "hi", "id": 1})


def test_one_schema_file_validates_both_directions() -> None:
    validator = _validator("fixtures/apps/chat/schema.json")
    bad = json.dumps({"type": "welcome", "client": "c1", "users": 0})
    for direction in ("sent", "received"):
        assert _error(validator, WELCOME, direction) is None
        error = _error(validator, bad, direction)
        assert error is not None and "0 is less than the minimum of 1" in error and "schema.json" in error


def test_a_pair_gives_each_direction_its_own_schema() -> None:
    validator = _validator(
        "sent=fixtures/apps/chat/schema-sent.json, received=fixtures/apps/chat/schema-received.json"
    )
    assert _error(validator, WELCOME, "received") is None
    assert _error(validator, CHAT_SENT, "sent") is None
    sent_welcome = _error(validator, WELCOME, "sent")
    assert sent_welcome is not None and "schema-sent.json" in sent_welcome
    received_without_id = _error(validator, CHAT_SENT, "received")
    assert received_without_id is not None
    assert "'id' is a required property" in received_without_id and "schema-received.json" in received_without_id


def test_a_direction_left_out_is_not_validated() -> None:
    validator = _validator("received=fixtures/apps/chat/schema-received.json")
    assert _error(validator, json.dumps({"anything": "goes"}), "sent") is None
    assert _error(validator, json.dumps({"anything": "goes"}), "received") is not None


def test_relative_schema_paths_start_at_the_rootdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rootdir = tmp_path / "project"
    (rootdir / "schemas").mkdir(parents=True)
    shutil.copy(CHAT / "schema-sent.json", rootdir / "schemas" / "up.json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    validator = _validator("sent=schemas/up.json", rootdir)
    assert isinstance(validator, SchemaValidator)
    assert validator.paths == {"sent": rootdir / "schemas" / "up.json"}
    assert _error(validator, CHAT_SENT, "sent") is None


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ('{"type": 12}', "is not a valid JSON Schema"),
    ],
    ids=["missing", "not-json", "invalid-schema"],
)
def test_a_bad_schema_file_is_a_configuration_error_with_its_path(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "frames.schema.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        GenericProfile.from_config(WsConfig(app=APP, frame_schema="frames.schema.json"), tmp_path)
    message = str(info.value)
    assert str(path) in message and says in message and "ws_frame_schema" in message


@pytest.mark.parametrize(
    "frame_schema",
    [
        "sent=fixtures/apps/chat/schema-sent.json, received=fixtures/apps/chat/schema-received.json",
        "fixtures/apps/chat/schema.json",
    ],
    ids=["pair", "one-file"],
)
def test_a_frame_of_a_oneof_branch_is_told_what_that_branch_lacks(frame_schema: str) -> None:
    """A chat frame missing ``text`` hears about ``text``, not about the ``typing`` branch or "any of"."""
    validator = _validator(frame_schema)
    error = _error(validator, json.dumps({"type": "chat", "user": "ann"}), "sent")
    assert error is not None
    assert "'text' is a required property" in error, error
    assert "typing" not in error and "not valid under any of the given schemas" not in error, error


def test_text_and_binary_frames_pass_a_schema() -> None:
    validator = _validator("fixtures/apps/chat/schema.json")
    for frame in ("ping", "pong", "", b"\x00\x01\x02"):
        for direction in ("sent", "received"):
            assert _error(validator, frame, direction) is None, (frame, direction)


def test_a_json_value_that_is_not_a_frame_of_the_schema_is_a_violation() -> None:
    validator = _validator("fixtures/apps/chat/schema.json")
    assert _error(validator, "[1, 2]", "sent") is not None


# ------------------------------------------------------------------ error frames


def test_the_default_error_frame_carries_the_message() -> None:
    profile = GenericProfile.from_config(WsConfig(app=APP))
    frame = json.loads(profile.error_frame("boom", "c1"))
    assert frame == {"type": "error", "message": "boom"}
    assert profile.is_error_frame(frame, "boom")


def test_the_message_replaces_every_placeholder_nested_too() -> None:
    template = json.dumps(
        {"type": "error", "text": "{message}", "detail": {"why": "[{message}]", "list": ["{message}", 3, None]}}
    )
    assert render_error_frame(template, "boom") == {
        "type": "error",
        "text": "boom",
        "detail": {"why": "[boom]", "list": ["boom", 3, None]},
    }


@pytest.mark.parametrize(
    "message",
    ['he said "no"', "C:\\temp\\new", 'both \\" at once', "line\nbreak", "{message}", "ünïcode ✓"],
)
def test_quotes_and_backslashes_in_the_message_stay_valid_json(message: str) -> None:
    profile = GenericProfile(error_template='{"type": "error", "message": "{message}"}')
    text = profile.error_frame(message, "c1")
    assert json.loads(text) == {"type": "error", "message": message}
    assert profile.is_error_frame(json.loads(text), message)


def test_a_custom_error_frame_template() -> None:
    config = WsConfig(app=APP).replace(error_frame='{"kind": "oops", "detail": {"text": "{message}"}}')
    profile = GenericProfile.from_config(config)
    frame = json.loads(profile.error_frame("disk full", "c1"))
    assert frame == {"kind": "oops", "detail": {"text": "disk full"}}
    assert profile.is_error_frame({**frame, "at": "12:00"}, "disk full")  # extra fields are the app's
    assert not profile.is_error_frame(frame, "another message")
    assert not profile.is_error_frame({"type": "error", "message": "disk full"}, "disk full")
    assert not profile.is_error_frame("disk full", "disk full")


# ------------------------------------------------------------------ client_id_from_request


@pytest.mark.parametrize(
    ("ws_path", "path", "query", "cookie", "expected"),
    [
        ("/ws/{client_id}", "/ws/abc", "", None, "abc"),
        ("/ws/{client_id}", "/mounted/app/ws/abc", "", None, "abc"),
        ("/debug/{client_id}/live", "/debug/abc/live", "", None, "abc"),
        ("/ws/{client_id}", "/ws/a%20b%2Fc", "", None, "a b/c"),
        ("/ws?room=1&client={client_id}", "/ws", "room=1&client=abc", None, "abc"),
        ("/ws?client={client_id}", "/ws", "client=a%20b%26c", None, "a b&c"),
        ("/ws", "/ws", "", f"{CLIENT_ID_COOKIE}=abc", "abc"),
        ("/ws", "/ws", "", f"theme=dark; {CLIENT_ID_COOKIE}=a%40b; lang=en", "a@b"),
        ("/ws/{client_id}", "/other/abc", "", f"{CLIENT_ID_COOKIE}=from-cookie", "from-cookie"),
        ("/ws?client={client_id}", "/ws", "room=1", f"{CLIENT_ID_COOKIE}=from-cookie", "from-cookie"),
        ("/ws/{client_id}", "/other/abc", "", None, None),
        ("/ws/{client_id}", "/ws/", "", None, None),
        ("/ws?client={client_id}", "/ws", "room=1", None, None),
        ("/ws", "/ws", "", "theme=dark", None),
        ("/ws", "/ws", "", f"{CLIENT_ID_COOKIE}=", None),
        ("/ws", "/ws", "", f'{CLIENT_ID_COOKIE}="abc', None),
    ],
    ids=[
        "path",
        "path-under-a-mount-prefix",
        "path-with-a-suffix",
        "path-url-encoded",
        "query",
        "query-url-encoded",
        "cookie",
        "cookie-among-others-url-encoded",
        "cookie-when-the-path-does-not-match",
        "cookie-when-the-query-lacks-it",
        "no-match",
        "empty-path-segment",
        "query-without-the-key",
        "no-cookie-of-ours",
        "empty-cookie",
        "malformed-cookie-header",
    ],
)
def test_the_client_id_of_a_request(
    ws_path: str, path: str, query: str, cookie: str | None, expected: str | None
) -> None:
    assert client_id_from_request(ws_path, path, query, cookie) == expected


def test_an_app_cookie_python_cannot_parse_does_not_hide_the_client_id_cookie() -> None:
    """Browsers send cookie values with JSON in them (consent banners); ours after it is still found."""
    header = f'consent={{"ads":false}}; {CLIENT_ID_COOKIE}=abc'
    assert client_id_from_request("/ws", "/ws", "", header) == "abc"


# ------------------------------------------------------------------ WsConfig: new patterns and settings


@pytest.mark.parametrize(
    ("ws_path", "page_path", "keyed_by_cookie"),
    [
        ("/ws", "/", True),
        ("/chat/socket", "/chat?room=1", True),
        ("/ws?client={client_id}", "/", False),
        ("/debug/{client_id}", "/?client_id={client_id}", False),
    ],
)
def test_patterns_without_a_client_id_are_accepted_and_keyed_by_cookie(
    ws_path: str, page_path: str, keyed_by_cookie: bool
) -> None:
    config = WsConfig().replace(ws_path=ws_path, page_path=page_path)
    assert config.keyed_by_cookie is keyed_by_cookie
    assert resolve_config({"ws_path": ws_path, "page_path": page_path}, {}, {}) == config


def test_urls_with_and_without_the_placeholder() -> None:
    with_id = WsConfig()
    assert with_id.ws_url("http://127.0.0.1:9000/", "c1") == "ws://127.0.0.1:9000/debug/c1"
    assert with_id.page_url("http://127.0.0.1:9000", "c1") == "http://127.0.0.1:9000/?client_id=c1"
    without = WsConfig().replace(ws_path="/ws", page_path="/chat")
    assert without.ws_url("https://app.test", "c1") == "wss://app.test/ws"
    assert without.page_url("http://127.0.0.1:9000/", "c1") == "http://127.0.0.1:9000/chat"
    query = WsConfig().replace(ws_path="/ws?client={client_id}", page_path="/?me={client_id}&x=1")
    assert query.ws_url("http://127.0.0.1:9000", "c1") == "ws://127.0.0.1:9000/ws?client=c1"
    assert query.page_url("http://127.0.0.1:9000", "c1") == "http://127.0.0.1:9000/?me=c1&x=1"


BAD_NEW_SETTINGS = [
    ("type_key", "a..b", "ws_type_key"),
    ("type_key", ".kind", "ws_type_key"),
    ("error_frame", "not json {message}", "ws_error_frame"),
    ("error_frame", '{"type": "error"}', "ws_error_frame"),
    ("reconnect_info_format", "Retries", "ws_reconnect_info_format"),
    ("profile", "mine", "ws_profile"),
    ("test_id_attribute", "  ", "ws_test_id_attribute"),
    ("frame_schema", "up=a.json", "ws_frame_schema"),
    ("frame_schema", "sent=", "ws_frame_schema"),
]


@pytest.mark.parametrize(("field", "value", "setting"), BAD_NEW_SETTINGS)
def test_a_bad_new_setting_names_itself(field: str, value: str, setting: str) -> None:
    with pytest.raises(ConfigurationError) as replaced:
        WsConfig().replace(**{field: value})
    assert setting in str(replaced.value)
    with pytest.raises(ConfigurationError) as from_ini:
        resolve_config({}, {}, {field: value})
    assert setting in str(from_ini.value)


def test_bad_values_name_what_would_do() -> None:
    with pytest.raises(ConfigurationError, match=r"'\{message\}'"):
        WsConfig().replace(error_frame='{"type": "error"}')
    with pytest.raises(ConfigurationError, match=r"\{n\}"):
        WsConfig().replace(reconnect_info_format="Retries")
    with pytest.raises(ConfigurationError, match="'nova', 'generic' or 'module:attribute'"):
        WsConfig().replace(profile="mine")
    with pytest.raises(ConfigurationError, match="unknown direction 'up'"):
        WsConfig().replace(frame_schema="up=a.json")


NEW_SETTINGS = {
    "profile": ("generic", "generic"),
    "wait_for_socket": ("false", False),
    "type_key": ("meta.kind", "meta.kind"),
    "frame_schema": ("schemas/frames.json", "schemas/frames.json"),
    "error_frame": ('{"kind": "oops", "text": "{message}"}', '{"kind": "oops", "text": "{message}"}'),
    "reconnect_info_format": ("Retries: {n}", "Retries: {n}"),
    "test_id_attribute": ("data-qa", "data-qa"),
}


def _env_name(field: str) -> str:
    return next(s.env for s in SETTINGS if s.field == field)


@pytest.mark.parametrize("field", sorted(NEW_SETTINGS))
def test_new_settings_resolve_from_env_and_ini(field: str) -> None:
    text, value = NEW_SETTINGS[field]
    assert getattr(resolve_config({}, {}, {field: text}), field) == value
    assert getattr(resolve_config({}, {_env_name(field): text}, {}), field) == value


def test_env_beats_ini_for_new_settings() -> None:
    env = {"NOVA_WS_TYPE_KEY": "kind", "NOVA_WS_TEST_ID_ATTRIBUTE": "data-qa"}
    ini = {"type_key": "meta.kind", "test_id_attribute": "data-test", "reconnect_info_format": "Tries {n}"}
    config = resolve_config({}, env, ini)
    assert (config.type_key, config.test_id_attribute, config.reconnect_info_format) == (
        "kind",
        "data-qa",
        "Tries {n}",
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("false", False), ("yes", True), ("0", False), ("No", False), ("ON", True)],
)
def test_ws_wait_for_socket_reads_booleans(text: str, value: bool) -> None:
    assert resolve_config({}, {"NOVA_WS_WAIT_FOR_SOCKET": text}, {}).wait_for_socket is value
    assert resolve_config({}, {}, {"wait_for_socket": text}).wait_for_socket is value


def test_ws_wait_for_socket_refuses_other_words_naming_the_source() -> None:
    with pytest.raises(ConfigurationError, match="NOVA_WS_WAIT_FOR_SOCKET: invalid value 'later'"):
        resolve_config({}, {"NOVA_WS_WAIT_FOR_SOCKET": "later"}, {})
    with pytest.raises(ConfigurationError, match="ini ws_wait_for_socket: invalid value 'maybe'"):
        resolve_config({}, {}, {"wait_for_socket": "maybe"})


def test_an_ini_schema_pair_may_span_lines() -> None:
    config = resolve_config({}, {}, {"frame_schema": "\n  sent = up.json\n  received = down.json\n"})
    assert frame_schema_paths(config.frame_schema or "") == {"sent": "up.json", "received": "down.json"}
