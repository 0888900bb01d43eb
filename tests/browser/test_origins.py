"""The page on a different origin than the API (the dev setup), and URL overrides."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from reference_server.runner import NovaUvicornServer, ServerThread, bind_socket, uvicorn_config
from reference_server.web import frontend_app
from tests.browser.conftest import ClientPage, unique_id


@pytest.fixture
def cross_origin(page: Page, server_factory) -> Iterator[tuple[ClientPage, str]]:  # type: ignore[no-untyped-def]
    """An API server and a frontend server on two ephemeral ports; the page loaded from the latter."""
    fsock = bind_socket("127.0.0.1", 0)
    front_url = f"http://127.0.0.1:{fsock.getsockname()[1]}"
    api = server_factory(allowed_origins=[front_url])
    front = ServerThread(
        NovaUvicornServer(
            uvicorn_config(frontend_app(api.settings, api_port=api.port), max_message_bytes=1024, log_level="warning")
        ),
        fsock,
        name="nova-frontend",
    )
    front.start()
    client = ClientPage(page, api, unique_id("front"))
    try:
        yield client, front_url
    finally:
        front.stop()
    assert not client.invalid_sent_frames()


def test_the_page_on_the_frontend_origin_uses_the_api_port(cross_origin: tuple[ClientPage, str]) -> None:
    client, front_url = cross_origin
    client.open(base=front_url)

    api_port = client.server.port
    expect(client.by("ws-url")).to_have_text(f"ws://127.0.0.1:{api_port}/debug/{client.client_id}")
    expect(client.by("connection-status")).to_have_text("connected")
    client.authenticate()
    # REST from the other origin (CORS): create a thread and see it listed.
    client.by("thread-title-input").fill("Cross-origin thread")
    client.by("create-thread-button").click()
    expect(client.by("thread-item")).to_contain_text("Cross-origin thread")


def test_ws_query_parameter_overrides_the_websocket_url(client_page: ClientPage) -> None:
    base = f"ws://127.0.0.1:{client_page.server.port}"
    client_page.open(ws=base)
    expect(client_page.by("ws-url")).to_have_text(f"{base}/debug/{client_page.client_id}")
    expect(client_page.by("connection-status")).to_have_text("connected")


def test_ws_query_parameter_may_be_a_pattern(client_page: ClientPage) -> None:
    pattern = f"ws://127.0.0.1:{client_page.server.port}/debug/{{client_id}}"
    client_page.open(ws=pattern)
    expect(client_page.by("ws-url")).to_have_text(pattern.replace("{client_id}", client_page.client_id))
    expect(client_page.by("connection-status")).to_have_text("connected")


def test_client_id_is_kept_per_tab_unless_fixed(page: Page, client_page: ClientPage) -> None:
    page.goto(client_page.server.http_url + "/")
    expect(page.get_by_test_id("connection-status")).to_have_text("connected")
    generated = page.get_by_test_id("client-id").inner_text()
    assert generated.startswith("tab-")
    page.reload()
    expect(page.get_by_test_id("client-id")).to_have_text(generated)

    page.goto(client_page.server.http_url + "/?client_id=bad%20id!")
    expect(page.get_by_test_id("client-id")).to_have_text(generated)
    expect(page.get_by_test_id("error-details")).to_contain_text("?client_id=bad id! ignored")
