"""Take the screenshot of the reference client used in the docs (docs/img/client.png).

    .venv/bin/python -m tests.browser.screenshot [docs/img/client.png]

Starts a test-mode server on an ephemeral port, drives the page through a short
session (authenticate, subscribe, publish, a second client talking, a thread,
a server-side close and the reconnection) and saves a full-page screenshot.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from harness.browser import find_chromium, launch_args
from tests.browser.conftest import VALID_KEY, ClientPage, OtherClient
from tests.conftest import start_server


def main(out: str = "docs/img/client.png") -> None:
    server = start_server(Path(tempfile.mkdtemp()) / "nova.db")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(**launch_args(find_chromium(), headless=True))
            page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
            client = ClientPage(page, server, "browser-tab-1")
            client.open(jitter="none")
            client.authenticate(VALID_KEY)
            client.subscribe("general")
            client.expect_subscribed("general")
            bob = OtherClient(server.ws_url("bob"), "bob")
            bob.subscribe("general")
            bob.publish("general", "Morning! Deploy window opens at 10:00.")
            client.publish("Thanks, I'll watch the dashboards.", channel="general")
            bob.publish("general", "Great, ping me if the error rate moves.")
            expect(client.message_items("general")).to_have_count(3)
            client.by("thread-title-input").fill("Release 2.4 planning")
            client.by("create-thread-button").click()
            expect(client.by("thread-view")).to_be_visible()
            thread_id = client.state()["threads"]["openId"]
            client.expect_subscribed(f"thread:{thread_id}")
            bob.publish(f"thread:{thread_id}", "Draft changelog is in the wiki.")
            client.by("thread-message-input").fill("Looks good to me.")
            client.by("thread-post-button").click()
            expect(client.by("thread-message")).to_have_count(2)
            httpx.post(
                f"{server.http_url}/__harness/clients/browser-tab-1/close",
                json={"code": 1012, "reason": "service restart"},
                headers=server.harness_headers,
            ).raise_for_status()
            expect(client.by("reconnect-info")).to_contain_text("Reconnection attempts: 0")
            expect(client.by("auth-status")).to_have_text("Authenticated")
            client.publish("Back after the restart.", channel="general")
            expect(client.message_items("general")).to_have_count(4)
            expect(client.message_items("general").last).to_have_attribute("data-state", "delivered")
            page.evaluate("() => document.activeElement && document.activeElement.blur()")
            page.screenshot(path=out, full_page=True)
            bob.close()
            browser.close()
    finally:
        server.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
