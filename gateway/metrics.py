"""Prometheus metrics of the gateway (``prometheus-client``), served on ``GATEWAY_METRICS_PORT``.

Each gateway builds its own ``GatewayMetrics`` with its own registry (nothing is registered at
import time), so two gateways in one process, as in the tests, do not share series.
Labels name contracts and organisations, never clients' tokens or record contents.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.quota_store_degraded = Gauge(
            "gateway_quota_store_degraded",
            "1 while Redis is unreachable and this replica enforces quota/replicas on its own",
            registry=self.registry,
        )
        self.quota_refusals = Counter(
            "gateway_quota_refusals_total",
            "Requests refused by a quota (HTTP 429) and streams ended by the daily volume",
            ["code"],
            registry=self.registry,
        )
        self.throttled_seconds = Counter(
            "gateway_throttled_seconds_total",
            "Time streams waited to stay within their rate quotas",
            ["contract"],
            registry=self.registry,
        )
        self.delivered_records = Counter(
            "gateway_delivered_records_total",
            "Records sent to partners",
            ["contract"],
            registry=self.registry,
        )
        self.delivered_bytes = Counter(
            "gateway_delivered_bytes_total",
            "Bytes sent to partners",
            ["contract"],
            registry=self.registry,
        )
        self.contract_lag = Gauge(
            "gateway_contract_lag_records",
            "Records between the partner's last position and the log end, over the partitions",
            ["contract"],
            registry=self.registry,
        )
        self.published_records = Counter(
            "gateway_published_records_total",
            "Records teams published over HTTP, by product and outcome (written, refused)",
            ["product", "outcome"],
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "gateway_open_streams",
            "Streams and pulls in progress",
            ["contract"],
            registry=self.registry,
        )
