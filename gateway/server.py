"""Run the gateway: build it from settings and serve the partner API with uvicorn.

Used by ``gateway serve`` and ``gateway demo``; blocks until the server stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import uvicorn

from gateway.adapters.http.app import create_app
from gateway.bootstrap import Gateway, build_gateway
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


class GatewayServer(uvicorn.Server):
    """uvicorn's server, which ends the gateway's streams first when it shuts down: each
    gets ``event: end`` with reason ``shutdown`` and closes, instead of being cut when the
    grace period runs out."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.gateway.streams.shut_down()
        await super().shutdown(sockets)


def run_server(settings: Settings, gateway: Gateway | None = None) -> None:
    """Serve ``gateway`` (built from ``settings`` unless given) until a signal stops it."""
    raise_open_files_limit()
    if gateway is None:
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
    app = create_app(gateway)
    provider = None
    if settings.tracing.endpoint:
        from gateway import tracing

        provider = tracing.configure(
            settings.tracing.endpoint,
            service=settings.tracing.service_name,
            instance=settings.replica,
            sample_ratio=settings.tracing.sample_ratio,
        )
        log.info("traces to %s (OTLP/HTTP)", settings.tracing.endpoint)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_config=None,
        timeout_graceful_shutdown=5,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
    )
    server = GatewayServer(config, gateway)
    sockets = None
    if settings.reuse_port:  # one of several workers on this port: the kernel shares them out
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, settings.port))
        sockets = [sock]
    # uvicorn raises the SIGINT it caught once it has shut down (as ``uvicorn.run`` expects).
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=sockets)
    finally:
        if provider is not None:
            provider.shutdown()  # the spans still batched


def run_workers(settings: Settings, workers: int, arguments: list[str]) -> int:
    """``gateway serve --workers N``: N processes serving one port (``SO_REUSEPORT``: the
    kernel gives each new connection to one of them), each a replica of its own
    (``<replica>-<n>`` in the ledger, metrics on ``metrics_port + n``), sharing quotas and
    replay protection through Redis as replicas do. Stops them all on SIGINT or SIGTERM, and
    when one of them exits (an orchestrator then restarts the whole). The exit status is the
    first worker's to exit (128 + the signal's number when a signal ended it, as a shell
    reports it: 143 after SIGTERM)."""
    children = []
    for n in range(workers):
        env = {
            **os.environ,
            "GATEWAY_REPLICA": f"{settings.replica}-{n}",
            "GATEWAY_REUSE_PORT": "true",
        }
        if settings.metrics_port is not None:
            env["GATEWAY_METRICS_PORT"] = str(settings.metrics_port + n)
        command = [sys.executable, "-m", "gateway", "serve", *arguments]
        children.append(subprocess.Popen(command, env=env))  # noqa: S603 (our own command)
    log.info("%d workers on port %d: pids %s", workers, settings.port, [c.pid for c in children])

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = None
    while status is None:
        for child in children:
            if (code := child.poll()) is not None:
                status = code
                break
        else:
            time.sleep(0.2)
    if status < 0:  # ended by a signal: uvicorn re-raises SIGTERM once it has shut down
        status = 128 - status
    log.info("a worker exited with status %d: stopping the others", status)
    forward(signal.SIGTERM, None)
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return status
