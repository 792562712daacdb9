"""The legal review pages in a real headless browser (Debian chromium, driven by Playwright)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from pydantic import SecretStr

from gateway.core.documents import canonical_hash, load_yaml
from gateway.services.passwords import hash_secret
from gateway.settings import LegalUser
from tests.adapters.test_ledger_index import entries_of
from tests.conftest import RunningGateway, World
from tests.test_lifecycle_live import statement

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONTRACT = "acme-globex-orders"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is installed by `make test`"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def reviewed(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> RunningGateway:
    """A contract with an amendment, a suspension and a delivery to review."""
    product = world.contracts_dir / "products" / "orders.yaml"
    product.write_text(
        product.read_text()
        + "schema:\n  properties:\n    order_id: {type: string}\n    amount: {type: number}\n"
        + "    currency: {type: string}\n    customer:\n      properties:\n"
        + "        country: {type: string, x-classification: personal}\n"
    )
    v1 = world.contracts_dir / f"{CONTRACT}.yaml"
    world.add_contract(
        CONTRACT,
        "globex",
        version=2,
        supersedes=canonical_hash(load_yaml(v1.read_text(), source="v1")),
        fields="fields:\n  order_id: clear\n  amount: clear\n  customer.country: clear\n"
        "  currency: clear\n",
        extra="jurisdiction: Netherlands\nterms:\n  reference: https://acme.example/dsa-2026\n"
        f"  sha256: sha256:{'a' * 64}\nretention:\n  period: P90D\n  deletion: Delete after use\n"
        "quotas: {records_per_second: 50, bytes_per_day: 1000000}\n",
    )
    produce_orders(world.topic, 5)
    user = LegalUser(username="lena", password_hash=SecretStr(hash_secret(PASSWORD)))
    gw = serve(legal_users=[user])
    assert len(gw.pull_records(http, 5)) == 5
    statement(world, "suspend")
    (world.contracts_dir / "half-written.yaml").write_text("contract: [oops\n")
    time.sleep(0.6)  # the watcher picks the statement up
    return gw


def test_legal_review_in_the_browser(reviewed: RunningGateway, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(http_credentials={"username": "lena", "password": PASSWORD})
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )

    page.goto(f"{reviewed.url}/legal")
    rows = page.locator("table").first.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("table.refused")).to_contain_text("half-written.yaml")
    expect(rows.nth(0)).to_contain_text("acme → globex")
    expect(rows.nth(0)).to_contain_text("suspended")
    expect(rows.nth(0)).to_contain_text("acme: signed, globex: signed")
    expect(rows.nth(1)).to_contain_text("active")
    page.screenshot(path=ARTIFACTS / "legal-contracts.png", full_page=True)

    page.get_by_role("link", name=CONTRACT).click()
    expect(page.locator("h1")).to_contain_text(f"{CONTRACT} v2")
    expect(page.locator("dl")).to_contain_text("Netherlands")
    expect(page.locator("dl")).to_contain_text("P90D")
    expect(page.locator("dl")).to_contain_text("bytes per day: 1000000")
    fields = page.locator("table").first
    expect(fields).to_contain_text("customer.country")
    expect(fields.locator("tr", has_text="customer.country")).to_contain_text("personal")
    expect(page.get_by_text("Version 2 (in force)")).to_be_visible()
    diff = page.locator("table.diff")
    expect(diff).to_contain_text("currency")
    expect(diff.locator("ins")).to_contain_text(["clear"])
    expect(page.locator("body")).to_contain_text("suspend")
    expect(page.locator("body")).to_contain_text("EdDSA")
    page.screenshot(path=ARTIFACTS / "legal-contract.png", full_page=True)

    page.emulate_media(media="print")
    expect(page.locator("header nav")).to_be_hidden()
    page.pdf(path=ARTIFACTS / "legal-contract.pdf")
    page.emulate_media(media="screen")

    page.get_by_role("link", name="Delivery history").click()
    per_day = page.locator("table").nth(1)
    expect(per_day).to_contain_text(datetime.now(UTC).date().isoformat())
    sessions = page.locator("table").nth(2)
    expect(sessions).to_contain_text("pull")
    expect(sessions).to_contain_text("globex (globex)")
    expect(page.locator("table").first).to_contain_text("v2")  # delivered under the amendment
    expect(page.locator("figure svg.chart rect").first).to_be_attached()  # records per day
    page.screenshot(path=ARTIFACTS / "legal-deliveries.png", full_page=True)
    context.close()
    assert not violations, f"the Content-Security-Policy refused something: {violations}"


def test_the_pages_forbid_framing_sniffing_caching_and_anything_but_their_own_style(
    reviewed: RunningGateway, http: httpx.Client
) -> None:
    for path in ("/legal", f"/legal/contracts/{CONTRACT}", "/legal/nothing-here"):
        page = http.get(reviewed.url + path, auth=("lena", PASSWORD))
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
    api = http.get(reviewed.url + "/.well-known/oauth-authorization-server")
    assert "content-security-policy" not in api.headers


def test_no_partner_token_or_missing_login_opens_them(
    reviewed: RunningGateway, browser: Browser, http: httpx.Client
) -> None:
    token = reviewed.token("globex")
    for path in (
        "/legal",
        f"/legal/contracts/{CONTRACT}",
        f"/legal/contracts/{CONTRACT}/deliveries",
    ):
        refused = http.get(reviewed.url + path, headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert refused.json()["code"] == "legal_login_required"
        wrong = http.get(reviewed.url + path, auth=("lena", "wrong"))
        assert wrong.status_code == 401
    # In the browser: the page answers with a Basic challenge, never the content.
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        context = browser.new_context(extra_http_headers=headers)
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            context.new_page().goto(f"{reviewed.url}/legal")
        context.close()


def test_guessing_passwords_is_throttled_per_user_and_address(
    reviewed: RunningGateway, http: httpx.Client
) -> None:
    """200 wrong passwords used to meet no refusal at all."""
    answers = [
        http.get(f"{reviewed.url}/legal", auth=("lena", f"guess-{n}")).status_code for n in range(8)
    ]
    assert answers[:5] == [401] * 5
    assert answers[5:] == [429] * 3
    refused = http.get(f"{reviewed.url}/legal", auth=("lena", PASSWORD))
    assert refused.status_code == 429, "locked for a while, even with the right password"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["code"] == "too_many_requests"


def test_guesses_sent_in_parallel_are_throttled_too(reviewed: RunningGateway) -> None:
    """The failure count was read before the check and written after it: parallel guesses
    all passed the check."""
    from concurrent.futures import ThreadPoolExecutor

    def guess(n: int) -> int:
        with httpx.Client(timeout=30) as http:
            return http.get(f"{reviewed.url}/legal", auth=("lena", f"guess-{n}")).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(guess, range(12)))
    assert answers.count(401) <= 5, answers
    assert answers.count(429) >= 7, answers


def test_deliveries_are_paged_the_latest_first(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    """The page reads the index a page at a time (``bench/legal_pages.py`` times it over a
    million entries); here 120 deliveries the ledger index was given."""
    user = LegalUser(username="lena", password_hash=SecretStr(hash_secret(PASSWORD)))
    gw = serve(legal_users=[user])
    for n in range(120):
        gw.gateway.index.add_all(entries_of(n, CONTRACT, "sha256:a", [(2, 100)], 1))
    url = f"{gw.url}/legal/contracts/{CONTRACT}/deliveries"

    def sessions(page: int) -> tuple[list[str], str]:
        response = http.get(url, params={"page": page}, auth=("lena", PASSWORD))
        assert response.status_code == 200
        body = response.text.split('<table class="sessions">')[1]
        rows = body.split("</table>")[0].split("<tr>")[2:]
        return [row.split("<td>")[1].split("</td>")[0] for row in rows], body

    first, body = sessions(1)
    assert len(first) == 50
    assert first == sorted(first, reverse=True)
    assert "Page 1 of 3" in body
    assert 'rel="next"' in body
    last, body = sessions(3)
    assert len(last) == 20
    assert last[-1] < first[-1]
    assert sessions(99)[0] == last  # past the end: the last page
    everything = [*first, *sessions(2)[0], *last]
    assert len(set(everything)) == 120
