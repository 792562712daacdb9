"""Service levels a contract declares, measured where records leave for the partner.

A stream receives records whose Kafka timestamps are 20 s old (as if they had been held up on
their way): the partner, the provider's Prometheus and the log see the freshness breach within
seconds. Records that were in the log before the partner connected are its own backlog, and
do not count against the provider. A day's figures are summarised, signed, into the ledger."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from joserfc import jws
from joserfc.jwk import KeySet
from playwright.sync_api import Browser, expect
from pydantic import SecretStr

from gateway.adapters.stores.consumption import MemoryConsumptionStore
from gateway.core.jose import eddsa_allowed
from gateway.dev_identity import AUDIENCE, DevIdentityProvider
from gateway.errors import StoreUnavailable
from gateway.services.passwords import hash_secret
from gateway.services.service_levels import day_of
from gateway.settings import LegalUser, OidcSettings
from tests.conftest import RunningGateway, World, order
from tests.sse import LiveStream
from tests.test_legal_pages import ARTIFACTS, browser
from tests.test_shared_reading import until

pytestmark = pytest.mark.kafka
__all__ = ["browser"]  # the module-scoped Playwright fixture, shared

SLA = "acme-globex-sla"
LEVELS = """\
service_levels:
  freshness: {percentile: 99, seconds: 5}
  availability: {percent: 99}
"""


def produce_aged(kafka_config: dict[str, str], topic: str, ages: list[float]) -> None:
    """One order per age, with a Kafka timestamp that many seconds in the past (a batch each:
    the test broker's log end is then exact, ``../shared/TEST-BROKER.md``)."""
    producer = Producer({**kafka_config, "linger.ms": 0, "batch.num.messages": 1})
    now = time.time()
    for n, age in enumerate(ages):
        value = json.dumps(order(n)).encode()
        producer.produce(topic, value, key=f"o-{n}", timestamp=int((now - age) * 1000))
    assert producer.flush(10) == 0


def in_thread(call: Callable[[], int]) -> int:
    """``call`` in a thread of its own (Playwright's sync API holds this thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result(timeout=30)


def levels_of(http: httpx.Client, gw: RunningGateway, token: str, contract: str = SLA) -> Any:
    response = http.get(
        f"{gw.url}/v1/contracts/{contract}/service-levels",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_freshness_breach_is_visible_to_the_partner_prometheus_and_the_log(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    kafka_config: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    world.add_contract(SLA, "globex", extra=LEVELS)
    gw = serve(service_level_check_seconds=0.5)
    token = gw.token("globex")
    stream = LiveStream(http, gw.url, token, contract=SLA, params={"from": "latest"})
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.services.service_levels"):
            produce_aged(kafka_config, world.topic, [0.0] * 5 + [20.0] * 5)
            assert len(stream.wait_records(10, timeout=15)) == 10

            def flushed() -> bool:
                day = levels_of(http, gw, token)["days"][-1]
                return bool(day["records"] == 10 and day["availability"]["up_seconds"])

            until(flushed, 10, "the figures are flushed")
            today = levels_of(http, gw, token)
            day = today["days"][-1]
            assert today["objectives"]["freshness"] == {"percentile": 99.0, "seconds": 5.0}
            assert today["breached"] == ["freshness"]
            assert day["day"] == day_of(gw.gateway.clock())
            assert day["freshness"]["within_target"] == 0.5
            assert day["freshness"]["met"] is False
            assert day["freshness"]["p99_seconds"] == 30  # an upper bound: the 10-30 s bucket
            assert day["availability"]["met"] is True
            assert day["availability"]["up_seconds"] > 0
            assert len(today["days"]) == 7
            # The provider's Prometheus: the gauge, and the histogram beside it.
            registry = gw.gateway.metrics.registry
            labels = {"contract": SLA, "objective": "freshness"}
            until(
                lambda: registry.get_sample_value("gateway_service_level_breached", labels) == 1,
                5,
                "the breach gauge",
            )
            count = registry.get_sample_value(
                "gateway_record_freshness_seconds_count", {"contract": SLA}
            )
            assert count == 10
            assert registry.get_sample_value("gateway_contract_available", {"contract": SLA}) == 1
        breaches = [r.getMessage() for r in caplog.records if "breached" in r.getMessage()]
        assert breaches == [
            f"service level breached: contract {SLA}, freshness on {day['day']} "
            "(50.00% of 10 records within the target)"
        ]
    finally:
        stream.close()
    # A contract without objectives is measured, never judged; another partner's is not found.
    plain = levels_of(http, gw, token, "acme-globex-orders")
    assert plain["objectives"] == {"freshness": None, "availability": None, "consumer": None}
    assert plain["breached"] == []
    response = http.get(
        f"{gw.url}/v1/contracts/{SLA}/service-levels",
        headers={"Authorization": f"Bearer {gw.token('initech')}"},
    )
    assert (response.status_code, response.json()["code"]) == (404, "contract_not_found")


def test_legal_and_the_owning_team_see_the_breach_in_the_browser(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    kafka_config: dict[str, str],
    identity_provider: DevIdentityProvider,
    browser: Browser,
) -> None:
    world.add_contract(SLA, "globex", extra=LEVELS)
    user = LegalUser(username="lena", password_hash=SecretStr(hash_secret("for-legal-only")))
    gw = serve(
        legal_users=[user], oidc=OidcSettings(issuer=identity_provider.url, audience=AUDIENCE)
    )
    token = gw.token("globex")
    stream = LiveStream(http, gw.url, token, contract=SLA, params={"from": "latest"})
    try:
        produce_aged(kafka_config, world.topic, [20.0] * 4)
        assert len(stream.wait_records(4, timeout=15)) == 4
        until(lambda: levels_of(http, gw, token)["breached"] == ["freshness"], 10, "flushed")
    finally:
        stream.close()
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(
        http_credentials={"username": "lena", "password": "for-legal-only"}
    )
    page = context.new_page()
    page.goto(f"{gw.url}/legal/contracts/{SLA}")
    levels = page.locator(".service-levels")
    expect(levels).to_contain_text("99% of records within 5 s of their Kafka timestamp")
    expect(levels.locator("strong.breach")).to_have_text("Today: freshness breached.")
    today = levels.locator("table.levels tbody tr").last
    expect(today).to_contain_text("0.00%")
    expect(today).to_contain_text("freshness breached")
    expect(levels.locator("svg.chart rect")).to_have_count(7)
    expect(levels.locator("svg.chart line.objective")).to_have_count(1)
    page.screenshot(path=ARTIFACTS / "legal-service-levels.png", full_page=True)
    context.close()
    team = identity_provider.token(groups=("orders-team",))
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {team}"})
    page = context.new_page()
    page.goto(f"{gw.url}/teams/products/orders")
    expect(page.locator(".service-levels strong.breach")).to_have_count(1)
    expect(page.locator(".service-levels")).to_have_count(3)  # one per contract on the product
    context.close()


def test_a_backlog_is_the_partners_own_and_the_day_is_summarised_signed(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    kafka_config: dict[str, str],
) -> None:
    world.add_contract(SLA, "globex", extra=LEVELS)
    produce_aged(kafka_config, world.topic, [60.0] * 4)  # waiting before the partner comes
    gw = serve()
    token = gw.token("globex")
    stream = LiveStream(http, gw.url, token, contract=SLA, params={"from": "earliest"})
    try:
        assert len(stream.wait_records(4, timeout=15)) == 4
        until(lambda: levels_of(http, gw, token)["days"][-1]["released"] == 4, 10, "flushed")
    finally:
        stream.close()
    day = levels_of(http, gw, token)["days"][-1]
    assert (day["records"], day["freshness"]["met"]) == (0, None)
    # The day's summary: written once (a replica claims it), signed by the gateway's key.
    tracker = gw.gateway.service_levels
    assert in_thread(lambda: asyncio.run(tracker.summarise(day["day"]))) == 1
    assert in_thread(lambda: asyncio.run(tracker.summarise(day["day"]))) == 0
    keys = KeySet.import_key_set(http.get(f"{gw.url}/.well-known/jwks.json").json())

    def summaries() -> list[Any]:
        return [e for e in gw.gateway.ledger_entries() if e.get("kind") == "service_levels"]

    until(lambda: len(summaries()) == 1, 10, "the summary is in the ledger")
    (entry,) = summaries()
    registry = jws.JWSRegistry(algorithms=["EdDSA"], strict_check_header=False)
    with eddsa_allowed():
        signed = jws.deserialize_compact(entry["summary"], keys, registry=registry)
    assert signed.headers()["typ"] == "service-levels+json"
    claims = json.loads(signed.payload)
    assert (claims["contract"], claims["day"]) == (SLA, day["day"])
    assert claims["measured"]["released"] == 4
    assert claims["objectives"]["freshness"] == {"percentile": 99.0, "seconds": 5.0}
    assert claims["breached"] == []


class Unanswering(MemoryConsumptionStore):
    """Redis, gone."""

    async def read(self, keys: Sequence[str]) -> list[dict[str, str]]:
        raise StoreUnavailable("Redis does not answer (consumption figures)")


def test_legal_reads_the_terms_while_the_figures_store_is_away(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    world.add_contract(SLA, "globex", extra=LEVELS)
    user = LegalUser(username="lena", password_hash=SecretStr(hash_secret("for-legal-only")))
    gw = serve(legal_users=[user])
    gw.gateway.service_levels.store = Unanswering()
    page = http.get(f"{gw.url}/legal/contracts/{SLA}", auth=("lena", "for-legal-only"))
    assert page.status_code == 200
    assert "cannot be read just now" in page.text
    answer = http.get(
        f"{gw.url}/v1/contracts/{SLA}/service-levels",
        headers={"Authorization": f"Bearer {gw.token('globex')}"},
    )
    assert (answer.status_code, answer.json()["code"]) == (503, "store_unavailable")
