"""What the owning team sees of its product's consumers: the API, Prometheus and the page in a
real browser (Debian chromium, Playwright), with the identity provider's token."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect
from prometheus_client import generate_latest

from gateway.dev_identity import AUDIENCE, DevIdentityProvider
from gateway.settings import OidcSettings
from tests.conftest import RunningGateway, World
from tests.test_legal_pages import ARTIFACTS, browser

pytestmark = pytest.mark.kafka
__all__ = ["browser"]  # the module-scoped Playwright fixture, shared


@pytest.fixture
def consumed(
    serve: Callable[..., RunningGateway],
    world: World,
    identity_provider: DevIdentityProvider,
    produce_orders: Any,
    http: httpx.Client,
) -> RunningGateway:
    """Globex has pulled 6 of 9 orders; initech has never consumed."""
    produce_orders(world.topic, 6, partition=0)
    gw = serve(oidc=OidcSettings(issuer=identity_provider.url, audience=AUDIENCE))
    gw.pull_records(http, 6)
    produce_orders(world.topic, 3, start=6, partition=0)
    return gw


def consumers(http: httpx.Client, gw: RunningGateway, token: str) -> dict[str, Any]:
    """The consumers view once this replica has stored what it counted (once a second)."""
    deadline = time.monotonic() + 10
    while True:
        r = http.get(
            f"{gw.url}/v1/products/orders/consumers", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        by = {c["partner"]: c for c in body["consumers"]}
        if by["globex"]["records_today"] or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_the_owning_team_sees_each_partner_its_use_and_its_lag(
    consumed: RunningGateway, identity_provider: DevIdentityProvider, http: httpx.Client
) -> None:
    body = consumers(http, consumed, identity_provider.token(groups=("orders-team",)))
    assert body["product"] == "orders"
    assert body["log_end"] == {"0": 9, "1": 0}
    by = {c["partner"]: c for c in body["consumers"]}
    globex, initech = by["globex"], by["initech"]
    assert globex["contract"] == "acme-globex-orders"
    assert globex["state"] == "active"
    assert globex["records_today"] == 6
    assert globex["bytes_today"] > 0
    assert globex["positions"] == {"0": 6}
    assert globex["lag"] == 3
    assert globex["last_delivery"] is not None
    assert globex["live_streams"] == 0
    assert sum(h["records"] for h in globex["hours"]) == 6
    assert len(globex["hours"]) == 24
    assert initech["lag"] is None
    assert initech["records_today"] == 0

    other = http.get(
        f"{consumed.url}/v1/products/orders/consumers",
        headers={"Authorization": f"Bearer {identity_provider.token(groups=('billing',))}"},
    )
    assert other.status_code == 404


def test_prometheus_gets_the_lag_of_every_contract(consumed: RunningGateway) -> None:
    deadline = time.monotonic() + 10
    wanted = 'gateway_contract_lag_records{contract="acme-initech-orders"} 9.0'
    while wanted not in (text := generate_latest(consumed.gateway.metrics.registry).decode()):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    # ... and per partition: globex read 6 of partition 0's 9 records, none of partition 1.
    per_partition = "gateway_contract_partition_lag_records{contract=%s,partition=%s} %s"
    assert per_partition % ('"acme-globex-orders"', '"0"', "3.0") in text
    assert per_partition % ('"acme-globex-orders"', '"1"', "0.0") in text
    assert per_partition % ('"acme-initech-orders"', '"0"', "9.0") in text


def test_the_team_page_in_the_browser(
    consumed: RunningGateway,
    identity_provider: DevIdentityProvider,
    http: httpx.Client,
    browser: Browser,
) -> None:
    token = identity_provider.token(groups=("orders-team",))
    consumers(http, consumed, token)  # stored
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {token}"})
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{consumed.url}/teams/products")
    page.get_by_role("link", name="orders").click()
    expect(page.locator("h1")).to_contain_text("orders")
    rows = page.locator("table.consumers tbody tr")
    expect(rows).to_have_count(2)
    globex = rows.filter(has_text="globex")
    expect(globex.locator("td.lag")).to_have_text("3")
    expect(globex).to_contain_text("active")
    expect(rows.filter(has_text="initech").locator("td.lag")).to_have_text("not consumed yet")
    expect(page.locator("figure.use svg.chart")).to_have_count(2)
    expect(page.locator("figure.use svg.chart rect").first).to_be_attached()
    # Each contract's service levels: none declared here, so measured but not judged.
    expect(page.locator(".service-levels")).to_have_count(2)
    expect(page.locator(".service-levels").first).to_contain_text("measured, not judged")
    page.screenshot(path=ARTIFACTS / "team-consumers.png", full_page=True)
    context.close()
    assert not violations, violations

    anonymous = http.get(f"{consumed.url}/teams/products/orders")
    assert anonymous.status_code == 401
    assert "default-src 'none'" in anonymous.headers["content-security-policy"]
