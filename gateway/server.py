"""Run the gateway: build it from settings and serve the partner API with uvicorn.

Used by ``gateway serve`` and ``gateway demo``; blocks until the server stops.
"""

from __future__ import annotations

import logging

import uvicorn

from gateway.adapters.http.app import create_app
from gateway.bootstrap import build_gateway
from gateway.settings import Settings

log = logging.getLogger("gateway")


def raise_open_files_limit() -> None:
    """Every stream holds a socket: raise the soft limit on open files to the hard limit (an
    unprivileged process may), and say what it is."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d: %s", soft, exc)
    log.info("open files limit %d (each stream holds one)", soft)


def run_server(settings: Settings) -> None:
    raise_open_files_limit()
    gateway = build_gateway(settings)
    if settings.tls_cert is None:
        log.warning(
            "serving plain HTTP on %s:%s (no --tls-cert): run it behind a TLS-terminating proxy",
            settings.host,
            settings.port,
        )
    log.info("issuer %s; %d contracts loaded", settings.issuer(), len(gateway.registry.histories))
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(
            settings.metrics_port, addr=settings.host, registry=gateway.metrics.registry
        )
        log.info("metrics on %s:%d/metrics", settings.host, settings.metrics_port)
    uvicorn.run(
        create_app(gateway),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_config=None,
        timeout_graceful_shutdown=5,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
    )
