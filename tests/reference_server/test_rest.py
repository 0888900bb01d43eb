"""The REST API (reference_server/rest.py) against a real uvicorn server.

Spec: ``X-API-Key`` auth (401 missing/unknown, 403 lacking permission, same
access table as the WebSocket), 404 for unknown thread ids, 422 for invalid
input naming the rule, 201 after commit, idempotent ``message_id`` (200 on
repeat), one seq space per channel shared with WebSocket publishes, and
broadcast of REST posts to WebSocket subscribers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reference_server.protocol import CHANNEL_PATTERN, PROTOCOL_VERSION, json_schema
from reference_server.rest import MAX_CONTENT_CHARS, MAX_TITLE_CHARS, REST_SENDER
from tests._wsclient import NovaTestClient, authenticated, new_client_id
from tests.conftest import LiveServer, start_server

DEV = {"X-API-Key": "development"}  # read, write, admin
TEST = {"X-API-Key": "valid-test-key"}  # read, write
READ_ONLY = {"X-API-Key": "reader"}
WRITE_ONLY = {"X-API-Key": "writer"}
NOTHING = {"X-API-Key": "nobody"}

CUSTOM_KEYS = {
    "development": ["read", "write", "admin"],
    "valid-test-key": ["read", "write"],
    "reader": ["read"],
    "writer": ["write"],
    "nobody": [],
}


@pytest.fixture
def server(server_factory: Any) -> LiveServer:
    """A server with extra keys: ``reader`` (read), ``writer`` (write), ``nobody`` (none)."""
    live: LiveServer = server_factory(api_keys=CUSTOM_KEYS)
    return live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client bound to ``server``."""
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def shared_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A client of one server shared by the tests that change nothing (401, 403, 404, 422)."""
    live = start_server(tmp_path_factory.mktemp("rest") / "nova.db", api_keys=CUSTOM_KEYS)
    try:
        with httpx.Client(base_url=live.http_url, timeout=10) as client:
            yield client
    finally:
        live.stop()


def _thread(http: httpx.Client, title: str = "Release planning") -> dict[str, Any]:
    response = http.post("/api/chat/threads", json={"title": title}, headers=DEV)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# ------------------------------------------------------------------ public endpoints


def test_health_needs_no_key_and_reports_version(shared_http: httpx.Client) -> None:
    response = shared_http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "protocol_version": PROTOCOL_VERSION, "connections": 0}


def test_protocol_schema_is_the_models_schema(shared_http: httpx.Client) -> None:
    response = shared_http.get("/api/protocol/schema")
    assert response.status_code == 200
    assert response.json() == json_schema()


def test_openapi_documents_every_endpoint_with_auth_and_errors(shared_http: httpx.Client) -> None:
    doc = shared_http.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": doc["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    protected = {
        ("get", "/api/chat/threads"),
        ("post", "/api/chat/threads"),
        ("get", "/api/chat/threads/{thread_id}"),
        ("post", "/api/chat/threads/{thread_id}/messages"),
        ("get", "/api/channels"),
        ("get", "/api/channels/{name}"),
        ("post", "/api/channels/{name}/messages"),
        ("get", "/api/client-errors"),
    }
    for method, path in protected:
        operation = doc["paths"][path][method]
        assert operation["security"] == [{"ApiKey": []}], (method, path)
        assert {"401", "403"} <= set(operation["responses"]), (method, path)
        assert operation.get("description"), f"{method} {path} has no description"
    assert "404" in doc["paths"]["/api/chat/threads/{thread_id}"]["get"]["responses"]
    assert "200" in doc["paths"]["/api/channels/{name}/messages"]["post"]["responses"]
    for name in ("ThreadCreate", "MessageCreate", "MessageOut", "ChannelDetail", "ErrorResponse"):
        assert "examples" in doc["components"]["schemas"][name] or any(
            "examples" in prop for prop in doc["components"]["schemas"][name]["properties"].values()
        ), name


# ------------------------------------------------------------------ authentication


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/chat/threads", None),
        ("POST", "/api/chat/threads", {"title": "t"}),
        ("GET", "/api/chat/threads/abc", None),
        ("POST", "/api/chat/threads/abc/messages", {"content": "x"}),
        ("GET", "/api/channels", None),
        ("GET", "/api/channels/general", None),
        ("POST", "/api/channels/general/messages", {"content": "x"}),
        ("GET", "/api/client-errors", None),
    ],
)
@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "missing X-API-Key"),
        ({"X-API-Key": ""}, "missing X-API-Key"),
        ({"X-API-Key": "wrong-key"}, "unknown API key"),
        ({"X-API-Key": "développement".encode()}, "unknown API key"),
        ({"X-API-Key": "DEVELOPMENT"}, "unknown API key"),
    ],
)
def test_protected_endpoints_answer_401_without_a_known_key(
    shared_http: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str] | dict[str, bytes],
    needle: str,
) -> None:
    response = shared_http.request(method, path, json=body, headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 401, response.text
    assert needle in response.json()["detail"]


def test_api_key_in_query_string_is_not_accepted(shared_http: httpx.Client) -> None:
    """Keys in URLs end up in logs: only the header counts."""
    response = shared_http.get("/api/channels", params={"api_key": "development"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "permission"),
    [
        ("GET", "/api/chat/threads", None, WRITE_ONLY, "read"),
        ("POST", "/api/chat/threads", {"title": "t"}, READ_ONLY, "write"),
        ("GET", "/api/channels", None, WRITE_ONLY, "read"),
        ("GET", "/api/channels/general", None, WRITE_ONLY, "read"),
        ("POST", "/api/channels/general/messages", {"content": "x"}, READ_ONLY, "write"),
        ("GET", "/api/client-errors", None, NOTHING, "read"),
        # access table: announcements and admin:* need admin
        ("POST", "/api/channels/announcements/messages", {"content": "x"}, TEST, "admin"),
        ("GET", "/api/channels/admin:ops", None, TEST, "admin"),
        ("POST", "/api/channels/admin:ops/messages", {"content": "x"}, TEST, "admin"),
    ],
)
def test_missing_permission_answers_403_naming_it(
    shared_http: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
    permission: str,
) -> None:
    response = shared_http.request(method, path, json=body, headers=headers)
    assert response.status_code == 403, response.text
    assert repr(permission) in response.json()["detail"]


def test_thread_endpoints_follow_the_thread_channel_rules(http: httpx.Client) -> None:
    thread = _thread(http)
    base = f"/api/chat/threads/{thread['id']}"
    assert http.get(base, headers=WRITE_ONLY).status_code == 403
    assert http.post(f"{base}/messages", json={"content": "x"}, headers=READ_ONLY).status_code == 403
    assert http.get(base, headers=READ_ONLY).status_code == 200
    assert http.post(f"{base}/messages", json={"content": "x"}, headers=WRITE_ONLY).status_code == 201


def test_admin_key_may_use_admin_channels(http: httpx.Client) -> None:
    posted = http.post("/api/channels/announcements/messages", json={"content": "hi"}, headers=DEV)
    assert posted.status_code == 201
    assert http.get("/api/channels/admin:ops", headers=DEV).status_code == 200
    # anyone with read may read announcements
    assert http.get("/api/channels/announcements", headers=READ_ONLY).json()["last_seq"] == 1


def test_default_keys_work_without_configuration(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.http_url, timeout=10) as client:
        assert client.get("/api/channels", headers=TEST).status_code == 200
        assert client.get("/api/channels", headers=DEV).status_code == 200
        assert client.get("/api/channels", headers=READ_ONLY).status_code == 401


# ------------------------------------------------------------------ chat threads


def test_create_list_and_read_threads(http: httpx.Client) -> None:
    assert http.get("/api/chat/threads", headers=TEST).json() == []
    first = _thread(http, "First")
    second = _thread(http, "Second ✓ 🚀")
    assert first["title"] == "First"
    assert first["channel"] == f"thread:{first['id']}"
    assert first["created_by"] == REST_SENDER
    assert first["created_at"].endswith("Z")
    listed = http.get("/api/chat/threads", headers=TEST).json()
    assert [t["id"] for t in listed] == [first["id"], second["id"]]
    detail = http.get(f"/api/chat/threads/{second['id']}", headers=TEST).json()
    assert detail == {**second, "last_seq": 0, "messages": []}


def test_thread_messages_get_seq_and_are_read_back(http: httpx.Client) -> None:
    thread = _thread(http)
    url = f"/api/chat/threads/{thread['id']}/messages"
    posted = [http.post(url, json={"content": f"m{i}"}, headers=TEST) for i in range(3)]
    assert [p.status_code for p in posted] == [201, 201, 201]
    assert [p.json()["seq"] for p in posted] == [1, 2, 3]
    assert all(p.json()["channel"] == thread["channel"] for p in posted)
    assert all(p.json()["sender"] == REST_SENDER for p in posted)
    detail = http.get(f"/api/chat/threads/{thread['id']}", headers=TEST).json()
    assert detail["last_seq"] == 3
    assert [m["content"] for m in detail["messages"]] == ["m0", "m1", "m2"]
    assert detail["messages"] == [p.json() for p in posted]
    page = http.get(
        f"/api/chat/threads/{thread['id']}", params={"since_seq": 1, "limit": 1}, headers=TEST
    ).json()
    assert [m["seq"] for m in page["messages"]] == [2]
    # the thread's messages are the channel thread:{id}
    channel = http.get(f"/api/channels/{thread['channel']}", headers=TEST).json()
    assert channel["messages"] == detail["messages"]


def test_a_since_seq_past_the_largest_seq_is_a_422_not_a_server_error(http: httpx.Client) -> None:
    thread = _thread(http)
    answer = http.get(f"/api/chat/threads/{thread['id']}", params={"since_seq": 2**63}, headers=TEST)
    assert answer.status_code == 422
    assert "since_seq" in answer.text


def test_thread_message_idempotent_by_message_id(http: httpx.Client) -> None:
    thread = _thread(http)
    url = f"/api/chat/threads/{thread['id']}/messages"
    first = http.post(url, json={"content": "once", "message_id": "op-1"}, headers=TEST)
    again = http.post(url, json={"content": "twice?", "message_id": "op-1"}, headers=TEST)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert http.get(f"/api/chat/threads/{thread['id']}", headers=TEST).json()["last_seq"] == 1


@pytest.mark.parametrize("thread_id", ["does-not-exist", "0" * 12, "x" * 64, "%20", "🚀"])
def test_unknown_thread_is_404(shared_http: httpx.Client, thread_id: str) -> None:
    read = shared_http.get(f"/api/chat/threads/{thread_id}", headers=TEST)
    post = shared_http.post(f"/api/chat/threads/{thread_id}/messages", json={"content": "x"}, headers=TEST)
    assert read.status_code == post.status_code == 404
    assert "no chat thread" in read.json()["detail"]


def test_posting_to_an_unknown_thread_stores_nothing(http: httpx.Client) -> None:
    http.post("/api/chat/threads/nope/messages", json={"content": "x"}, headers=TEST)
    assert http.get("/api/channels", headers=TEST).json() == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "Field required"),
        ({"title": ""}, "at least 1 character"),
        ({"title": "   "}, "must not be blank"),
        ({"title": "x" * (MAX_TITLE_CHARS + 1)}, f"at most {MAX_TITLE_CHARS} characters"),
        ({"title": 42}, "valid string"),
        ({"title": "t", "extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_thread_bodies_are_422_naming_the_rule(
    shared_http: httpx.Client, body: dict[str, Any], needle: str
) -> None:
    response = shared_http.post("/api/chat/threads", json=body, headers=TEST)
    assert response.status_code == 422, response.text
    assert needle in response.text


def test_title_at_the_limit_is_accepted(http: httpx.Client) -> None:
    assert _thread(http, "x" * MAX_TITLE_CHARS)["title"] == "x" * MAX_TITLE_CHARS


# ------------------------------------------------------------------ channels


def test_channel_post_and_read_recent(http: httpx.Client) -> None:
    url = "/api/channels/general/messages"
    for i in range(5):
        response = http.post(url, json={"content": f"m{i}"}, headers=TEST)
        assert response.status_code == 201
        assert response.json()["seq"] == i + 1
    detail = http.get("/api/channels/general", headers=TEST).json()
    assert detail["name"] == "general"
    assert detail["last_seq"] == 5
    assert detail["subscribers"] == 0
    assert [m["seq"] for m in detail["messages"]] == [1, 2, 3, 4, 5]
    recent = http.get("/api/channels/general", params={"limit": 2}, headers=TEST).json()
    assert [m["content"] for m in recent["messages"]] == ["m3", "m4"]


def test_channel_read_defaults_to_recent_messages_limit(server_factory: Any) -> None:
    live: LiveServer = server_factory(recent_messages_limit=3)
    with httpx.Client(base_url=live.http_url, timeout=10) as client:
        for i in range(5):
            client.post("/api/channels/general/messages", json={"content": str(i)}, headers=TEST)
        detail = client.get("/api/channels/general", headers=TEST).json()
    assert [m["seq"] for m in detail["messages"]] == [3, 4, 5]


def test_unknown_but_valid_channel_reads_as_empty(http: httpx.Client) -> None:
    detail = http.get("/api/channels/never-used", headers=TEST)
    assert detail.status_code == 200
    assert detail.json() == {"name": "never-used", "subscribers": 0, "last_seq": 0, "messages": []}


def test_channel_list_shows_last_seq_by_name(http: httpx.Client) -> None:
    for channel, count in (("zeta", 1), ("alpha", 3)):
        for _ in range(count):
            http.post(f"/api/channels/{channel}/messages", json={"content": "x"}, headers=TEST)
    assert http.get("/api/channels", headers=TEST).json() == [
        {"name": "alpha", "subscribers": 0, "last_seq": 3},
        {"name": "zeta", "subscribers": 0, "last_seq": 1},
    ]


def test_seq_is_per_channel(http: httpx.Client) -> None:
    a = http.post("/api/channels/a/messages", json={"content": "x"}, headers=TEST).json()
    b = http.post("/api/channels/b/messages", json={"content": "x"}, headers=TEST).json()
    assert a["seq"] == b["seq"] == 1


def test_channel_message_idempotent_by_message_id(http: httpx.Client) -> None:
    url = "/api/channels/general/messages"
    first = http.post(url, json={"content": "hello", "message_id": "m-1"}, headers=TEST)
    again = http.post(url, json={"content": "hello", "message_id": "m-1"}, headers=TEST)
    other = http.post(url, json={"content": "hello", "message_id": "m-2"}, headers=TEST)
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json() == first.json()
    assert first.json()["message_id"] == "m-1"
    assert other.json()["seq"] == 2
    # the same id on another channel is another message
    elsewhere = http.post("/api/channels/random/messages", json={"content": "x", "message_id": "m-1"}, headers=TEST)
    assert elsewhere.status_code == 201


def test_server_assigns_message_ids_when_omitted(http: httpx.Client) -> None:
    url = "/api/channels/general/messages"
    a = http.post(url, json={"content": "x"}, headers=TEST).json()
    b = http.post(url, json={"content": "x"}, headers=TEST).json()
    assert a["message_id"] and b["message_id"] and a["message_id"] != b["message_id"]


@pytest.mark.parametrize(
    "content", ["", "unicode ✓ 日本語 🚀", "nul\x00inside", "x" * MAX_CONTENT_CHARS, "<script>"]
)
def test_content_edge_cases_round_trip(http: httpx.Client, content: str) -> None:
    posted = http.post("/api/channels/general/messages", json={"content": content}, headers=TEST)
    assert posted.status_code == 201, posted.text[:300]
    stored = http.get("/api/channels/general", headers=TEST).json()["messages"][-1]
    assert stored["content"] == content


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ('{"content": "x" }'.replace("x", "x" * (MAX_CONTENT_CHARS + 1)), f"at most {MAX_CONTENT_CHARS}"),
        ('{"content": "\\ud800"}', "unicode"),
        ('{"content": "ok", "message_id": "\\udfff"}', "unicode"),
        ('{"content": "ok", "message_id": ""}', "at least 1 character"),
        ('{"content": "ok", "message_id": "' + "m" * 129 + '"}', "at most 128"),
        ('{"content": 5}', "valid string"),
        ('{"content": null}', "valid string"),
        ('{"message_id": "m"}', "Field required"),
        ('{"content": "ok", "channel": "other"}', "Extra inputs are not permitted"),
        ("[1, 2]", "valid dictionary"),
        ("{not json", "JSON decode error"),
    ],
)
def test_invalid_message_bodies_are_422_naming_the_rule(
    shared_http: httpx.Client, raw: str, needle: str
) -> None:
    response = shared_http.post(
        "/api/channels/general/messages",
        content=raw.encode("utf-8"),
        headers={**TEST, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text[:300]
    assert needle in response.text


@pytest.mark.parametrize("name", ["General", "bad name", "-x", "a" * 65, "x:", "x:y:z", "é"])
def test_invalid_channel_names_are_422_naming_the_pattern(shared_http: httpx.Client, name: str) -> None:
    for response in (
        shared_http.get(f"/api/channels/{name}", headers=TEST),
        shared_http.post(f"/api/channels/{name}/messages", json={"content": "x"}, headers=TEST),
    ):
        assert response.status_code == 422, response.text
        assert CHANNEL_PATTERN in response.text


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"limit": "many"}])
def test_invalid_limits_are_422(shared_http: httpx.Client, params: dict[str, Any]) -> None:
    assert shared_http.get("/api/channels/general", params=params, headers=TEST).status_code == 422


def test_auth_is_checked_before_input_validation(shared_http: httpx.Client) -> None:
    """An anonymous caller learns nothing about the API's rules: 401, not 422."""
    response = shared_http.get("/api/channels/Not Valid")
    assert response.status_code == 401


# ------------------------------------------------------------------ client errors


@pytest.mark.asyncio
async def test_client_errors_empty_and_filtered(server: LiveServer) -> None:
    storage = server.app.state.storage
    async with httpx.AsyncClient(base_url=server.http_url, headers=TEST, timeout=10) as http:
        assert (await http.get("/api/client-errors")).json() == []
        # straight into storage: the protocol no longer lets NaN through, but old rows may hold it
        await storage.add_client_error("browser-1", "boom", {"line": 3})
        await storage.add_client_error("browser-2", "bang", {"nan": float("nan")})
        everything = (await http.get("/api/client-errors")).json()
        assert [(e["client_id"], e["message"]) for e in everything] == [
            ("browser-1", "boom"),
            ("browser-2", "bang"),
        ]
        assert everything[1]["context"] == {"nan": None}
        only = (await http.get("/api/client-errors", params={"client_id": "browser-1"})).json()
        assert [e["context"] for e in only] == [{"line": 3}]
        assert (await http.get("/api/client-errors", params={"limit": 1})).json() == everything[1:]
        bad = await http.get("/api/client-errors", params={"client_id": "bad id!"})
        assert bad.status_code == 422


# ------------------------------------------------------------------ with WebSocket clients


async def _pong(client: NovaTestClient) -> None:
    """A ping/pong round trip: frames queued before it have all been received."""
    await client.request("ping", {}, reply="pong")


@pytest.mark.asyncio
async def test_rest_and_websocket_publishes_share_one_seq_space(server: LiveServer) -> None:
    client_id = new_client_id("seq")
    async with (
        authenticated(server.ws_url(client_id), client_id) as ws,
        httpx.AsyncClient(base_url=server.http_url, headers=TEST, timeout=10) as http,
    ):
        await ws.request("subscribe", {"channel": "general"}, reply="subscribed")
        await ws.send("publish", {"channel": "general", "content": "ws-1"}, id="ws-1")
        assert (await ws.expect("channel_message"))["data"]["seq"] == 1
        assert (await ws.expect("delivery_confirmation"))["data"]["seq"] == 1
        posted = await http.post("/api/channels/general/messages", json={"content": "rest-2"})
        assert (posted.status_code, posted.json()["seq"]) == (201, 2)
        assert (await ws.expect("channel_message"))["data"] == posted.json()
        await ws.send("publish", {"channel": "general", "content": "ws-3"}, id="ws-3")
        assert (await ws.expect("channel_message"))["data"]["seq"] == 3
        await ws.expect("delivery_confirmation")
        stored = (await http.get("/api/channels/general")).json()["messages"]
    assert [(m["seq"], m["sender"], m["content"]) for m in stored] == [
        (1, client_id, "ws-1"),
        (2, REST_SENDER, "rest-2"),
        (3, client_id, "ws-3"),
    ]


@pytest.mark.asyncio
async def test_message_ids_are_shared_between_rest_and_websocket(server: LiveServer) -> None:
    """A WebSocket publish retrying an id first posted over REST is confirmed, not re-stored."""
    client_id = new_client_id("ids")
    async with (
        authenticated(server.ws_url(client_id), client_id) as ws,
        httpx.AsyncClient(base_url=server.http_url, headers=TEST, timeout=10) as http,
    ):
        posted = await http.post("/api/channels/general/messages", json={"content": "x", "message_id": "shared-1"})
        assert posted.status_code == 201
        await ws.send("publish", {"channel": "general", "content": "x"}, id="shared-1")
        confirmation = await ws.expect("delivery_confirmation")
        assert confirmation["data"] == {"message_id": "shared-1", "channel": "general", "seq": 1}
        assert (await http.get("/api/channels/general")).json()["last_seq"] == 1


@pytest.mark.asyncio
async def test_thread_post_is_broadcast_on_the_thread_channel(server: LiveServer) -> None:
    client_id = new_client_id("thread")
    async with (
        authenticated(server.ws_url(client_id), client_id) as ws,
        httpx.AsyncClient(base_url=server.http_url, headers=TEST, timeout=10) as http,
    ):
        thread = (await http.post("/api/chat/threads", json={"title": "Launch"})).json()
        assert (await ws.expect("thread_created"))["data"] == thread  # announced to every client
        await ws.request("subscribe", {"channel": thread["channel"]}, reply="subscribed")
        posted = await http.post(
            f"/api/chat/threads/{thread['id']}/messages", json={"content": "go 🚀", "message_id": "t-1"}
        )
        assert posted.status_code == 201
        frame = await ws.expect("channel_message")
        assert frame["data"] == posted.json()
        assert frame["data"]["channel"] == f"thread:{thread['id']}"
        assert frame["data"]["sender"] == REST_SENDER
        # a repeated message_id is answered 200 and not delivered again
        again = await http.post(
            f"/api/chat/threads/{thread['id']}/messages", json={"content": "go 🚀", "message_id": "t-1"}
        )
        assert again.status_code == 200
        await _pong(ws)


@pytest.mark.asyncio
async def test_channel_post_reaches_every_subscriber_but_not_others(server: LiveServer) -> None:
    a, b, c = new_client_id("a"), new_client_id("b"), new_client_id("c")
    async with (
        authenticated(server.ws_url(a), a) as ws_a,
        authenticated(server.ws_url(b), b) as ws_b,
        authenticated(server.ws_url(c), c) as ws_c,
        httpx.AsyncClient(base_url=server.http_url, headers=TEST, timeout=10) as http,
    ):
        for ws in (ws_a, ws_b):
            await ws.request("subscribe", {"channel": "lobby"}, reply="subscribed")
        await ws_c.request("subscribe", {"channel": "elsewhere"}, reply="subscribed")
        posted = (await http.post("/api/channels/lobby/messages", json={"content": "hi all"})).json()
        for ws in (ws_a, ws_b):
            assert (await ws.expect("channel_message"))["data"] == posted
        await _pong(ws_c)  # nothing arrived before the pong


@pytest.mark.asyncio
async def test_channel_listing_counts_websocket_subscribers(server: LiveServer) -> None:
    client_id = new_client_id("count")
    async with (
        httpx.AsyncClient(base_url=server.http_url, headers=TEST, timeout=10) as http,
        authenticated(server.ws_url(client_id), client_id) as ws,
    ):
        await ws.request("subscribe", {"channel": "lobby"}, reply="subscribed")
        assert (await http.get("/health")).json()["connections"] == 1
        assert (await http.get("/api/channels")).json() == [
            {"name": "lobby", "subscribers": 1, "last_seq": 0}
        ]
        assert (await http.get("/api/channels/lobby")).json()["subscribers"] == 1
        await ws.request("unsubscribe", {"channel": "lobby"}, reply="unsubscribed")
        assert (await http.get("/api/channels/lobby")).json()["subscribers"] == 0


@pytest.mark.asyncio
async def test_client_errors_reported_over_websocket_are_listed(server: LiveServer) -> None:
    client_id = new_client_id("err")
    async with (
        authenticated(server.ws_url(client_id), client_id) as ws,
        httpx.AsyncClient(base_url=server.http_url, headers=TEST, timeout=10) as http,
    ):
        await ws.send("client_error", {"message": "TypeError: boom", "context": {"line": 7}})
        await _pong(ws)  # frames are handled in order: the error is stored by now
        errors = (await http.get("/api/client-errors", params={"client_id": client_id})).json()
    assert [(e["client_id"], e["message"], e["context"]) for e in errors] == [
        (client_id, "TypeError: boom", {"line": 7})
    ]


@pytest.mark.asyncio
async def test_thread_announcements_go_only_to_keys_that_may_read_threads(server: LiveServer) -> None:
    reader_id, writer_id = new_client_id("reader"), new_client_id("writer")
    async with (
        authenticated(server.ws_url(reader_id), reader_id, api_key="reader") as reader,
        authenticated(server.ws_url(writer_id), writer_id, api_key="writer") as writer,
        httpx.AsyncClient(base_url=server.http_url, headers=TEST, timeout=10) as http,
    ):
        thread = (await http.post("/api/chat/threads", json={"title": "Readers only"})).json()
        assert (await reader.expect("thread_created"))["data"] == thread
        await _pong(writer)  # its next frame answers the ping: nothing was announced to it


def test_a_thread_channel_exists_only_with_its_thread(http: httpx.Client) -> None:
    missing = http.post("/api/channels/thread:nosuchthread/messages", json={"content": "x"}, headers=DEV)
    assert missing.status_code == 404
    assert "no chat thread 'nosuchthread'" in missing.json()["detail"]
    assert "POST /api/chat/threads" in missing.json()["detail"]
    assert http.get("/api/channels/thread:nosuchthread", headers=DEV).status_code == 404
    thread = _thread(http)
    posted = http.post(f"/api/channels/{thread['channel']}/messages", json={"content": "x"}, headers=DEV)
    assert posted.status_code == 201, posted.text
    assert http.get(f"/api/channels/{thread['channel']}", headers=DEV).json()["last_seq"] == 1
    assert "thread:nosuchthread" not in [c["name"] for c in http.get("/api/channels", headers=DEV).json()]


@pytest.mark.asyncio
async def test_websocket_subscribe_and_publish_need_an_existing_thread(server: LiveServer) -> None:
    client_id = new_client_id("threads")
    async with (
        authenticated(server.ws_url(client_id), client_id) as ws,
        httpx.AsyncClient(base_url=server.http_url, headers=TEST, timeout=10) as http,
    ):
        for type_, data in (
            ("subscribe", {"channel": "thread:nosuchthread"}),
            ("publish", {"channel": "thread:nosuchthread", "content": "x"}),
        ):
            await ws.send(type_, data, id=f"op-{type_}")
            error = await ws.expect_error("validation_error")
            assert error["data"]["operation_id"] == f"op-{type_}"
            assert error["data"]["details"] == {"channel": "thread:nosuchthread", "thread_id": "nosuchthread"}
        thread = (await http.post("/api/chat/threads", json={"title": "Real"})).json()
        await ws.expect("thread_created")
        await ws.request("subscribe", {"channel": thread["channel"]}, reply="subscribed")
        await ws.send("publish", {"channel": thread["channel"], "content": "hi"}, id="op-real")
        assert (await ws.expect("channel_message"))["data"]["content"] == "hi"
        await ws.expect("delivery_confirmation")
