"""What the e2e tests read and do on the reference page, named once.

Test ids the helper knows come from ``ws_helper.config.test_ids``; the few
extra ones (error codes, message items) are the reference UI's contract
(docs/ui-contract.md).
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Locator

from harness import WebSocketTestHelper


def authenticated(ws_helper: WebSocketTestHelper, api_key: str | None = None) -> None:
    """Authenticate through the UI and wait until the page says so."""
    ws_helper.authenticate(api_key)
    ws_helper.wait_for_auth_status("Authenticated")


def by(ws_helper: WebSocketTestHelper, test_id: str) -> Locator:
    locator: Locator = ws_helper.page.get_by_test_id(test_id)
    return locator


def message_items(ws_helper: WebSocketTestHelper, channel: str) -> Locator:
    """The message log's items of ``channel`` (thread channels have their own view)."""
    log = by(ws_helper, ws_helper.config.test_ids.message_log)
    return log.locator(f'[data-testid="message-item"][data-channel="{channel}"]')


def channel_row(ws_helper: WebSocketTestHelper, channel: str) -> Locator:
    """The subscription row of ``channel`` (``data-state``: pending, subscribed, failed...)."""
    rows = by(ws_helper, ws_helper.config.test_ids.channel_list)
    return rows.locator(f'[data-testid="channel-item"][data-channel="{channel}"]')


def error_codes(ws_helper: WebSocketTestHelper) -> Locator:
    """The code of every entry in the error details (server codes, close codes, ``timeout``)."""
    return by(ws_helper, ws_helper.config.test_ids.error_details).get_by_test_id("error-code")


def channel_messages(ws_helper: WebSocketTestHelper, channel: str) -> list[dict[str, Any]]:
    """The ``data`` of every ``channel_message`` of ``channel`` the page received, in order."""
    return [
        m["data"]
        for m in ws_helper.journal.messages("received", "channel_message")
        if m["data"]["channel"] == channel
    ]
