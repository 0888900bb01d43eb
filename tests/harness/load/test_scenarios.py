"""The pure scenarios, driven by hand with fake time: no socket, no loop, no clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from harness.load import (
    Close,
    Connect,
    Connections,
    Drop,
    Fanout,
    GenericProtocol,
    LoadConfigError,
    NovaProtocol,
    Publish,
    ReconnectStorm,
    Send,
    SeqTracker,
    create,
)
from harness.load.scenarios import VirtualClient

from ._frames import channel_message, recorder, server_frame


def _sent(actions: Sequence[object]) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, Send)]


def _authenticate(client: VirtualClient, now: float = 0.0) -> list[Any]:
    """Connect, greet, authenticate: what a Nova server does; returns the actions after auth_success."""
    assert client.start(now) == [Connect()]
    assert client.opened(now + 0.001) == []
    auth = _sent(client.frame(server_frame("connection_established"), now + 0.002))
    assert auth[0]["type"] == "connect"
    assert auth[0]["data"]["api_key"] == "valid-test-key"
    return list(client.frame(server_frame("auth_success", id=str(auth[0]["id"])), now + 0.003))


# ----------------------------------------------------------------- seq tracking


def test_seq_tracker_classifies_gaps_duplicates_and_late_arrivals() -> None:
    tracker = SeqTracker()
    tracker.start(10)
    verdicts = [tracker.see(s) for s in (11, 12, 15, 13, 12, 16)]
    assert verdicts == ["ok", "ok", "gap", "late", "duplicate", "ok"]
    assert (tracker.gaps, tracker.out_of_order, tracker.duplicated) == (1, 1, 1)
    assert tracker.last_seen == 16
    # 14 never came, and 17..18 were published after the last one seen.
    assert tracker.lost(final_seq=18) == 3


def test_seq_tracker_bounds_its_memory_of_holes() -> None:
    tracker = SeqTracker(max_holes=5)
    tracker.start(0)
    tracker.see(100)
    assert len(tracker.holes) == 5
    assert tracker.lost(final_seq=100) == 99


# ----------------------------------------------------------------- connections


def test_connections_client_measures_connect_time_to_authentication() -> None:
    metrics = recorder()
    client = Connections(clients=2, tag="t").session(metrics).client(1)
    assert client.url("ws://127.0.0.1:9") == "ws://127.0.0.1:9/debug/t-conn-1"
    assert _authenticate(client, now=5.0) == []
    assert client.ready
    assert metrics.counters["opened"] == 1
    assert metrics.latencies["connect"].percentile_us(50) == pytest.approx(3000, rel=0.01)


def test_a_server_close_is_counted_by_code_and_not_retried_without_reconnect() -> None:
    metrics = recorder()
    client = Connections(clients=1).session(metrics).client(0)
    _authenticate(client)
    assert client.closed(1001, "going away", 1.0) == []
    assert metrics.counters["closed_by_server"] == 1
    assert metrics.errors == {"close:1001": 1}
    assert not client.live


def test_a_failed_connection_counts_its_kind() -> None:
    metrics = recorder()
    client = Connections(clients=1).session(metrics).client(0)
    client.start(0.0)
    assert client.failed("connect:refused", 0.01) == []
    assert metrics.errors == {"connect:refused": 1}
    assert metrics.counters["failed"] == 1
    assert not client.live


def test_stop_closes_cleanly_and_the_close_is_not_the_servers() -> None:
    metrics = recorder()
    client = Connections(clients=1).session(metrics).client(0)
    _authenticate(client)
    actions = client.stop(2.0)
    assert actions == [Close(1000, "load run finished")]
    client.closed(1000, "", 2.01)
    assert "closed_by_server" not in metrics.counters


def test_auth_failure_is_an_error_of_its_own() -> None:
    metrics = recorder()
    client = Connections(clients=1).session(metrics).client(0)
    client.start(0.0)
    client.opened(0.0)
    client.frame(server_frame("connection_established"), 0.0)
    client.frame(server_frame("error", {"code": "auth_failed", "message": "no"}), 0.0)
    client.closed(4001, "authentication failed", 0.0)
    assert metrics.errors == {"auth:failed": 1, "close:4001": 1}
    assert not client.ready


# ----------------------------------------------------------------- publish


def test_paced_publisher_follows_the_clock_without_drift() -> None:
    metrics = recorder()
    client = Publish(clients=1, rate=100.0, tag="t").session(metrics).client(0)
    _authenticate(client)
    client.begin(1.0)
    assert client.next_tick == 1.0
    sent = 0
    # Ticks arrive late by a varying amount; the schedule stays anchored at t0 + n / rate.
    now = 1.0
    while now < 2.0:
        sent += len(client.tick(now))
        assert client.next_tick is not None
        now = client.next_tick + 0.0007
    assert sent == 100  # t = 1.00, 1.01, ... 1.99
    assert metrics.counters["sent"] == 100
    assert "skipped" not in metrics.counters


def test_a_publisher_late_by_more_than_a_second_skips_and_says_so() -> None:
    metrics = recorder()
    client = Publish(clients=1, rate=10.0).session(metrics).client(0)
    _authenticate(client)
    client.begin(0.0)
    actions = client.tick(3.0)  # 31 were due; at most one second's worth is sent late
    assert len(actions) == 10
    assert metrics.counters["skipped"] == 21
    assert client.next_tick == pytest.approx(3.1)


def test_publish_latency_is_send_to_confirmation_and_closed_loop_sends_the_next() -> None:
    metrics = recorder()
    client = Publish(clients=1, rate=None, inflight=2, tag="t").session(metrics).client(0)
    _authenticate(client)
    frames = _sent(client.begin(1.0))
    assert [f["type"] for f in frames] == ["publish", "publish"]
    assert frames[0]["data"]["channel"] == "load-t"
    first = str(frames[0]["id"])
    following = _sent(
        client.frame(server_frame("delivery_confirmation", {"message_id": first, "seq": 1}, id=first), 1.004)
    )
    assert len(following) == 1 and following[0]["id"] != frames[1]["id"]
    assert metrics.latencies["publish"].percentile_us(50) == pytest.approx(4000, rel=0.01)
    assert metrics.counters["confirmed"] == 1
    client.stop(2.0)
    client.session.finish(2.0)
    assert metrics.counters["unconfirmed"] == 2


def test_a_rate_limited_publish_is_an_error_and_never_pending() -> None:
    metrics = recorder()
    client = Publish(clients=1, rate=None).session(metrics).client(0)
    _authenticate(client)
    frame = _sent(client.begin(0.0))[0]
    client.frame(
        server_frame("error", {"code": "rate_limited", "message": "slow", "operation_id": frame["id"]}, id=str(frame["id"])),
        0.1,
    )
    assert metrics.errors == {"error:rate_limited": 1}
    assert client.settled is False  # the replacement publish is pending


def test_generic_publish_is_an_echo_of_the_id() -> None:
    metrics = recorder()
    client = Publish(clients=1, protocol=GenericProtocol()).session(metrics).client(0)
    assert client.url("ws://127.0.0.1:9/echo") == "ws://127.0.0.1:9/echo"
    client.start(0.0)
    client.opened(0.001)  # no authentication: ready at the handshake
    assert client.ready
    text = client.begin(0.002)[0]
    assert isinstance(text, Send)
    (following,) = client.frame(text.text, 0.003)  # closed loop: the echo lets the next one go
    assert metrics.latencies["publish"].count == 1
    client.finish_sending(0.004)
    assert not client.settled
    assert isinstance(following, Send)
    assert client.frame(following.text, 0.005) == []
    assert client.settled


def test_rate_over_the_servers_limit_is_a_warning() -> None:
    assert Publish(clients=2, rate=150.0).warnings() == []
    (warning,) = Publish(clients=1, rate=150.0).warnings()
    assert "150 messages/s each" in warning and "limit of 100/s" in warning
    assert Publish(clients=1, rate=150.0, protocol=NovaProtocol(rate_limit=None)).warnings() == []
    assert "as fast as confirmations" in Publish(clients=1).warnings()[0]


# ----------------------------------------------------------------- fanout


def _subscribed(client: VirtualClient, last_seq: int = 0) -> dict[str, Any]:
    (subscribe,) = _sent(_authenticate(client))
    assert subscribe["type"] == "subscribe"
    client.frame(server_frame("subscribed", {"channel": subscribe["data"]["channel"], "last_seq": last_seq},
                              id=str(subscribe["id"])), 0.01)
    return subscribe


def test_fanout_subscriber_counts_a_gap_a_duplicate_and_out_of_order() -> None:
    metrics = recorder()
    session = Fanout(publishers=1, subscribers=1, tag="t").session(metrics)
    subscriber = session.client(1)
    subscribe = _subscribed(subscriber, last_seq=0)
    assert "since_seq" not in subscribe["data"]
    assert subscriber.ready
    for seq in (1, 2, 4, 3, 3, 5):
        subscriber.frame(channel_message(seq, "load-t", stamp=0.5), 1.0)
    session.final_seq = 7
    session.finish(2.0)
    assert metrics.counters["gaps"] == 1
    assert metrics.counters["out_of_order"] == 1
    assert metrics.counters["duplicated"] == 1
    assert metrics.counters["delivered"] == 5
    assert metrics.counters["lost"] == 2  # 6 and 7
    assert metrics.latencies["delivery"].percentile_us(50) == pytest.approx(500_000, rel=0.01)


def test_fanout_subscriber_is_settled_once_it_saw_the_last_confirmed_seq() -> None:
    session = Fanout(publishers=1, subscribers=1, tag="t").session(recorder())
    publisher, subscriber = session.client(0), session.client(1)
    _subscribed(subscriber)
    _authenticate(publisher)
    (publish,) = _sent(publisher.begin(0.0) or publisher.tick(0.0))
    publisher.frame(server_frame("delivery_confirmation", {"message_id": publish["id"], "seq": 1},
                                 id=str(publish["id"])), 0.01)
    assert session.final_seq == 1
    assert not session.settled
    subscriber.frame(channel_message(1, "load-t"), 0.02)
    assert session.settled


def test_fanout_needs_a_protocol_with_channels() -> None:
    with pytest.raises(LoadConfigError, match="needs channels"):
        Fanout(protocol=GenericProtocol()).validate()


# ----------------------------------------------------------------- reconnect-storm


def test_reconnect_storm_resubscribes_with_the_last_seq_seen() -> None:
    metrics = recorder()
    storm = ReconnectStorm(publishers=1, subscribers=4, drop_share=1.0, drops_per_client=1, duration=10.0, tag="t")
    session = storm.session(metrics)
    subscriber = session.client(2)
    _subscribed(subscriber, last_seq=3)
    subscriber.begin(100.0)
    (drop_at,) = subscriber.drops  # type: ignore[attr-defined]
    assert 101.0 <= drop_at <= 108.0  # 10% .. 80% of the duration
    for seq in (4, 5, 6):
        subscriber.frame(channel_message(seq, "load-t"), 100.5)
    assert subscriber.tick(drop_at - 0.5) == []
    assert subscriber.tick(drop_at) == [Drop()]
    assert subscriber.closed(1006, "dropped", drop_at + 0.001) == [Connect(storm.reconnect_delay)]
    (resubscribe,) = _sent(_authenticate_again(subscriber, drop_at + 0.1))
    assert resubscribe["data"] == {"channel": "load-t", "since_seq": 6}
    # The replay comes before subscribed, then live messages follow.
    subscriber.frame(channel_message(7, "load-t", stamp=drop_at - 0.1), drop_at + 0.2)
    subscriber.frame(server_frame("subscribed", {"channel": "load-t", "last_seq": 7}, id=str(resubscribe["id"])), drop_at + 0.2)
    subscriber.frame(channel_message(8, "load-t"), drop_at + 0.3)
    session.final_seq = 8
    session.finish(drop_at + 1)
    assert metrics.counters["drops"] == 1
    assert metrics.counters["reconnects"] == 1
    assert metrics.counters["replayed"] == 1
    assert metrics.counters["lost"] == 0
    assert "duplicated" not in metrics.counters
    assert metrics.latencies["replay"].count == 1


def _authenticate_again(client: VirtualClient, now: float) -> list[Any]:
    assert client.opened(now) == []
    auth = _sent(client.frame(server_frame("connection_established"), now))
    return list(client.frame(server_frame("auth_success", id=str(auth[0]["id"])), now))


def test_reconnect_storm_drops_the_share_asked_with_a_seeded_choice() -> None:
    storm = ReconnectStorm(publishers=2, subscribers=20, drop_share=0.5, drops_per_client=2)
    assert len(storm.dropping) == 10
    assert all(2 <= i < 22 for i in storm.dropping)
    assert storm.dropping == ReconnectStorm(publishers=2, subscribers=20, drop_share=0.5).dropping
    assert storm.dropping != ReconnectStorm(publishers=2, subscribers=20, drop_share=0.5, seed=7).dropping


def test_no_reconnect_after_a_policy_close() -> None:
    session = ReconnectStorm(publishers=1, subscribers=1, drop_share=0.0).session(recorder())
    subscriber = session.client(1)
    _subscribed(subscriber)
    assert subscriber.closed(1008, "slow consumer", 1.0) == []
    assert not subscriber.live


def test_reconnect_after_a_going_away_close() -> None:
    session = ReconnectStorm(publishers=1, subscribers=1, drop_share=0.0).session(recorder())
    subscriber = session.client(1)
    _subscribed(subscriber)
    assert subscriber.closed(1001, "server going away", 1.0) == [Connect(0.05)]


# ----------------------------------------------------------------- the registry


def test_create_builds_scenarios_by_their_cli_names() -> None:
    assert create("fanout", clients=30).subscribers == 30  # type: ignore[attr-defined]
    assert create("reconnect-storm").name == "reconnect-storm"
    assert create("connections", clients=5, rate=None).clients == 5


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("storm", {}, "unknown scenario 'storm'; known: connections, fanout, publish, reconnect-storm"),
        ("publish", {"clinets": 3}, "unknown parameter"),
        ("publish", {"rate": -5.0}, "rate must be > 0"),
        ("connections", {"duration": 0}, "duration must be > 0"),
        ("reconnect-storm", {"drop_share": 2.0}, "drop_share must be within 0..1"),
    ],
)
def test_create_refuses_bad_input_naming_the_rule(name: str, parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(LoadConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        create(name, **parameters)


def test_parameters_are_json_safe_and_never_carry_the_key() -> None:
    parameters = Fanout(protocol=NovaProtocol(api_key="secret")).parameters()
    text = json.dumps(parameters)
    assert "secret" not in text
    assert parameters["profile"] == "nova" and parameters["clients"] == 11


def test_publish_content_has_the_size_asked_and_carries_the_send_time() -> None:
    client = Publish(clients=1, rate=None, size=64, protocol=GenericProtocol()).session(recorder()).client(0)
    client.start(0.0)
    client.opened(0.0)
    (publish,) = client.begin(1234.5)
    assert isinstance(publish, Send)
    message_id, content = publish.text.split("|", 1)
    assert message_id.endswith("-1")
    assert len(content) == 64
    assert content.startswith("1234.500000|x")


def test_a_reconnecting_client_retries_with_backoff_then_gives_up() -> None:
    metrics = recorder()
    session = ReconnectStorm(publishers=1, subscribers=1, drop_share=0.0, reconnect_delay=0.1).session(metrics)
    subscriber = session.client(1)
    _subscribed(subscriber)
    assert subscriber.closed(1011, "internal error", 1.0) == [Connect(0.1)]
    delays = []
    for _ in range(subscriber.max_reconnect_attempts):
        actions = subscriber.failed("connect:refused", 2.0)
        delays.extend(a.delay for a in actions if isinstance(a, Connect))
    assert delays[:4] == [0.2, 0.4, 0.8, 1.0]
    assert len(delays) == subscriber.max_reconnect_attempts - 1
    assert not subscriber.live
    assert metrics.errors["connect:refused"] == subscriber.max_reconnect_attempts
