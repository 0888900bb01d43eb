"""The FastAPI application factory: wiring only, the behaviour lives in the routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import harness_api, rest, web, ws
from .hosts import DEFAULT_ALLOWED_HOSTS, HostGuard, HostPolicy
from .hub import Hub
from .logsafe import DEFAULT_REDACTED_PARAMS, install_log_sanitizer
from .settings import Settings
from .storage import Storage
from .testmode import install_faults

__all__ = ["create_app"]

log = logging.getLogger("reference_server")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the reference Nova server.

    State on ``app.state``: ``settings``, ``storage`` (opened by the lifespan),
    ``hub`` (live connections and subscriptions) and, in test mode only,
    ``faults`` (the harness's fault rules, see :mod:`reference_server.testmode`;
    None otherwise).  Test mode raises
    :class:`~reference_server.testmode.FaultShimUnavailable` when the harness's
    fault installer is not installed.

    Hardening (docs/architecture.md, "Hardening"): every request and handshake
    whose ``Host`` is not in ``settings.allowed_hosts`` (or the bind address) is
    refused by :class:`~reference_server.hosts.HostGuard`, the outermost
    middleware; and the process's log sanitizer
    (:func:`~reference_server.logsafe.install_log_sanitizer`: control characters
    escaped, ``settings.log_redact_params`` redacted) is put on the server's
    loggers, once however many apps are built.  A bad ``allowed_hosts`` entry
    raises ValueError naming it.
    """
    settings = settings or Settings()
    install_log_sanitizer(getattr(settings, "log_redact_params", DEFAULT_REDACTED_PARAMS))
    hosts = HostPolicy.build(
        getattr(settings, "allowed_hosts", DEFAULT_ALLOWED_HOSTS), bind_host=settings.host
    )

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
    app.state.faults = None
    app.state.fault_shim = None
    app.include_router(rest.router)
    rest.install(app)
    app.include_router(harness_api.router)
    app.add_middleware(ws.EndpointMiddleware)  # innermost: serves /debug/{client_id}
    web.install(app)
    if settings.test_mode:
        # Handshake faults are decided by the harness's FaultMiddleware, mounted here inside the
        # host guard; its rules are the ones the /__harness routes set and the endpoint applies.
        app.state.fault_shim = install_faults(app, ws_path=ws.WS_PATH)
        app.state.faults = app.state.fault_shim.rules
    app.add_middleware(HostGuard, policy=hosts)
    return app
