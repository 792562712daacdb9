"""Quotas on live streams over real sockets: rates throttle without loss, concurrency and daily
volume refuse with 429, amendments change quotas live, the token endpoint is limited."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.core.documents import canonical_hash, load_yaml
from gateway.core.quotas import Quotas, day_window
from gateway.services.report import build_report
from gateway.settings import QuotaSettings
from tests.conftest import RunningGateway, World, order, produce_exact
from tests.sse import LiveStream
from tests.test_authorization import token_request

CONTRACT = "acme-globex-orders"


def with_quotas(world: World, quotas: str) -> None:
    """Re-sign the globex contract with ``quotas: {...}``."""
    world.add_contract(CONTRACT, "globex", extra=f"quotas: {quotas}\n")


def backlog(kafka_config: dict[str, str], topic: str, count: int, start: int = 0) -> None:
    """``count`` orders, fast to produce and read back, with the log end exact."""
    records = [(f"o-{n}", json.dumps(order(n)).encode()) for n in range(start, start + count)]
    produce_exact(kafka_config, topic, records)


def window(stamps: list[tuple[float, int]], start: float, seconds: float) -> int:
    return sum(amount for t, amount in stamps if start <= t < start + seconds)


def bearer(gw: RunningGateway, org: str = "globex") -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.token(org)}"}


@pytest.mark.parametrize(
    ("quotas", "count", "unit"),
    [("{records_per_second: 200}", 1500, "records"), ("{bytes_per_second: 50000}", 1300, "bytes")],
)
def test_rate_quotas_throttle_within_ten_percent_and_lose_nothing(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    kafka_config: dict[str, str],
    quotas: str,
    count: int,
    unit: str,
) -> None:
    with_quotas(world, quotas)
    backlog(kafka_config, world.topic, count)
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    records = stream.wait_records(count, timeout=30)
    stream.close()
    policy = {"records": '"records";q=200;w=1', "bytes": '"bytes";q=50000;qu="content-bytes";w=1'}
    assert policy[unit] in stream.response.headers["RateLimit-Policy"]

    # Every record exactly once, in order per partition.
    positions = [(r["partition"], r["offset"]) for r in records]
    assert len(positions) == count
    assert len(set(positions)) == count
    for p in {p for p, _ in positions}:
        offsets = [o for q, o in positions if q == p]
        assert offsets == list(range(len(offsets)))

    # Measured over two 5 s windows after the first record: within ±10% of the quota.
    if unit == "records":
        stamps = [(t, 1) for t, e in stream.events if e.event == "record"]
        quota = 200
    else:
        stamps = stream.received
        quota = 50000
    first = stamps[0][0]
    for start in (first, first + 0.5):
        measured = window(stamps, start, 5.0) / 5.0
        assert abs(measured - quota) <= 0.1 * quota, f"{measured:.0f} {unit}/s for {quota}"


def test_the_stream_beyond_the_concurrency_quota_is_refused_with_retry_after(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    with_quotas(world, "{concurrent_streams: 2}")
    gw = serve()
    token = gw.token("globex")
    streams = [LiveStream(http, gw.url, token) for _ in range(2)]
    url = f"{gw.url}/v1/contracts/{CONTRACT}"
    headers = {"Authorization": f"Bearer {token}"}
    third = http.get(f"{url}/stream", headers=headers)
    assert third.status_code == 429
    assert third.headers["content-type"] == "application/problem+json"
    assert third.json()["code"] == "too_many_streams"
    assert int(third.headers["Retry-After"]) >= 1
    assert third.json()["retry_after"] == int(third.headers["Retry-After"])
    assert '"streams";q=2;qu="concurrency"' in third.headers["RateLimit-Policy"]
    assert '"streams";r=0;t=0' in third.headers["RateLimit"]
    assert http.get(f"{url}/records", headers=headers).status_code == 429  # pulls count too

    # Another partner's contract is not affected.
    other = http.get(
        f"{gw.url}/v1/contracts/acme-initech-orders/records", headers=bearer(gw, "initech")
    )
    assert other.status_code == 200

    streams[0].close()
    deadline = time.monotonic() + 5
    while (answer := http.get(f"{url}/records", headers=headers)).status_code == 429:
        assert time.monotonic() < deadline, "the closed stream's slot was not freed"
        time.sleep(0.1)
    assert answer.status_code == 200
    streams[1].close()


def test_the_partner_client_waits_out_a_busy_concurrency_quota(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    produce_orders: Callable[..., Any],
) -> None:
    with_quotas(world, "{concurrent_streams: 1}")
    produce_orders(world.topic, 3)
    gw = serve()
    holder = LiveStream(http, gw.url, gw.token("globex"))
    got: list[dict[str, Any]] = []

    def consume() -> None:
        with gw.client("globex") as client:
            for _, record in client.records(CONTRACT, cursor=None):
                got.append(record)
                if len(got) == 3:
                    return

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    time.sleep(1.0)
    assert got == []  # refused with 429: waiting Retry-After
    holder.close()
    consumer.join(15)
    assert [r["offset"] for r in got if r["partition"] == 0] == sorted(
        r["offset"] for r in got if r["partition"] == 0
    )
    assert len(got) == 3


def test_the_organisation_concurrency_quota_counts_all_its_streams(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    gw = serve(quotas=QuotaSettings(org_concurrent_streams=1))
    token = gw.token("globex")
    stream = LiveStream(http, gw.url, token)
    refused = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/stream", headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 429
    assert "organisation 'globex'" in refused.json()["detail"]
    assert '"org-streams";q=1;qu="concurrency"' in refused.headers["RateLimit-Policy"]
    stream.close()


def test_daily_volume_ends_the_live_stream_and_refuses_until_the_next_day(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    kafka_config: dict[str, str],
) -> None:
    with_quotas(world, "{bytes_per_day: 6000}")
    backlog(kafka_config, world.topic, 60)
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    _, end = stream.wait_end()
    stream.close()
    assert end["reason"] == "quota_exhausted"
    _, midnight = day_window(datetime.now(UTC))
    to_midnight = (midnight - datetime.now(UTC)).total_seconds()
    assert abs(end["retry_after"] - to_midnight) < 5

    # Never more than the day's volume; as much of it as whole records allow.
    events = [e for _, e in stream.events if e.event == "record"]
    sent = sum(len(f"event: record\nid: {e.id}\ndata: {e.data}\n\n") for e in events)
    assert 6000 - 400 < sent <= 6000
    first_day = stream.records()
    # Provable from the ledger: what the contract's partner got that day.
    time.sleep(0.5)  # the ledger writes in the background
    report = build_report(gw.gateway.ledger_entries(), CONTRACT)
    today = datetime.now(UTC).date().isoformat()
    assert report.bytes_by_day() == {today: sent}

    headers = bearer(gw)
    for path in ("stream", "records"):
        refused = http.get(f"{gw.url}/v1/contracts/{CONTRACT}/{path}", headers=headers)
        assert refused.status_code == 429
        assert refused.json()["code"] == "quota_exhausted"
        assert abs(int(refused.headers["Retry-After"]) - to_midnight) < 5
        assert '"daily";r=0' in refused.headers["RateLimit"]

    # The next day (UTC) the partner resumes exactly after the last record it got.
    gw.gateway.quotas.clock = lambda: datetime.now(UTC) + timedelta(days=1)
    resumed = LiveStream(http, gw.url, gw.token("globex"), params={"cursor": events[-1].id or ""})
    _, end = resumed.wait_end()
    resumed.close()
    assert end["reason"] == "quota_exhausted"
    both = [(r["partition"], r["offset"]) for r in first_day + resumed.records()]
    assert len(both) == len(set(both))
    for p in {p for p, _ in both}:
        offsets = sorted(o for q, o in both if q == p)
        assert offsets == list(range(len(offsets)))


def test_an_amendment_changes_the_rate_of_a_live_stream(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    kafka_config: dict[str, str],
) -> None:
    with_quotas(world, "{records_per_second: 50}")
    backlog(kafka_config, world.topic, 1200)
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    time.sleep(3.0)
    v1 = load_yaml((world.contracts_dir / f"{CONTRACT}.yaml").read_text(), source="v1")
    world.add_contract(
        CONTRACT,
        "globex",
        version=2,
        supersedes=canonical_hash(v1),
        extra="quotas: {records_per_second: 200}\n",
    )
    changed = time.monotonic()
    time.sleep(4.0)
    stream.close()
    stamps = [(t, 1) for t, e in stream.events if e.event == "record"]
    assert not [e for _, e in stream.events if e.event == "end"], "the stream must go on"
    before = window(stamps, stamps[0][0] + 0.5, 2.0) / 2.0
    after = window(stamps, changed + 1.0, 2.5) / 2.5
    assert abs(before - 50) <= 5, before
    assert abs(after - 200) <= 20, after


def test_the_token_endpoint_is_limited_per_client(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    gw = serve(quotas=QuotaSettings(token_requests_per_minute=6, token_burst=3))
    answers = [token_request(http, gw, gw.assertion("globex")) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[3]
    assert refused.json()["code"] == "too_many_requests"
    assert refused.json()["error"] == "temporarily_unavailable"
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert refused.headers["RateLimit-Policy"] == '"token";q=6;qu="request";w=60'
    # Failed attempts count too (brute force), and other clients are not affected.
    assert token_request(http, gw, "not-a-jwt").status_code in (400, 401, 429)
    assert token_request(http, gw, gw.assertion("initech")).status_code == 200
    # An operator sees why: the rate limit, apart from a ledger that cannot record tokens.
    outcomes = {
        sample.labels["outcome"]: sample.value
        for family in gw.gateway.metrics.registry.collect()
        if family.name == "gateway_token_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert outcomes["too_many_requests"] >= 1
    assert "ledger_unavailable" not in outcomes


def test_usage_and_ratelimit_fields_show_the_quotas_in_force(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    kafka_config: dict[str, str],
) -> None:
    with_quotas(world, "{records_per_second: 500, bytes_per_day: 100000}")
    backlog(kafka_config, world.topic, 20)
    gw = serve(quotas=QuotaSettings(ceilings=Quotas(records_per_second=100)))
    headers = bearer(gw)
    pulled = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records", headers=headers, params={"limit": "5"}
    )
    assert pulled.status_code == 200
    sent = len(pulled.json()["records"])
    assert sent >= 1
    policy = pulled.headers["RateLimit-Policy"]
    assert '"records";q=100;w=1;exg-unit="record"' in policy  # the ceiling, not the 500 asked
    assert '"daily";q=100000;qu="content-bytes";w=86400' in policy
    assert '"streams";q=10;qu="concurrency"' in policy  # the default

    usage: dict[str, Any] = http.get(f"{gw.url}/v1/usage", headers=headers).json()
    assert usage["organisation"] == "globex"
    assert usage["limits"] == {"concurrent_streams": 50}
    (mine,) = usage["contracts"]
    assert mine["contract"] == CONTRACT
    assert mine["limits"] == {
        "records_per_second": 100.0,
        "bytes_per_second": None,
        "concurrent_streams": 10,
        "bytes_per_day": 100000,
    }
    used = mine["usage"]["bytes_today"]
    assert 100 * sent < used < 1000 * sent
    assert mine["usage"]["bytes_remaining_today"] == 100000 - used
    assert f'"daily";r={100000 - used}' in pulled.headers["RateLimit"] or used > 0
    assert http.get(f"{gw.url}/v1/usage").status_code == 401
