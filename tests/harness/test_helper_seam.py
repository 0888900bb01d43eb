"""The helper's app-specific choices, without a browser: test id attribute, empty test ids, statuses."""

from __future__ import annotations

from typing import Any

import pytest

from harness import ConfigurationError, WsConfig
from harness.browser.helper import WebSocketTestHelper


class _Locator:
    def __init__(self, page: _Page, selector: str) -> None:
        self.page, self.selector = page, selector

    def wait_for(self, **_: Any) -> None:
        self.page.calls.append(("wait_for", self.selector))

    def fill(self, value: str, **_: Any) -> None:
        self.page.calls.append(("fill", self.selector, value))

    def click(self, **_: Any) -> None:
        self.page.calls.append(("click", self.selector))


class _Page:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def locator(self, selector: str) -> _Locator:
        return _Locator(self, selector)

    def get_by_test_id(self, test_id: str) -> _Locator:
        return _Locator(self, f"testid={test_id}")


class _Server:
    http_url = page_http_url = "http://127.0.0.1:1"
    faults = proxy = None


def _helper(**config: Any) -> tuple[WebSocketTestHelper, _Page]:
    page = _Page()
    cfg = WsConfig().replace(app="x:y", **config)
    return WebSocketTestHelper(page, _Server(), cfg), page  # type: ignore[arg-type]


def test_another_test_id_attribute_is_used_for_every_element() -> None:
    helper, page = _helper(test_id_attribute="data-qa", test_ids={"message_input": "text", "publish_button": "send"})
    helper.publish("general", "hi")
    assert ("fill", '[data-qa="text"]', "hi") in page.calls
    assert ("click", '[data-qa="send"]') in page.calls


def test_an_empty_test_id_skips_that_step_of_an_action() -> None:
    helper, page = _helper(test_ids={"channel_input": "", "message_input": "text", "publish_button": "send"})
    helper.publish("general", "hi")
    assert [c for c in page.calls if c[0] in ("fill", "click")] == [
        ("fill", "testid=text", "hi"),
        ("click", "testid=send"),
    ]


def test_a_wait_on_an_element_the_app_lacks_names_the_setting() -> None:
    helper, _ = _helper(test_ids={"reconnect_info": ""}, test_id_attribute="data-qa")
    with pytest.raises(ConfigurationError, match="ws_test_ids reconnect_info is empty") as info:
        helper.wait_for_reconnect_info(1)
    assert "data-qa" in str(info.value)


def test_the_generic_profile_is_chosen_for_another_app() -> None:
    helper, _ = _helper()
    assert helper.profile.name == "generic"
    assert helper.journal.match_in is None  # a dict match is compared with the whole frame
