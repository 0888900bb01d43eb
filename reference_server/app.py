"""The FastAPI application factory: wiring only, the behaviour lives in the routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import harness_api, rest, web, ws
from .faults import FaultController
from .hub import Hub
from .settings import Settings
from .storage import Storage

__all__ = ["create_app"]

log = logging.getLogger("reference_server")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the reference Nova server.

    State on ``app.state``: ``settings``, ``storage`` (opened by the lifespan),
    ``hub`` (live connections and subscriptions) and ``faults`` (the
    test-mode fault controller; its rules are only reachable in test mode).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await app.state.storage.open()
        if settings.test_mode:
            log.warning("test mode is ON: /__harness fault control is enabled")
        try:
            yield
        finally:
            await app.state.hub.close_all(1001, "server shutting down")
            await app.state.storage.close()

    app = FastAPI(
        title="Nova reference server",
        version="1.0.0",
        description=(
            "Reference WebSocket server of the Nova e2e harness: two-step authentication, "
            "channels with access control, delivery confirmations and chat threads. "
            "The WebSocket protocol is documented in docs/protocol.md and served as JSON "
            "Schema at /api/protocol/schema."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.storage = Storage(settings.db, synchronous=settings.db_synchronous)
    app.state.hub = Hub()
    app.state.faults = FaultController()
    app.include_router(rest.router)
    rest.install(app)
    app.include_router(ws.router)
    app.include_router(harness_api.router)
    app.add_middleware(ws.TransportCaptureMiddleware)
    web.install(app)
    return app
