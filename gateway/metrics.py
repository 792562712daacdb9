"""Prometheus metrics of the gateway (``prometheus-client``), served on ``GATEWAY_METRICS_PORT``.

Labels name contracts and organisations, never clients' tokens or record contents.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

QUOTA_STORE_DEGRADED = Gauge(
    "gateway_quota_store_degraded",
    "1 while Redis is unreachable and this replica enforces quota/replicas on its own",
)
QUOTA_REFUSALS = Counter(
    "gateway_quota_refusals_total",
    "Requests refused by a quota (HTTP 429) and streams ended by the daily volume",
    ["code"],
)
THROTTLED_SECONDS = Counter(
    "gateway_throttled_seconds_total",
    "Time streams waited to stay within their rate quotas",
    ["contract"],
)
DELIVERED_RECORDS = Counter(
    "gateway_delivered_records_total", "Records sent to partners", ["contract"]
)
DELIVERED_BYTES = Counter("gateway_delivered_bytes_total", "Bytes sent to partners", ["contract"])
OPEN_STREAMS = Gauge("gateway_open_streams", "Streams and pulls in progress", ["contract"])
