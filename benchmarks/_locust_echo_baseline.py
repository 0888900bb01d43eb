"""A minimal Locust WebSocket user for ``benchmarks/load_engine.py``: the baseline only, not the harness's.

Locust has no WebSocket user of its own; this is the usual glue, as small as
it gets: websocket-client on Locust's gevent (its sockets are patched), one
connection per user, a task that sends one frame and waits for its echo,
each round trip a Locust request event with its latency.  It measures what
Locust itself costs per message, with no scenario logic on top::

    locust -f benchmarks/_locust_echo_baseline.py --headless -u 10 -r 10 --host ws://127.0.0.1:PORT/

The frame is ``LOCUST_ECHO_PAYLOAD`` from the environment (the bare loop's
frame, set by the benchmark), else 64 bytes.
"""

from __future__ import annotations

import os
import time

import websocket
from locust import User, constant, task

__all__ = ["BaselineEchoUser"]

PAYLOAD = os.environ.get("LOCUST_ECHO_PAYLOAD") or "c0000000-publ-0-0|" + "x" * 64


class BaselineEchoUser(User):
    """One WebSocket per user; each task is one send -> echo round trip, reported as ``WS echo``."""

    wait_time = constant(0)

    def on_start(self) -> None:
        assert self.host, "pass --host ws://127.0.0.1:PORT/"
        self.ws = websocket.create_connection(self.host, timeout=30)

    @task
    def echo(self) -> None:
        start = time.perf_counter()
        exception: BaseException | None = None
        try:
            self.ws.send(PAYLOAD)
            reply = self.ws.recv()
            if reply != PAYLOAD:
                exception = AssertionError(f"expected the echo of the frame sent, got {reply[:80]!r}")
        except (websocket.WebSocketException, OSError) as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="WS",
            name="echo",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(PAYLOAD),
            exception=exception,
            context={},
        )

    def on_stop(self) -> None:
        self.ws.close()
