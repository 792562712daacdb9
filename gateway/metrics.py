"""Prometheus metrics of the gateway (``prometheus-client``), served on ``GATEWAY_METRICS_PORT``.

Each gateway builds its own ``GatewayMetrics`` with its own registry (nothing is registered at
import time), so two gateways in one process, as in the tests, do not share series.
Labels name contracts and organisations, never clients' tokens or record contents.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.core.service_levels import BOUNDS_MS, DayTally


class MeasuredLevels(Protocol):
    """What ``services/service_levels.py`` measured in this process."""

    @property
    def totals(self) -> Mapping[str, DayTally]: ...
    @property
    def available(self) -> Mapping[str, bool]: ...


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
        self.service_level_breached = Gauge(
            "gateway_service_level_breached",
            "1 while today's measured service level of a contract misses its objective",
            ["contract", "objective"],
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "gateway_open_streams",
            "Streams and pulls in progress",
            ["contract"],
            registry=self.registry,
        )

    def watch_service_levels(self, tracker: MeasuredLevels) -> None:
        """Expose what ``tracker`` measured in this process (read at each scrape)."""
        self.registry.register(_ServiceLevelCollector(tracker))


class _ServiceLevelCollector(Collector):
    """Freshness as a Prometheus histogram per contract (the tracker's fixed buckets: counted
    once per batch in the hot path, not per record by the client library), records released
    by the partner's lag, and whether each contract in force can be served."""

    def __init__(self, tracker: MeasuredLevels) -> None:
        self._tracker = tracker

    def collect(self) -> Iterator[Metric]:
        freshness = HistogramMetricFamily(
            "gateway_record_freshness_seconds",
            "Age of records when written to the partner (from their Kafka timestamp)",
            labels=["contract"],
        )
        released = CounterMetricFamily(
            "gateway_record_freshness_released",
            "Records not counted against freshness: the partner was away or fell behind",
            labels=["contract"],
        )
        for contract, tally in sorted(self._tracker.totals.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*BOUNDS_MS, None), tally.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound is None else f"{bound / 1000:g}", cumulative))
            freshness.add_metric([contract], buckets, tally.age_ms / 1000)
            released.add_metric([contract], tally.released)
        yield freshness
        yield released
        available = GaugeMetricFamily(
            "gateway_contract_available",
            "1 while a contract in force can be served (its deliveries can be recorded), 0 not",
            labels=["contract"],
        )
        for contract, up in sorted(self._tracker.available.items()):
            available.add_metric([contract], 1 if up else 0)
        yield available
