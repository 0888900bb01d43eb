"""A test client for the Nova WebSocket endpoint: a real ``websockets`` connection that
validates every frame it receives against the protocol models.

Every wait has a deadline (:data:`TIMEOUT`) and fails with what was expected
and what arrived.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from reference_server.protocol import now_iso, parse_server_message
from tests.conftest import LiveServer, start_server

#: ``server_factory(**settings)`` from tests/conftest.py.
ServerFactory = Callable[..., LiveServer]

#: Seconds any single wait may take before the test fails.
TIMEOUT = 5.0


def new_client_id(prefix: str = "t") -> str:
    """A unique, valid client id, so tests never share state."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_channel(prefix: str = "ch") -> str:
    """A unique, valid channel name (seqs start at 1 even on a shared server)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def module_server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[LiveServer]:
    """Body of a module-scoped server fixture: start once, stop at the end of the module."""
    server = start_server(tmp_path_factory.mktemp(name) / "nova.db")
    try:
        yield server
    finally:
        server.stop()


class NovaTestClient:
    """One connection; ``frames`` holds every validated frame received so far."""

    def __init__(self, ws: ClientConnection, client_id: str) -> None:
        self.ws = ws
        self.client_id = client_id
        self.frames: list[dict[str, Any]] = []

    async def send(
        self, type: str, data: dict[str, Any] | None = None, *, id: str | None = None
    ) -> str | None:
        frame: dict[str, Any] = {
            "type": type,
            "data": data if data is not None else {},
            "timestamp": now_iso(),
            "client_id": self.client_id,
        }
        if id is not None:
            frame["id"] = id
        await self.ws.send(json.dumps(frame))
        return id

    async def send_raw(self, payload: str | bytes) -> None:
        await self.ws.send(payload)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame, validated against the server models and addressed to this client."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.client_id}: no frame within {timeout} s; received so far: "
                f"{[f['type'] for f in self.frames]}"
            ) from None
        assert isinstance(raw, str), f"server sent a binary frame: {raw!r}"
        frame: dict[str, Any] = json.loads(raw)
        parse_server_message(frame)  # raises ProtocolError naming what is wrong
        assert frame["client_id"] == self.client_id, (
            f"frame addressed to {frame['client_id']!r}, expected the recipient {self.client_id!r}: {frame}"
        )
        self.frames.append(frame)
        return frame

    async def expect(self, type: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame, which must be of ``type``."""
        frame = await self.recv(timeout)
        assert frame["type"] == type, f"{self.client_id}: expected {type!r}, got {frame}"
        return frame

    async def expect_error(self, code: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await self.expect("error", timeout)
        assert frame["data"]["code"] == code, f"expected error {code!r}, got {frame['data']}"
        return frame

    async def authenticate(
        self, api_key: str = "valid-test-key", **metadata: Any
    ) -> dict[str, Any]:
        op = uuid.uuid4().hex
        await self.send("connect", {"api_key": api_key, "metadata": metadata}, id=op)
        frame = await self.expect("auth_success")
        assert frame["id"] == op
        return frame

    async def request(
        self, type: str, data: dict[str, Any] | None = None, *, reply: str
    ) -> dict[str, Any]:
        """Send a frame with a fresh id and return the reply of type ``reply`` echoing that id."""
        op = uuid.uuid4().hex
        await self.send(type, data, id=op)
        frame = await self.expect(reply)
        assert frame.get("id") == op, f"reply {frame} does not echo the operation id {op}"
        return frame

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
        """Wait for the connection to close (draining frames); return (code, reason)."""

        async def drain() -> None:
            try:
                while True:
                    await self.recv(timeout)
            except ConnectionClosed:
                pass

        try:
            await asyncio.wait_for(drain(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.client_id}: still open after {timeout} s; frames: {[f['type'] for f in self.frames]}"
            ) from None
        return self.ws.close_code, self.ws.close_reason

    @property
    def close_frame_received(self) -> bool:
        return self.ws.protocol.close_rcvd is not None


@asynccontextmanager
async def nova_client(
    url: str, client_id: str, *, greet: bool = True, **kwargs: Any
) -> AsyncIterator[NovaTestClient]:
    """Connect to ``url`` (ending in the client id); by default read ``connection_established``."""
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", 2)
    kwargs.setdefault("proxy", None)
    async with connect(url, **kwargs) as ws:
        client = NovaTestClient(ws, client_id)
        if greet:
            await client.expect("connection_established")
        yield client


@asynccontextmanager
async def authenticated(
    url: str, client_id: str, api_key: str = "valid-test-key", **kwargs: Any
) -> AsyncIterator[NovaTestClient]:
    async with nova_client(url, client_id, **kwargs) as client:
        await client.authenticate(api_key)
        yield client


#: One TLS context for every HarnessAPI call: building one per client costs ~40 ms.
_TLS = ssl.create_default_context()


class HarnessAPI:
    """Calls the server's ``/__harness`` API with its token (a fresh httpx client per call,
    so it can be built by a plain fixture and used from any event loop)."""

    def __init__(self, server: LiveServer, *, token: str | None = None) -> None:
        self.base_url = server.http_url
        self.headers = server.harness_headers if token is None else {"X-Harness-Token": token}

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=TIMEOUT, verify=_TLS
        ) as http:
            return await http.request(method, url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)
