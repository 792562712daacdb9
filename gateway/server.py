"""Run the gateway: build it from settings and serve the partner API with uvicorn.

Used by ``gateway serve`` and ``gateway demo``; blocks until the server stops.
"""

from __future__ import annotations

import logging

import uvicorn

from gateway.adapters.http.app import create_app
from gateway.adapters.kafka.source import KafkaRecordSource
from gateway.bootstrap import build_gateway
from gateway.settings import Settings

log = logging.getLogger("gateway")


def run_server(settings: Settings) -> None:
    kafka_config = settings.kafka.librdkafka_config()
    gateway = build_gateway(settings, lambda topic: KafkaRecordSource(kafka_config, topic))
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
