"""The ASGI application: routes, problem details, and the composition of the gateway."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from gateway import __version__
from gateway.adapters.http import openapi, problems
from gateway.adapters.http.observe import Observed
from gateway.adapters.http.routes import (
    catalog,
    contracts,
    legal,
    oauth,
    organisations,
    products,
    teams,
    usage,
)
from gateway.adapters.http.security import LegalPageHeaders
from gateway.adapters.http.streaming import SendWatch
from gateway.services.anchoring import anchor_checkpoints
from gateway.services.container import Gateway
from gateway.services.watcher import follow, watch

log = logging.getLogger(__name__)

#: Allocations (net of frees) between two young-generation collections (CPython's is 700).
GC_THRESHOLD = 10_000


def create_app(gateway: Gateway) -> FastAPI:
    send_watch = SendWatch()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # uvicorn listens once this returns: wait for the ledger, so that the first requests
        # are served rather than refused with "the ledger is starting".
        wait = gateway.settings.startup_wait_seconds
        if wait and not await anyio.to_thread.run_sync(gateway.ledger.wait_ready, wait):
            log.error("the ledger takes no writes after %.0f s: listening, refusing with 503", wait)
        async with anyio.create_task_group() as tasks:
            interval = gateway.settings.watch_seconds
            if interval > 0:
                tasks.start_soon(
                    watch, gateway.fingerprint, interval, gateway.reload, gateway.observe
                )
                tasks.start_soon(follow, gateway.follow, gateway.settings.follow_seconds)
            if gateway.anchors:
                tasks.start_soon(
                    anchor_checkpoints,
                    gateway.latest_checkpoint,
                    gateway.anchors,
                    gateway.settings.anchor_seconds,
                    gateway.anchored,
                )
            tasks.start_soon(gateway.streams.watch_changes)
            tasks.start_soon(gateway.quotas.keep_leases)
            tasks.start_soon(gateway.consumption.run, lambda: gateway.registry, gateway.ends_of)
            tasks.start_soon(gateway.service_levels.run, gateway.servable)
            tasks.start_soon(send_watch.run)
            # What exists now (the code, the framework, the contracts: ~100,000 objects) lives
            # as long as the process: out of the collector's sight, a full collection looks
            # only at what streams made. It had stalled every stream 100-270 ms at a time.
            gc.collect()
            gc.freeze()
            # A round of a thousand streams' wake-ups holds a few thousand objects at once,
            # which die with the round. At the default threshold (700) each round set off
            # collections that promoted them, and full collections followed (3 in 20 s, up to
            # 109 ms each); at 10,000 one collection ran in 20 s (measured, bench/fanout.py).
            gc.set_threshold(GC_THRESHOLD, 10, 10)
            yield
            tasks.cancel_scope.cancel()
        await gateway.quotas.close()
        await gateway.consumption.close()
        await gateway.service_levels.close()
        await anyio.to_thread.run_sync(gateway.close)

    app = FastAPI(
        # FastAPI's own OpenTelemetry spans carry the path, query and addresses a caller sent;
        # the gateway's (adapters/http/observe.py) hold the route template and status only.
        telemetry={
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        },
        lifespan=lifespan,
        title="Exchange Gateway",
        version=__version__,
        description="Partner API: OAuth2 client credentials, contracts, SSE/NDJSON streams, pull.",
    )
    app.state.gateway = gateway
    app.state.send_watch = send_watch
    app.add_middleware(LegalPageHeaders, prefixes=("/legal", "/teams"))
    # Outermost: every line of a request carries its id, and its metrics and span cover it.
    traced = gateway.settings.tracing.endpoint is not None
    app.add_middleware(Observed, metrics=gateway.metrics, traced=traced)
    problems.install(app)
    openapi.install(app)
    app.include_router(oauth.router)
    app.include_router(contracts.router)
    app.include_router(usage.router)
    app.include_router(catalog.router)
    app.include_router(organisations.router)
    app.include_router(products.router)
    app.include_router(teams.router)
    app.include_router(legal.router)

    @app.get("/livez", include_in_schema=False)
    def livez() -> Response:
        """Alive: the process answers. An orchestrator restarts it only when this fails, never
        for an outage of Kafka or the ledger, which a restart would not cure."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    @app.get("/healthz", include_in_schema=False)
    def readyz() -> Response:
        """Ready when deliveries can be recorded (fail closed: otherwise no stream may start);
        a load balancer sends nothing here while it is not."""
        problem = gateway.ledger.problem()
        if problem is None:
            return JSONResponse({"status": "ok", "ledger": "ok"})
        return JSONResponse({"status": "degraded", "ledger": problem}, status_code=503)

    return app
