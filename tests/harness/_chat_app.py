"""A foreign app for the harness's own tests: not Nova, no harness code of its own.

Starlette, as another team would write it:

- ``/chat/{client_id}``: sends ``{"type": "welcome", "user": client_id}`` on
  accept, then echoes every text frame as it came (JSON such as
  ``{"type": "chat", "user": ..., "text": ...}`` or plain text);
- ``/plain``: the same echo with no client id in the URL;
- ``GET /hello`` and ``GET /__harness/{rest}``: the app's own HTTP routes (the
  latter shows whether the middleware's control API shadows it).

:data:`DISCONNECTS` records, per path, the code and reason of the
``websocket.disconnect`` the endpoint received; after it, the endpoint still
tries to send one more frame, as careless apps do.  ``broken_app`` fails its
startup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

#: ``{path: (code, reason)}`` of every ``websocket.disconnect`` an endpoint received.
DISCONNECTS: dict[str, tuple[int, str]] = {}

#: ``{path: count}`` of accepted connections.
ACCEPTED: dict[str, int] = {}


async def _echo(websocket: WebSocket) -> None:
    path = websocket.url.path
    await websocket.accept()
    ACCEPTED[path] = ACCEPTED.get(path, 0) + 1
    user = websocket.path_params.get("client_id")
    if user is not None:
        await websocket.send_json({"type": "welcome", "user": user})
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect as exc:
        DISCONNECTS[path] = (exc.code, exc.reason or "")
        try:
            await websocket.send_json({"type": "late", "user": user})
        except WebSocketDisconnect:
            pass  # the client went first; a send after a server-side close would raise otherwise


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


async def own_harness(request: Request) -> JSONResponse:
    return JSONResponse({"answered_by": "the app"})


app = Starlette(
    routes=[
        WebSocketRoute("/chat/{client_id}", _echo),
        WebSocketRoute("/plain", _echo),
        Route("/hello", hello),
        Route("/__harness/{rest:path}", own_harness),
    ]
)


@asynccontextmanager
async def _failing_lifespan(app: Starlette) -> AsyncIterator[None]:
    raise RuntimeError("database unreachable: connection refused")
    yield


broken_app = Starlette(lifespan=_failing_lifespan)
