"""Connecting and authenticating through the UI (issue 3: the reference browser client).

Depth: none needed; the real server decides.  The wrong-key test runs in
virtual time to prove no reconnect is ever attempted.
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import VALID_KEY, ClientPage


def test_the_page_opens_its_socket_at_load_and_waits_for_a_key(client_page: ClientPage) -> None:
    client_page.open()

    expect(client_page.by("connection-status")).to_have_text("connected")
    expect(client_page.by("connection-detail")).to_contain_text("waiting for an API key")
    expect(client_page.by("auth-status")).to_have_text("Not authenticated")
    expect(client_page.by("client-id")).to_have_text(client_page.client_id)
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 0")
    expect(client_page.by("reconnect-info")).to_contain_text("Last reconnection: Never")
    expect(client_page.by("next-reconnect")).to_have_text("No reconnect scheduled")
    expect(client_page.by("error-details")).to_have_text("No errors")
    assert client_page.frames_sent("connect") == [], "the page must not authenticate on its own"


def test_connect_and_authenticate_through_the_ui(client_page: ClientPage) -> None:
    client_page.open()
    expect(client_page.by("connection-status")).to_have_text("connected")

    client_page.authenticate(VALID_KEY)

    expect(client_page.by("client-metadata")).to_contain_text("browser")
    expect(client_page.by("client-metadata")).to_contain_text("read, write")
    (connect,) = client_page.frames_sent("connect")
    assert connect["data"]["api_key"] == VALID_KEY
    assert connect["data"]["metadata"]["type"] == "browser"
    assert connect["client_id"] == client_page.client_id
    state = client_page.state()
    assert state["authStatus"] == "authenticated"
    assert state["clientMetadata"]["permissions"] == ["read", "write"]
    history = client_page.by("status-history").get_by_test_id("status-history-entry")
    expect(history.first).to_contain_text("Authenticated")


def test_wrong_key_shows_the_failure_and_does_not_reconnect(client_page: ClientPage) -> None:
    client_page.open(virtual_time=True)
    expect(client_page.by("connection-status")).to_have_text("connected")

    client_page.authenticate("not-a-key", expect_text=None)

    expect(client_page.by("auth-status")).to_contain_text("Authentication failed: ")
    expect(client_page.by("auth-status")).to_contain_text("not one of the server's keys")
    expect(client_page.by("connection-status")).to_have_text("error")
    expect(client_page.by("error-details")).to_contain_text("auth_failed")
    expect(client_page.by("reconnect-button")).to_be_visible()
    # A minute of virtual time later: still one socket, no attempt counted or scheduled.
    client_page.advance(60_000)
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 0")
    expect(client_page.by("next-reconnect")).to_contain_text("Automatic reconnection is off")
    assert len(client_page.sockets) == 1
    assert client_page.state()["nextReconnectDelay"] is None

    # The user fixes the key: Authenticate opens a new connection with it.
    client_page.authenticate(VALID_KEY)
    expect(client_page.by("connection-status")).to_have_text("connected")
    assert len(client_page.sockets) == 2
