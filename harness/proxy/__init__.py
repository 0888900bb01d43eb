"""The fault proxy: network-depth faults for WebSocket apps, in process, and server-depth ones for any app.

An asyncio TCP proxy on its own thread and loop, in the spirit of Toxiproxy,
that also understands HTTP upgrades and WebSocket frames::

    from harness.proxy import FaultProxy, Latency, LimitData, Target

    with FaultProxy(upstream=("127.0.0.1", 8000), seed=1234) as proxy:
        page.goto(proxy.url)                               # the app, through the proxy
        with proxy.add_toxic(Latency(200, jitter=50), "downstream",
                             target=Target(websocket_only=True, path_contains=client_id)):
            ...                                            # only this page's socket is slow
        proxy.add_toxic(LimitData(1000, at_frame_boundary=True), "to_client")
        proxy.wait_for_event("cut")

    # Server-depth faults for an app in any language, applied on the wire:
    with FaultProxy(upstream=("127.0.0.1", 8000), ws_path="/ws/{client_id}") as proxy:
        faults = ProxyFaultControl(proxy)
        faults.reject_handshakes(client_id, 503, count=1)    # the proxy answers the upgrade
        faults.close_socket(client_id, 4000, "bye")           # a real close handshake

Layers (see docs/proxy.md): :mod:`.toxics` (what each toxic does to a stream,
pure), :mod:`.frames` (RFC 6455 frame headers, pure), :mod:`.tracking` (HTTP
request/response heads and frame boundaries of a connection, pure),
:mod:`.proxy` (the asyncio shim that applies them), :mod:`.control`
(:class:`ProxyFaultControl`, the server-depth fault port of a proxy).
"""

from __future__ import annotations

from .control import ProxyFaultControl
from .errors import ProxyConfigError, ProxyError, ProxyTimeoutError
from .frames import FrameHeader, FrameInfo, FrameParser, parse_frame_header
from .model import ConnectionInfo, DirectionArg, DirectionStats, EventKind, ProxyEvent, Target
from .proxy import FaultProxy, RefusalHandle, ToxicHandle
from .toxics import (
    Bandwidth,
    Blackhole,
    Chunk,
    Close,
    Eof,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    SlowClose,
    Stage,
    Step,
    Timer,
    Toxic,
    ToxicChain,
)
from .tracking import HttpRequest, HttpResponse, StreamTracker

__all__ = [
    "Bandwidth",
    "Blackhole",
    "Chunk",
    "Close",
    "ConnectionInfo",
    "DirectionArg",
    "DirectionStats",
    "Eof",
    "EventKind",
    "FaultProxy",
    "FrameHeader",
    "FrameInfo",
    "FrameParser",
    "HttpRequest",
    "HttpResponse",
    "Latency",
    "LimitData",
    "ProxyConfigError",
    "ProxyError",
    "ProxyEvent",
    "ProxyFaultControl",
    "ProxyTimeoutError",
    "RefusalHandle",
    "ResetPeer",
    "Slicer",
    "SlowClose",
    "Stage",
    "Step",
    "StreamTracker",
    "Target",
    "Timer",
    "Toxic",
    "ToxicChain",
    "ToxicHandle",
    "parse_frame_header",
]
