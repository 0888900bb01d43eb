"""The fault proxy's pure layer: toxics, chains, frame parsing, connection tracking.

No sockets, no event loop: every toxic is a function of its input items,
its state, the times carried by the items and a seeded ``random.Random``.
Mirrors ``harness/proxy/{toxics,frames,tracking,model}.py``.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from websockets.frames import Close as WsClose
from websockets.frames import Frame, Opcode

from harness.proxy import (
    Bandwidth,
    Blackhole,
    Chunk,
    Close,
    Eof,
    FrameParser,
    Latency,
    LimitData,
    ProxyConfigError,
    ResetPeer,
    Slicer,
    SlowClose,
    StreamTracker,
    Target,
    Timer,
    ToxicChain,
    parse_frame_header,
)
from harness.proxy.model import directions
from harness.proxy.tracking import DOWNSTREAM, UPSTREAM, FrameSeen, RequestSeen, ResponseSeen

WS_REQUEST = (
    b"GET /debug/client-42?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
WS_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def frame(payload: bytes, *, mask: bool = False, opcode: Opcode = Opcode.BINARY) -> bytes:
    """A real RFC 6455 frame, serialised by ``websockets`` itself."""
    return Frame(opcode, payload).serialize(mask=mask)


def data_of(steps: list[Any]) -> bytes:
    return b"".join(s.data for s in steps if isinstance(s, Chunk))


def chunks(steps: list[Any]) -> list[Chunk]:
    return [s for s in steps if isinstance(s, Chunk)]


def run(toxic: Any, items: list[Any], seed: int = 7) -> list[Any]:
    stage = toxic.stage(random.Random(seed))
    out: list[Any] = []
    for item in items:
        out.extend(stage.process(item))
    return out


# ---------------------------------------------------------------- chunks


def test_chunk_split_keeps_offsets_and_partitions_boundaries() -> None:
    c = Chunk(1.0, b"abcdefgh", offset=100, boundaries=(102, 105, 108), framed=True)
    a, b = c.split(3)
    assert (a.data, a.offset, a.boundaries) == (b"abc", 100, (102,))
    assert (b.data, b.offset, b.boundaries, b.end) == (b"defgh", 103, (105, 108), 108)
    a, b = c.split(5)  # a boundary exactly at the cut belongs to the first part
    assert a.boundaries == (102, 105) and b.boundaries == (108,)
    assert Chunk.join([a, b], 2.0) == Chunk(2.0, b"abcdefgh", 100, (102, 105, 108), True)


# ---------------------------------------------------------------- latency


def test_latency_delays_every_chunk_and_the_fin() -> None:
    out = run(Latency(200), [Chunk(1.0, b"a"), Chunk(1.5, b"b"), Eof(2.0)])
    assert [(type(s).__name__, round(s.at, 6)) for s in out] == [
        ("Chunk", 1.2), ("Chunk", 1.7), ("Eof", 2.2)
    ]


def test_latency_jitter_stays_in_range_keeps_order_and_is_seeded() -> None:
    items = [Chunk(i * 0.001, bytes([i % 256])) for i in range(300)]
    out = run(Latency(100, jitter=50), items, seed=1)
    times = [c.at for c in chunks(out)]
    assert times == sorted(times), "a chunk overtook the one before it"
    delays = [c.at - i.at for c, i in zip(chunks(out), items, strict=True)]
    # Each delay is 100 +- 50 ms, or more when the chunk before it left later.
    assert all(0.05 - 1e-9 <= d <= 0.15 + 1e-9 for d in delays)
    assert max(delays) - min(delays) > 0.02, "jitter did not vary the delay"
    assert data_of(out) == b"".join(i.data for i in items)
    assert [c.at for c in chunks(run(Latency(100, jitter=50), items, seed=1))] == times
    assert [c.at for c in chunks(run(Latency(100, jitter=50), items, seed=2))] != times


# ---------------------------------------------------------------- bandwidth


def test_bandwidth_trickles_bytes_at_the_rate_and_queues_bursts() -> None:
    # 80 kbps = 10 000 bytes/s: 1000 bytes take 0.1 s, in 10 ms (100-byte) pieces.
    out = run(Bandwidth(80), [Chunk(0.0, b"x" * 1000), Chunk(0.0, b"y" * 500)])
    pieces = chunks(out)
    assert data_of(out) == b"x" * 1000 + b"y" * 500
    assert {len(p) for p in pieces} == {100}
    assert pieces[9].at == pytest.approx(0.1)
    assert pieces[-1].at == pytest.approx(0.15)
    later = run(Bandwidth(80), [Chunk(0.0, b"x" * 100), Chunk(5.0, b"y" * 100)])
    assert [round(p.at, 6) for p in chunks(later)] == [0.01, 5.01], "an idle link has no backlog"


# ---------------------------------------------------------------- slicer


def test_slicer_splits_into_seeded_sizes_spaced_by_the_delay() -> None:
    payload = bytes(range(256)) * 8
    out = run(Slicer(10, size_variation=4, delay_us=100), [Chunk(1.0, payload, offset=50)], seed=3)
    pieces = chunks(out)
    assert data_of(out) == payload
    assert all(1 <= len(p) <= 14 for p in pieces[:-1]) and len(pieces) > 100
    assert len({len(p) for p in pieces}) > 3, "no size variation"
    assert [p.offset for p in pieces] == [50 + sum(len(q) for q in pieces[:i]) for i in range(len(pieces))]
    assert pieces[1].at - pieces[0].at == pytest.approx(100e-6)
    again = chunks(run(Slicer(10, size_variation=4, delay_us=100), [Chunk(1.0, payload, 50)], seed=3))
    assert [len(p) for p in again] == [len(p) for p in pieces]


def test_slicer_rejects_sizes_that_could_be_empty() -> None:
    with pytest.raises(ProxyConfigError, match="size_variation"):
        Slicer(4, size_variation=4)
    with pytest.raises(ProxyConfigError, match="average_size"):
        Slicer(0)


# ---------------------------------------------------------------- slow close, blackhole, reset


def test_slow_close_delays_only_the_fin() -> None:
    out = run(SlowClose(300), [Chunk(1.0, b"a"), Eof(1.0)])
    assert out[0] == Chunk(1.0, b"a")
    assert isinstance(out[1], Eof) and out[1].at == pytest.approx(1.3)


def test_blackhole_holds_everything_until_removed_then_releases_in_order() -> None:
    stage = Blackhole().stage(random.Random(0))
    assert stage.start(0.0) == []
    assert stage.process(Chunk(1.0, b"ab")) == []
    assert stage.process(Chunk(2.0, b"cd")) == []
    assert stage.process(Eof(3.0)) == []
    assert stage.held_bytes == 4
    released = stage.flush(10.0)
    assert [type(s).__name__ for s in released] == ["Chunk", "Chunk", "Eof"]
    assert data_of(released) == b"abcd" and all(s.at == 10.0 for s in released)
    assert stage.held_bytes == 0


def test_blackhole_timeout_and_reset_peer_set_timers() -> None:
    assert Blackhole(timeout_ms=500).stage(random.Random(0)).start(2.0) == [
        Timer(2.5, reset=False, reason="blackhole timeout")
    ]
    stage = ResetPeer(timeout_ms=250).stage(random.Random(0))
    assert stage.start(1.0) == [Timer(1.25, reset=True, reason="reset_peer")]
    assert stage.process(Chunk(1.1, b"still flows")) == [Chunk(1.1, b"still flows")]


# ---------------------------------------------------------------- limit data


def ws_stream(*payloads: bytes, mask: bool = False) -> tuple[bytes, tuple[int, ...]]:
    """Frames back to back, and the offset where each ends."""
    data, ends = b"", []
    for payload in payloads:
        data += frame(payload, mask=mask)
        ends.append(len(data))
    return data, tuple(ends)


def test_limit_data_cuts_exactly_after_n_bytes_even_mid_frame() -> None:
    data, ends = ws_stream(b"a" * 10, b"b" * 10)  # frames of 12 bytes
    out = run(LimitData(17), [Chunk(1.0, data, 0, ends, True)])
    assert data_of(out) == data[:17]
    assert out[-1] == Close(1.0, reset=False, reason="limit_data", cut_at=17, at_boundary=False)


def test_limit_data_at_frame_boundary_cuts_after_the_last_whole_frame() -> None:
    data, ends = ws_stream(b"a" * 10, b"b" * 10, b"c" * 10)
    # Fed in 5-byte reads: bytes of a frame are held until the frame is complete.
    tracker_chunks = [Chunk(float(i), data[i : i + 5], i, tuple(e for e in ends if i < e <= i + 5), True)
                      for i in range(0, len(data), 5)]
    out = run(LimitData(30, at_frame_boundary=True), tracker_chunks)
    assert data_of(out) == data[:24], "two whole frames (24 bytes) fit in 30, the third does not"
    assert out[-1].cut_at == 24 and out[-1].at_boundary is True
    assert all(c.end in ends for c in chunks(out)), "released only at frame ends"


def test_limit_data_at_boundary_exactly_full_and_on_opaque_streams() -> None:
    data, ends = ws_stream(b"a" * 10, b"b" * 10)
    out = run(LimitData(24, at_frame_boundary=True), [Chunk(0.0, data, 0, ends, True)])
    assert data_of(out) == data and out[-1].cut_at == 24
    # No structure known (not HTTP/WebSocket): the cut falls at N bytes.
    out = run(LimitData(5, at_frame_boundary=True), [Chunk(0.0, b"0123456789")])
    assert data_of(out) == b"01234" and out[-1].at_boundary is None


def test_limit_data_counts_from_when_it_applies_and_drops_everything_after() -> None:
    stage = LimitData(4).stage(random.Random(0))
    assert data_of(stage.process(Chunk(0.0, b"ab", offset=1000))) == b"ab"
    out = stage.process(Chunk(0.0, b"cdef", offset=1002))
    assert data_of(out) == b"cd"
    assert isinstance(out[-1], Close) and out[-1].cut_at == 1004
    assert stage.process(Chunk(0.0, b"more", offset=1006)) == []


# ---------------------------------------------------------------- chains


def test_chain_applies_stages_by_order_and_tags_timers() -> None:
    chain = ToxicChain()
    chain.attach("slow", 2, Latency(100).stage(random.Random(0)), now=0.0)
    started = chain.attach("reset", 1, ResetPeer(1000).stage(random.Random(0)), now=0.0)
    assert chain.keys == ["reset", "slow"]
    assert started == [Timer(1.0, reset=True, reason="reset_peer", key="reset")]
    assert chain.feed(Chunk(0.0, b"x")) == [Chunk(0.1, b"x")]
    with pytest.raises(ProxyConfigError):
        chain.attach("slow", 3, Latency(1).stage(random.Random(0)), now=0.0)


def test_detaching_a_blackhole_sends_what_it_held_through_later_stages() -> None:
    chain = ToxicChain()
    chain.attach("hole", 1, Blackhole().stage(random.Random(0)), now=0.0)
    chain.attach("slow", 2, Latency(100).stage(random.Random(0)), now=0.0)
    assert chain.feed(Chunk(0.0, b"held")) == []
    assert chain.held_bytes == 4
    assert chain.detach("hole", now=5.0) == [Chunk(5.1, b"held")]
    assert chain.feed(Chunk(6.0, b"next")) == [Chunk(6.1, b"next")]
    assert chain.detach("missing", now=7.0) == []


def test_an_empty_chain_passes_items_through() -> None:
    assert ToxicChain().feed(Eof(1.0)) == [Eof(1.0)]
    assert not ToxicChain()


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "make",
    [lambda: Latency(-1), lambda: Latency(10, jitter=-1), lambda: Bandwidth(0),
     lambda: SlowClose(float("nan")), lambda: LimitData(-5), lambda: Blackhole(-1),
     lambda: ResetPeer(-2)],
)
def test_toxics_reject_bad_values_with_a_clear_error(make: Any) -> None:
    with pytest.raises(ProxyConfigError, match="must be"):
        make()


def test_directions_accept_aliases_and_name_the_valid_ones() -> None:
    assert directions("to_server") == directions("upstream") == ("upstream",)
    assert directions("to_client") == directions("downstream") == ("downstream",)
    assert directions("both") == ("upstream", "downstream")
    with pytest.raises(ProxyConfigError, match="'upstream'.*'downstream'.*'both'"):
        directions("sideways")


def test_target_matching() -> None:
    every = Target()
    assert every.matches(1, False, None, False) is True
    ws42 = Target(websocket_only=True, path_contains="client-42")
    assert ws42.matches(1, False, None, False) is None, "unknown until the request head is read"
    assert ws42.matches(1, True, "/debug/client-42", True) is True
    assert ws42.matches(1, True, "/debug/client-43", True) is False
    assert ws42.matches(1, True, "/debug/client-42", False) is False
    assert Target(connection_id=3).matches(4, True, "/", True) is False


# ---------------------------------------------------------------- frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("mask", [False, True])
def test_frame_header_lengths_and_masking(size: int, mask: bool) -> None:
    raw = frame(b"z" * size, mask=mask)
    header = parse_frame_header(raw)
    assert header is not None
    assert header.payload_length == size
    assert header.masked is mask
    assert header.header_length == 2 + (0 if size < 126 else 2 if size < 65536 else 8) + 4 * mask
    assert header.frame_length == len(raw)
    assert parse_frame_header(raw[: header.header_length - 1]) is None


def test_frame_header_rejects_a_64_bit_length_with_the_top_bit_set() -> None:
    with pytest.raises(ValueError, match="most significant bit"):
        parse_frame_header(b"\x82\x7f" + b"\x80" + b"\x00" * 7)


def test_frame_parser_finds_every_frame_end_whatever_the_read_sizes() -> None:
    rng = random.Random(5)
    payloads = [b"p" * n for n in (0, 5, 125, 126, 300, 65536, 3)]
    stream = b"".join(frame(p, mask=True) for p in payloads)
    stream += frame(WsClose(4001, "auth failed").serialize(), mask=True, opcode=Opcode.CLOSE)
    expected: list[int] = []
    pos = 0
    for p in payloads:
        pos += len(frame(p, mask=True))
        expected.append(pos)
    expected.append(len(stream))
    for sizes in ([1] * 50 + [len(stream)], [rng.randint(1, 40) for _ in range(10000)]):
        parser, i, ends, frames = FrameParser(offset=0), 0, [], []
        for n in sizes:
            if i >= len(stream):
                break
            found = parser.feed(stream[i : i + n])
            frames += found
            ends += [f.end for f in found]
            i += n
        assert ends == expected
        assert frames[-1].close_code == 4001, "close payload is unmasked to read the code"
        assert not parser.in_frame


# ---------------------------------------------------------------- tracking


def test_tracker_holds_a_split_request_head_then_classifies_before_passing_it_on() -> None:
    tracker = StreamTracker()
    out, notes = tracker.feed(UPSTREAM, 1.0, WS_REQUEST[:20])
    assert out == [] and notes == [] and not tracker.classified
    out, notes = tracker.feed(UPSTREAM, 2.0, WS_REQUEST[20:])
    assert tracker.classified and tracker.websocket
    assert isinstance(notes[0], RequestSeen) and notes[0].request is not None
    assert notes[0].request.path == "/debug/client-42?x=1"
    assert out == [(UPSTREAM, Chunk(2.0, WS_REQUEST, 0, (len(WS_REQUEST),), True))]


def test_tracker_marks_frame_ends_both_ways_after_a_101() -> None:
    tracker = StreamTracker()
    tracker.feed(UPSTREAM, 0.0, WS_REQUEST)
    server_frames, ends = ws_stream(b"hello", b"x" * 200)
    out, notes = tracker.feed(DOWNSTREAM, 0.0, WS_RESPONSE + server_frames)
    assert isinstance(notes[0], ResponseSeen) and notes[0].upgraded and tracker.upgraded
    (direction, chunk), = out
    head = len(WS_RESPONSE)
    assert direction == DOWNSTREAM
    assert chunk.boundaries == (head, head + ends[0], head + ends[1]) and chunk.framed
    client = frame(WsClose(1000, "").serialize(), mask=True, opcode=Opcode.CLOSE)
    out, notes = tracker.feed(UPSTREAM, 0.0, client)
    assert out[0][1].boundaries == (len(WS_REQUEST) + len(client),)
    assert isinstance(notes[0], FrameSeen) and notes[0].frame.close_code == 1000
    assert tracker.frames == {UPSTREAM: 1, DOWNSTREAM: 2}


def test_tracker_refused_upgrade_is_not_a_websocket() -> None:
    tracker = StreamTracker()
    tracker.feed(UPSTREAM, 0.0, WS_REQUEST)
    out, notes = tracker.feed(DOWNSTREAM, 0.0, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    assert isinstance(notes[0], ResponseSeen) and notes[0].response.status == 403
    assert not tracker.websocket and not notes[0].upgraded
    assert [c.framed for _, c in out] == [True, False]
    assert tracker.opaque


def test_tracker_non_http_is_opaque_at_once() -> None:
    tracker = StreamTracker()
    out, notes = tracker.feed(UPSTREAM, 0.0, b"\x00\x01binary")
    assert notes == [RequestSeen(None)] and tracker.opaque and tracker.classified
    assert out == [(UPSTREAM, Chunk(0.0, b"\x00\x01binary", 0))]


def test_tracker_releases_held_bytes_when_the_server_speaks_first() -> None:
    tracker = StreamTracker()
    assert tracker.feed(UPSTREAM, 0.0, b"GET") == ([], [])
    out, notes = tracker.feed(DOWNSTREAM, 1.0, b"220 smtp ready\r\n")
    assert out == [(UPSTREAM, Chunk(1.0, b"GET", 0)), (DOWNSTREAM, Chunk(1.0, b"220 smtp ready\r\n", 0))]
    assert notes == [RequestSeen(None)] and tracker.opaque


def test_tracker_plain_http_request_classified_with_path() -> None:
    tracker = StreamTracker()
    out, notes = tracker.feed(UPSTREAM, 0.0, b"POST /api/x HTTP/1.1\r\nHost: a\r\n\r\nbody")
    assert isinstance(notes[0], RequestSeen) and notes[0].request is not None
    assert (notes[0].request.method, notes[0].request.websocket) == ("POST", False)
    assert [(c.data, c.framed) for _, c in out] == [
        (b"POST /api/x HTTP/1.1\r\nHost: a\r\n\r\n", True), (b"body", False)
    ]
