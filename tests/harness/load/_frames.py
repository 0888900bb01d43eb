"""Nova server frames for driving virtual clients in tests, and a recorder that keeps everything."""

from __future__ import annotations

import json
from typing import Any

from harness.load.metrics import Metrics


def server_frame(type_: str, data: dict[str, Any] | None = None, id: str | None = None) -> str:
    message: dict[str, Any] = {
        "type": type_,
        "data": data or {},
        "timestamp": "2025-01-01T12:00:00.000Z",
        "client_id": "c",
    }
    if id is not None:
        message["id"] = id
    return json.dumps(message)


def channel_message(seq: int, channel: str, stamp: float = 0.0) -> str:
    return server_frame(
        "channel_message",
        {"channel": channel, "seq": seq, "message_id": f"m{seq}", "sender": "p", "content": f"{stamp:.6f}|x"},
    )


def recorder() -> Metrics:
    return Metrics(start=0.0, primary="delivery")
