"""Serving the client: the page, /config.js, static modules, the frontend origin (no browser)."""

from __future__ import annotations

import json
import re

import httpx

from reference_server.runner import NovaUvicornServer, ServerThread, bind_socket, uvicorn_config
from reference_server.settings import Settings
from reference_server.web import STATIC_DIR, frontend_app
from tests.browser.conftest import TIMEOUT_S
from tests.conftest import LiveServer


def _config(js: str) -> dict:  # type: ignore[type-arg]
    match = re.search(r"Object\.freeze\((\{.*\})\);", js, re.DOTALL)
    assert match, js
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def test_the_main_server_serves_the_page_its_modules_and_config(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.http_url, timeout=TIMEOUT_S) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert 'data-testid="connection-status"' in page.text
        store = http.get("/static/store.js")
        assert store.status_code == 200
        assert "javascript" in store.headers["content-type"]
        config = http.get("/config.js")
        assert config.status_code == 200
        assert "javascript" in config.headers["content-type"]
        assert config.headers["cache-control"] == "no-store"
        values = _config(config.text)
        openapi_paths = http.get("/openapi.json").json()["paths"]
    assert values["apiPort"] is None, "same origin: the page derives the WebSocket URL from location"
    assert values["testMode"] is True
    assert values["wsPath"] == "/debug/{client_id}"
    assert (values["backoffBaseMs"], values["backoffCapMs"], values["jitter"]) == (1000, 30000, "full")
    assert (values["heartbeatIntervalMs"], values["heartbeatTimeoutMs"], values["operationTimeoutMs"]) == (25000, 10000, 5000)
    assert "/" not in openapi_paths and "/config.js" not in openapi_paths


def test_the_frontend_app_serves_only_the_page_configured_for_the_api_port(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = frontend_app(Settings(db=tmp_path / "x.db", test_mode=False), api_port=8123)
    thread = ServerThread(
        NovaUvicornServer(uvicorn_config(app, max_message_bytes=1024, log_level="warning")),
        bind_socket("127.0.0.1", 0),
    )
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{thread.port}", timeout=10) as http:
            assert http.get("/").status_code == 200
            values = _config(http.get("/config.js").text)
            assert http.get("/health").status_code == 404
            assert http.get("/static/app.js").status_code == 200
    finally:
        thread.stop()
    assert values["apiPort"] == 8123
    assert values["testMode"] is False


def test_the_client_has_no_hard_coded_server_address() -> None:
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "localhost:8000" not in text, path
            assert "ws://localhost" not in text and "ws://127.0.0.1" not in text, path


def test_the_frontend_origin_may_call_the_rest_api(live_server: LiveServer) -> None:
    origin = live_server.settings.allowed_origins[0]
    response = httpx.options(
        f"{live_server.http_url}/api/chat/threads",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin
    other = httpx.options(
        f"{live_server.http_url}/api/chat/threads",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        timeout=TIMEOUT_S,
    )
    assert "access-control-allow-origin" not in other.headers
