"""Sockets the runner binds: ephemeral ports read back, TCP_NODELAY on accepted connections."""

from __future__ import annotations

import asyncio
import socket

import pytest

from reference_server.runner import bind_socket


def test_ephemeral_port_is_bound_and_read_back() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] != 0
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
            bind_socket("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


@pytest.mark.asyncio
async def test_accepted_connections_have_tcp_nodelay() -> None:
    """Without it, Nagle and the peer's delayed ACK add ~40 ms to each keep-alive response."""
    sock = bind_socket("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.get_extra_info("socket")
        accepted.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
