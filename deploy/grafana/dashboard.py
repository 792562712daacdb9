"""The operators' Grafana dashboard, built with Grafana's own typed SDK
(``grafana-foundation-sdk``)::

    .venv/bin/python deploy/grafana/dashboard.py > deploy/grafana/exchange-gateway.json

``tests/test_observability.py`` checks that the committed JSON is what this builds, that
Grafana's dashboard model loads it, and that every query parses (promtool) and names only
metrics the gateway exposes. Rows answer an operator's questions in turn: are partners being
served, is the API healthy, can deliveries be recorded, how is the process.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

UID = "exchange-gateway"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: Every query filters on these, so one dashboard serves several deployments.
SELECTOR = 'job=~"$job"'


def query(expr: str, legend: str = "") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr.replace("SEL", SELECTOR)).legend_format(legend)


def graph(title: str, unit: str, *queries: prometheus.Dataquery, span: int = 8) -> Any:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).span(span)
    for ref, q in zip("ABCD", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return panel.height(8).min(0)


def single(title: str, unit: str, q: prometheus.Dataquery, description: str) -> Any:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .with_target(q.ref_id("A"))
        .span(4)
        .height(4)
    )


def build() -> dict[str, Any]:
    board = (
        dashboard.Dashboard("Exchange Gateway")
        .uid(UID)
        .description(
            "Partners served, the API, the ledger and Kafka, the process (docs/operations.md)"
        )
        .tags(["exchange-gateway"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("job")
            .label("Job")
            .datasource(DATASOURCE)
            .query("label_values(gateway_ledger_up, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
        )
        .with_row(dashboard.Row("Now"))
        .with_panel(
            single(
                "Ledger taking writes",
                "none",
                query("min(gateway_ledger_up{SEL})"),
                "1 on every replica, or partners are refused (alert GatewayLedgerFailing)",
            )
        )
        .with_panel(
            single(
                "Kafka answering",
                "none",
                query("min(gateway_kafka_up{SEL})"),
                "1 on every replica (alert GatewayKafkaUnavailable)",
            )
        )
        .with_panel(
            single(
                "Open streams and pulls",
                "none",
                query("sum(gateway_open_streams{SEL})"),
                "Over every replica and contract",
            )
        )
        .with_panel(
            single(
                "Contracts missing an objective today",
                "none",
                query(
                    "count(max by (contract, objective) (gateway_service_level_breached{SEL}) == 1)"
                    " or vector(0)"
                ),
                "Freshness or availability below the contract's promise (docs/service-levels.md)",
            )
        )
        .with_panel(
            single(
                "Server errors",
                "percentunit",
                query(
                    'sum(rate(gateway_http_requests_total{SEL,status=~"5.."}[5m]))'
                    " / sum(rate(gateway_http_requests_total{SEL}[5m]))"
                ),
                "Share of answers that were 5xx, last 5 minutes (alert above 5%)",
            )
        )
        .with_panel(
            single(
                "Redis (shared quotas)",
                "none",
                query("max(gateway_quota_store_degraded{SEL})"),
                "1 while Redis is away: quotas enforced per replica",
            )
        )
        .with_row(dashboard.Row("Partners"))
        .with_panel(
            graph(
                "Records delivered a second",
                "short",
                query(
                    "sum by (contract) (rate(gateway_delivered_records_total{SEL}[5m]))",
                    "{{contract}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Open streams and pulls",
                "short",
                query("sum by (contract) (gateway_open_streams{SEL})", "{{contract}}"),
            )
        )
        .with_panel(
            graph(
                "Lag (records behind the log end)",
                "short",
                query("max by (contract) (gateway_contract_lag_records{SEL})", "{{contract}}"),
            )
        )
        .with_panel(
            graph(
                "Lag per partition",
                "short",
                query(
                    "max by (contract, partition) (gateway_contract_partition_lag_records{SEL})",
                    "{{contract}} p{{partition}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Freshness p99 (age when written to the partner)",
                "s",
                query(
                    "histogram_quantile(0.99, sum by (contract, le) "
                    "(rate(gateway_record_freshness_seconds_bucket{SEL}[5m])))",
                    "{{contract}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Quotas: refusals and throttling",
                "short",
                query(
                    "sum by (code) (rate(gateway_quota_refusals_total{SEL}[5m]))",
                    "refused {{code}}",
                ),
                query(
                    "sum by (contract) (rate(gateway_throttled_seconds_total{SEL}[5m]))",
                    "throttled s/s {{contract}}",
                ),
            )
        )
        .with_row(dashboard.Row("API"))
        .with_panel(
            graph(
                "Answers a second by status",
                "reqps",
                query("sum by (status) (rate(gateway_http_requests_total{SEL}[5m]))", "{{status}}"),
            )
        )
        .with_panel(
            graph(
                "Time to answer p99 by route",
                "s",
                query(
                    "histogram_quantile(0.99, sum by (route, le) "
                    "(rate(gateway_http_request_duration_seconds_bucket{SEL}[5m])))",
                    "{{route}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Token requests by outcome",
                "reqps",
                query(
                    "sum by (outcome) (rate(gateway_token_requests_total{SEL}[5m]))", "{{outcome}}"
                ),
            )
        )
        .with_row(dashboard.Row("Ledger and Kafka"))
        .with_panel(
            graph(
                "Ledger write latency (to Kafka's acknowledgement)",
                "s",
                query(
                    "histogram_quantile(0.5, sum by (le) "
                    "(rate(gateway_ledger_write_seconds_bucket{SEL}[5m])))",
                    "p50",
                ),
                query(
                    "histogram_quantile(0.99, sum by (le) "
                    "(rate(gateway_ledger_write_seconds_bucket{SEL}[5m])))",
                    "p99",
                ),
            )
        )
        .with_panel(
            graph(
                "Ledger queue and failures",
                "short",
                query(
                    "max by (instance) (gateway_ledger_queue_entries{SEL})", "queued {{instance}}"
                ),
                query(
                    "sum by (instance) (rate(gateway_ledger_failed_entries_total{SEL}[5m]))",
                    "failed/s {{instance}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Readers of Kafka",
                "short",
                query("sum(gateway_topic_readers{SEL})", "topic readers"),
                query("sum(gateway_catch_up_readers{SEL})", "catch-up readers lent"),
            )
        )
        .with_row(dashboard.Row("Process"))
        .with_panel(
            graph(
                "CPU",
                "percentunit",
                query("rate(process_cpu_seconds_total{SEL}[5m])", "{{instance}}"),
            )
        )
        .with_panel(
            graph(
                "Memory (resident)",
                "bytes",
                query("process_resident_memory_bytes{SEL}", "{{instance}}"),
            )
        )
        .with_panel(
            graph(
                "Open files and collections",
                "short",
                query("process_open_fds{SEL}", "open files {{instance}}"),
                query(
                    "sum by (instance) (rate(python_gc_collections_total{SEL}[5m]))",
                    "collections/s {{instance}}",
                ),
            )
        )
    )
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for number, panel in enumerate(encoded["panels"], start=1):  # Grafana wants them unique
        panel["id"] = number
    return encoded


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
