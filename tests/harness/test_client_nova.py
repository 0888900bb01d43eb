"""The harness's Python protocol client and fault control client, against a live server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from harness.client import NovaClient, ProtocolClientError, WsClient, _now_iso
from harness.control import FaultControl, FaultControlError
from harness.errors import WaitTimeoutError
from reference_server.protocol import now_iso
from tests.conftest import LiveServer


def _client(server: LiveServer, client_id: str) -> NovaClient:
    return NovaClient(server.ws_url(client_id), client_id, default_timeout=3).connect()


def test_two_clients_exchange_channel_messages(live_server: LiveServer) -> None:
    alice, bob = _client(live_server, "alice"), _client(live_server, "bob")
    try:
        assert alice.authenticate("valid-test-key")["metadata"]["permissions"] == ["read", "write"]
        bob.authenticate("valid-test-key")
        assert alice.subscribe("general") == {"channel": "general", "last_seq": 0}
        first = bob.publish("general", "one")
        second = bob.publish("general", "two")
        assert (first["seq"], second["seq"]) == (1, 2)
        assert alice.expect("channel_message")["data"]["content"] == "one"
        assert alice.expect("channel_message")["data"]["content"] == "two"
        alice.expect_nothing("channel_message", within=0.1)
    finally:
        alice.close()
        bob.close()
    assert alice.close_code == 1000


def test_expect_matches_history_and_explains_a_timeout(live_server: LiveServer) -> None:
    with _client(live_server, "carol") as carol:
        carol.authenticate("valid-test-key")
        carol.ping()
        assert carol.expect("pong")["type"] == "pong"
        with pytest.raises(WaitTimeoutError, match="expected a frame of type 'pong' within 0.1 s") as info:
            carol.expect("pong", timeout=0.1)
        assert "connection_established" in str(info.value)


def test_errors_from_the_server_raise_with_code_and_message(live_server: LiveServer) -> None:
    with _client(live_server, "dave") as dave:
        dave.authenticate("valid-test-key")
        with pytest.raises(ProtocolClientError, match="forbidden"):
            dave.publish("announcements", "hi")
        with pytest.raises(ProtocolClientError, match="validation_error"):
            dave.subscribe("Not A Channel!")


def test_wrong_key_raises_and_the_close_code_is_kept(live_server: LiveServer) -> None:
    eve = _client(live_server, "eve")
    with pytest.raises(ProtocolClientError, match="auth_failed"):
        eve.authenticate("wrong")
    assert eve.wait_closed() == 4001


def test_fault_control_drives_every_server_fault(live_server: LiveServer) -> None:
    control = FaultControl(live_server.http_url, live_server.settings.test_token)
    frank = _client(live_server, "frank")
    try:
        frank.authenticate("valid-test-key")
        control.reject_handshakes("frank", 503, count=1)
        control.hold_handshakes("frank")
        control.delay("frank", 5, ["pong"])
        control.drop("frank", ["pong"], count=1)
        info = control.client_info("frank")
        assert info["connected"] and info["authenticated"]
        assert any(c.get("client_id") == "frank" for c in control.clients())
        removed = control.remove_rule("frank", "reject")
        assert removed["removed"] is True and removed["rules"]["reject"] is None
        assert removed["rules"]["hold"] is not None and removed["rules"]["drop"] is not None
        with pytest.raises(FaultControlError, match="unknown rule kind") as bad:
            control.remove_rule("frank", "mute")
        assert bad.value.status == 422
        control.release_handshakes("frank")
        control.clear("frank")
        control.clear()
        control.push("frank", {"type": "pong", "data": {}, "timestamp": "2026-01-01T00:00:00Z", "client_id": "frank"})
        frank.expect("pong")
        control.close_socket("frank", 4000, "bye")
        assert frank.wait_closed() == 4000 and frank.close_reason == "bye"
        with pytest.raises(FaultControlError, match="409"):
            control.abort("frank")
    finally:
        frank.close()
        control.close()


def test_fault_control_with_a_wrong_token_says_so(live_server: LiveServer) -> None:
    control = FaultControl(live_server.http_url, "wrong-token")
    try:
        with pytest.raises(FaultControlError, match="403"):
            control.state()
    finally:
        control.close()


def test_expect_leaves_skipped_frames_for_later(live_server: LiveServer) -> None:
    with _client(live_server, "gina") as gina:
        gina.authenticate("valid-test-key")
        gina.ping()
        gina.subscribe("skips")
        assert gina.expect("subscribed")["data"]["channel"] == "skips"
        assert gina.expect("pong")["type"] == "pong"


def test_expect_matches_dicts_against_data_and_text_against_the_raw_frame(live_server: LiveServer) -> None:
    with _client(live_server, "hana") as hana:
        hana.authenticate("valid-test-key")
        hana.subscribe("matches")
        hana.publish("matches", "first")
        hana.publish("matches", "second")
        message = hana.expect("channel_message", {"content": "second"})
        assert message["data"]["content"] == "second" and isinstance(hana, WsClient)
        with pytest.raises(WaitTimeoutError, match="compared with the frame's 'data' field"):
            hana.expect("channel_message", match={"data": {"content": "first"}}, timeout=0.1)
        first = hana.expect(text=re.compile(r'"content": ?"first"'))
        assert first["type"] == "channel_message", "a Nova frame is returned parsed, whatever matched it"


def test_timestamps_have_the_reference_format() -> None:
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(iso, now_iso()), "the reference format changed: update harness.client._now_iso"
    before = datetime.now(UTC) - timedelta(seconds=1)
    stamp = _now_iso()
    assert re.fullmatch(iso, stamp)
    assert before <= datetime.fromisoformat(stamp) <= datetime.now(UTC)
