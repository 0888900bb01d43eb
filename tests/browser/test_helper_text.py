"""The helper's one-round-trip text check agrees with Playwright's ``to_contain_text``."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from harness.browser.helper import _already_contains

CONTENT = (
    '<p data-testid="status">  Status:\n  connected </p>'
    '<i data-testid="twice">a</i><i data-testid="twice">b</i>'
)


def test_a_clear_match_is_seen_without_waiting(page: Any) -> None:
    page.set_content(CONTENT)
    status = page.get_by_test_id("status")
    for text in ("Status: connected", re.compile(r"\bconnected\b")):
        assert _already_contains(status, text)
        expect(status).to_contain_text(text, timeout=1000)  # Playwright agrees


def test_anything_else_is_left_to_playwright(page: Any) -> None:
    page.set_content(CONTENT)
    assert not _already_contains(page.get_by_test_id("status"), re.compile(r"\bdisconnected\b"))
    assert not _already_contains(page.get_by_test_id("twice"), "a")  # two elements: expect's strict error
    assert not _already_contains(page.get_by_test_id("missing"), "x")  # not there yet: expect waits
