"""Prometheus metrics of the gateway (``prometheus-client``), served on ``GATEWAY_METRICS_PORT``.

Each gateway builds its own ``GatewayMetrics`` with its own registry (nothing is registered at
import time), so two gateways in one process, as in the tests, do not share series.

Label values come from bounded sets only, never from what a caller sends: contracts and
products (the documents loaded), partitions (the topics'), routes (the API's path templates,
``unmatched`` for any other path), methods (the HTTP methods the API has, ``other``), statuses,
and reasons (the gateway's error codes and RFC 6749's). Never a token, a client's address or a
record's content. Series per process: about 20 per contract, 1 per contract and partition, 30
per route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
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


class LedgerHealth(Protocol):
    """What ``adapters/kafka/ledger.py``'s writer says of itself."""

    def problem(self) -> str | None: ...
    def queued(self) -> int: ...
    def reachable(self) -> bool: ...


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process (CPU, memory, open files), the interpreter and its collector.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.http_requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time until a request's answer began (for a stream: until it opened)",
            ["route", "method"],
            registry=self.registry,
        )
        self.token_requests = Counter(
            "gateway_token_requests_total",
            "Token requests at /oauth/token: outcome issued, or the RFC 6749 error refusing it",
            ["outcome"],
            registry=self.registry,
        )
        self.ledger_write_seconds = Histogram(
            "gateway_ledger_write_seconds",
            "Time from handing a ledger entry to Kafka to its acknowledgement (acks=all)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.ledger_failures = Counter(
            "gateway_ledger_failed_entries_total",
            "Ledger entries Kafka did not acknowledge (recorded entries are written again on a "
            "new chain; those acknowledged are counted by gateway_ledger_write_seconds)",
            registry=self.registry,
        )
        self.partition_lag = Gauge(
            "gateway_contract_partition_lag_records",
            "Records between the partner's last position and the log end, per partition",
            ["contract", "partition"],
            registry=self.registry,
        )
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

    def set_lag(self, contract: str, lags: Mapping[int, int]) -> None:
        """A contract's lag, in all and per partition."""
        self.contract_lag.labels(contract).set(sum(lags.values()))
        for partition, lag in lags.items():
            self.partition_lag.labels(contract, str(partition)).set(lag)

    def watch_ledger(self, ledger: LedgerHealth) -> None:
        """Expose the ledger writer's state and Kafka's reachability (read at each scrape)."""
        self.registry.register(_LedgerCollector(ledger))

    def watch_readers(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Expose the shared readers' figures (``adapters/kafka/shared.py``)."""
        self.registry.register(_ReadersCollector(stats))

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


class _LedgerCollector(Collector):
    def __init__(self, ledger: LedgerHealth) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "gateway_ledger_up",
            "1 while the ledger takes writes (streams and tokens may start), 0 not",
            value=1 if self._ledger.problem() is None else 0,
        )
        yield GaugeMetricFamily(
            "gateway_ledger_queue_entries",
            "Entries recorded and not yet handed to Kafka (the queue holds 100,000)",
            value=self._ledger.queued(),
        )
        yield GaugeMetricFamily(
            "gateway_kafka_up",
            "1 while a Kafka broker answered the ledger's last probe (every second), 0 not "
            "(and before the first)",
            value=1 if self._ledger.reachable() else 0,
        )


class _ReadersCollector(Collector):
    HELP: ClassVar[dict[str, str]] = {
        "topic_readers": "Topics read by a shared reader in this process",
        "partitions_read": "Partitions the shared readers read",
        "catch_up_readers": "Catch-up consumers lent to streams behind the window now",
    }

    def __init__(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        figures = self._stats()
        for name, help_text in self.HELP.items():
            yield GaugeMetricFamily(f"gateway_{name}", help_text, value=figures.get(name, 0))
