"""The server starts on an ephemeral port and serves the OpenAPI document."""

from __future__ import annotations

import httpx

from tests.conftest import LiveServer


def test_server_starts_on_ephemeral_port_and_serves_openapi(live_server: LiveServer) -> None:
    assert live_server.port != 0
    response = httpx.get(f"{live_server.http_url}/openapi.json", timeout=5)
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "Nova reference server"
