"""The per-message fast path gives the figures of the general one.

``VirtualClient.reply`` (what the engine calls per frame) against
``VirtualClient.frame`` (the general path, what the Locust driver calls), and
``Metrics.measure`` against ``Metrics.latency`` plus ``Metrics.count``: two
twins get the same events at the same fake times and must end with the same
frames sent, state, counters, histograms and timeline.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from harness.load import (
    GenericProtocol,
    Incoming,
    LoadProtocol,
    Metrics,
    NovaProtocol,
    Publish,
    Send,
)
from harness.load.engine import _clock
from harness.load.scenarios import VirtualClient

from ._frames import server_frame

Frames = list[str]


def _as_actions(answer: str | list[Any]) -> list[Any]:
    """reply()'s answer in frame()'s terms: a text is one Send."""
    return [Send(answer)] if isinstance(answer, str) else list(answer)


def _texts(actions: list[Any]) -> Frames:
    return [a.text for a in actions if isinstance(a, Send)]


class Twins:
    """The same publisher twice, one fed through frame(), one through reply()."""

    def __init__(self, scenario: Publish) -> None:
        self.metrics = (Metrics(start=0.0, primary="publish"), Metrics(start=0.0, primary="publish"))
        self.general = scenario.session(self.metrics[0]).client(0)
        self.fast = scenario.session(self.metrics[1]).client(0)

    def both(self, call: Callable[[VirtualClient], list[Any]]) -> Frames:
        general, fast = call(self.general), call(self.fast)
        assert general == fast
        return _texts(general)

    def frame(self, text: str, now: float) -> Frames:
        general = self.general.frame(text, now)
        answer = self.fast.reply(text, now)
        assert _as_actions(answer) == list(general), f"frame {text!r} at {now}"
        return _texts(general)

    def assert_same(self, now: float) -> None:
        a, b = self.metrics
        assert a.counters == b.counters
        assert a.errors == b.errors
        assert a.summaries() == b.summaries()
        assert a.timeline_points(now) == b.timeline_points(now)
        for attr in ("state", "ready", "sending", "unconfirmed", "pending", "_n", "next_tick"):
            assert getattr(self.general, attr) == getattr(self.fast, attr), attr


def _start(twins: Twins, now: float = 0.0) -> Frames:
    twins.both(lambda c: c.start(now))
    twins.both(lambda c: c.opened(now + 0.001))
    return twins.both(lambda c: c.begin(now + 0.002))


def test_closed_loop_echoes_give_the_same_frames_and_figures_through_reply() -> None:
    twins = Twins(Publish(clients=1, inflight=3, size=40, protocol=GenericProtocol(), tag="t"))
    outstanding = _start(twins)
    rng = random.Random(7)
    now = 0.01
    # Echoes arrive in any order over several timeline intervals, with frames that confirm nothing
    # in between: a frame without the separator, an id never sent, an id confirmed already.
    for i in range(600):
        now += rng.uniform(0.0001, 0.02)
        echo = outstanding.pop(rng.randrange(len(outstanding)))
        outstanding += twins.frame(echo, now)
        if i % 97 == 0:
            assert twins.frame("no separator here", now) == []
            assert twins.frame("t-publ-0-999999|x", now) == []
            assert twins.frame(echo, now) == []
    assert len(outstanding) == 3
    twins.assert_same(now)
    assert twins.metrics[1].counters["unexpected_confirmations"] == 2 * 7
    # Once sending stops, a confirmation publishes nothing, on either path.
    twins.both(lambda c: c.finish_sending(now))
    for echo in outstanding:
        now += 0.001
        assert twins.frame(echo, now) == []
    twins.assert_same(now)
    assert twins.fast.settled
    assert twins.metrics[1].counters["confirmed"] == twins.metrics[1].counters["sent"] == 603
    assert twins.metrics[1].latencies["publish"].count == 603


def test_a_paced_publisher_confirms_through_reply_without_publishing() -> None:
    twins = Twins(Publish(clients=1, rate=50.0, protocol=GenericProtocol(), tag="t"))
    assert _start(twins) == []
    sent = twins.both(lambda c: c.tick(0.5))
    assert len(sent) > 1
    for i, echo in enumerate(sent):
        assert twins.frame(echo, 0.6 + i / 1000) == []
    twins.assert_same(1.0)
    assert twins.fast.settled


def test_nova_confirmations_take_the_general_path_with_their_seqs() -> None:
    twins = Twins(Publish(clients=1, protocol=NovaProtocol(), tag="t"))
    twins.both(lambda c: c.start(0.0))
    twins.both(lambda c: c.opened(0.001))
    (auth,) = twins.frame(server_frame("connection_established"), 0.002)
    assert twins.frame(server_frame("auth_success", id=json.loads(auth)["id"]), 0.003) == []
    (publish,) = twins.both(lambda c: c.begin(0.004))
    for seq in range(1, 50):
        message_id = json.loads(publish)["id"]
        confirmation = server_frame("delivery_confirmation", {"message_id": message_id, "seq": seq}, id=message_id)
        (publish,) = twins.frame(confirmation, 0.004 + seq * 0.03)
    assert twins.frame(server_frame("pong"), 2.0) == []
    twins.assert_same(2.0)
    assert twins.general.session.final_seq == twins.fast.session.final_seq == 49


class AckProtocol(GenericProtocol):
    """A server that confirms with ``ack:<id>`` and may echo too: its own parse, no confirmation_id."""

    def parse(self, text: str) -> Incoming:
        if text.startswith("ack:"):
            return Incoming(LoadProtocol.CONFIRMATION, text[4:])
        return Incoming(LoadProtocol.OTHER)


def test_a_protocol_with_its_own_parse_is_parsed_on_the_fast_path_too() -> None:
    twins = Twins(Publish(clients=1, protocol=AckProtocol(), tag="t"))
    (publish,) = _start(twins)
    message_id = publish.partition("|")[0]
    # The echo looks like a generic confirmation, but this protocol says it is not one.
    assert twins.frame(publish, 0.01) == []
    assert not twins.fast.settled and "confirmed" not in twins.metrics[1].counters
    (following,) = twins.frame(f"ack:{message_id}", 0.02)
    assert following.startswith("t-publ-0-2|")
    twins.assert_same(0.02)


class Calls:
    """A recorder without ``measure`` (like Locust's): it keeps every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def latency(self, name: str, seconds: float, now: float) -> None:
        self.calls.append(("latency", name, seconds, now))

    def count(self, name: str, now: float, n: int = 1) -> None:
        self.calls.append(("count", name, now, n))

    def error(self, kind: str, now: float, n: int = 1) -> None:
        self.calls.append(("error", kind, now, n))

    def gauge(self, name: str, value: float) -> None:
        self.calls.append(("gauge", name, value))


def test_a_recorder_without_measure_gets_the_same_calls_through_reply() -> None:
    scenario = Publish(clients=1, protocol=GenericProtocol(), tag="t")
    general, fast = Calls(), Calls()
    clients = scenario.session(general).client(0), scenario.session(fast).client(0)
    texts: list[str] = []
    for client in clients:
        client.start(0.0)
        client.opened(0.001)
        texts += _texts(client.begin(0.002))
    for i in range(20):
        now = 0.003 + i * 0.01
        (next_general,) = _texts(clients[0].frame(texts[0], now))
        next_fast = clients[1].reply(texts[1], now)
        assert next_general == next_fast
        texts = [next_general, next_general]
    assert general.calls == fast.calls
    assert [c[:2] for c in fast.calls[-4:]] == [
        ("latency", "publish"), ("count", "confirmed"), ("count", "received"), ("count", "sent"),
    ]


@pytest.mark.parametrize("name", ["publish", "connect"])
def test_measure_records_what_latency_and_count_record(name: str) -> None:
    one_by_one, together = Metrics(start=10.0, primary="publish"), Metrics(start=10.0, primary="publish")
    rng = random.Random(3)
    now = 10.0
    for i in range(2000):
        now += rng.uniform(0.0, 0.01) if i % 500 else 2.5  # a stall now and then: empty intervals
        seconds = rng.choice([0.0, 1e-7, rng.uniform(0.0001, 0.01), 75.0])
        counters = [(), ("confirmed",), ("confirmed", "received", "sent")][i % 3]
        one_by_one.latency(name, seconds, now)
        for counter in counters:
            one_by_one.count(counter, now)
        together.measure(name, seconds, now, counters)
        if i % 250 == 0:
            one_by_one.error("close:1006", now)
            together.error("close:1006", now)
    assert together.counters == one_by_one.counters
    assert together.summaries() == one_by_one.summaries()
    assert together.summaries()[name].clamped == one_by_one.summaries()[name].clamped > 0
    assert together.timeline_points(now) == one_by_one.timeline_points(now)


def test_the_engine_reads_the_loops_own_clock_where_it_has_one() -> None:
    class Shifted(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return super().time() + 1000.0

    default, shifted = asyncio.new_event_loop(), Shifted()
    try:
        clock = _clock(default)
        assert abs(clock() - default.time()) < 1.0  # the same clock (time.monotonic), read directly
        assert _clock(shifted) == shifted.time
    finally:
        default.close()
        shifted.close()


def test_a_publisher_whose_on_message_is_changed_is_not_short_cut() -> None:
    from harness.load.scenarios import _Publisher

    seen: list[str] = []

    class Watching(_Publisher):
        def on_message(self, incoming: Incoming, now: float) -> list[Any]:
            seen.append(incoming.kind)
            return super().on_message(incoming, now)

    class WatchedPublish(Publish):
        def make_client(self, session: Any, index: int) -> VirtualClient:
            return Watching(session, index, rate=None, inflight=1, size=self.size, phase=0.0, max_pending=10)

    twins = Twins(WatchedPublish(clients=1, protocol=GenericProtocol(), tag="t"))
    (publish,) = _start(twins)
    assert len(twins.frame(publish, 0.01)) == 1
    assert seen == ["confirmation", "confirmation"]  # frame() once, reply() once
    twins.assert_same(0.01)
