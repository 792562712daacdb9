"""The operators' alert rules and dashboard: they load in the tools that run them, every query
parses, and they name only metrics the gateway exposes."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from tests.conftest import RunningGateway

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "exchange-gateway.json"
#: Names in a query that are metrics (PromQL's functions and keywords are not these).
METRIC = re.compile(r"\b((?:gateway|process|python)_[a-z_]+)\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make test` installs Debian's prometheus package"
    return found


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(queries) > 20
    return queries


def alert_queries() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return {rule["alert"]: rule["expr"] for rule in rules}


def test_the_alert_rules_load_and_their_unit_tests_pass() -> None:
    checked = run("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run("test", "rules", "alerts.test.yml", cwd=ALERTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # The five, and each is answered in the runbook.
    names = set(alert_queries())
    assert {
        "GatewayLedgerFailing",
        "GatewayKafkaUnavailable",
        "GatewayLagGrowing",
        "GatewayHighErrorRatio",
        "GatewayFreshnessBreached",
    } <= names
    runbook = (REPO / "docs" / "operations.md").read_text()
    for name in names:
        assert f"### {name}" in runbook, f"docs/operations.md does not answer {name}"


def test_the_dashboard_is_what_its_builder_makes_and_grafanas_model_loads_it() -> None:
    spec = importlib.util.spec_from_file_location("dashboard", DASHBOARD.with_name("dashboard.py"))
    assert spec is not None
    assert spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    committed = json.loads(DASHBOARD.read_text())
    assert committed == builder.build(), (
        "deploy/grafana/exchange-gateway.json is stale: run "
        "`.venv/bin/python deploy/grafana/dashboard.py > deploy/grafana/exchange-gateway.json`"
    )
    loaded = Dashboard.from_json(committed)
    assert json.loads(json.dumps(loaded, cls=JSONEncoder)) == committed, "a field Grafana lacks"
    ids = [panel["id"] for panel in committed["panels"]]
    assert len(set(ids)) == len(ids)


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each query of the dashboard as a recording rule's expression (with the
    dashboard's ``$job`` variable as Grafana would substitute it)."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr.replace("$job", ".*")}
        for n, expr in enumerate(dashboard_queries())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_and_dashboard_name_only_metrics_the_gateway_exposes(
    serve: Callable[..., RunningGateway],
) -> None:
    registry = serve().gateway.metrics.registry
    exposed = {family.name for family in registry.collect()}
    exposed |= {sample.name for family in registry.collect() for sample in family.samples}
    queries: list[Any] = [*dashboard_queries(), *alert_queries().values()]
    used = {name for query in queries for name in METRIC.findall(query)}
    assert len(used) > 20

    def known(name: str) -> bool:
        return name in exposed or any(
            name.endswith(s) and name.removesuffix(s) in exposed for s in SUFFIXES
        )

    unknown = sorted(name for name in used if not known(name))
    assert not unknown, f"no such metric: {unknown}"
