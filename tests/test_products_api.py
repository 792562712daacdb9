"""The internal API of the teams that publish data products, and who may use it.

The authorization matrix: each internal endpoint against (owning team, another team, admin, partner
token, no provider configured); and internal tokens on the partner API. A leak is any answer
that is not the expected refusal.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.dev_identity import AUDIENCE, DevIdentityProvider
from gateway.settings import OidcSettings
from tests.conftest import RunningGateway, World

pytestmark = pytest.mark.kafka

#: Every internal endpoint, on the product ``orders`` (owned by ``orders-team``).
INTERNAL = [
    ("GET", "/v1/products/orders"),
    ("POST", "/v1/products/orders/records"),
    ("GET", "/v1/products/orders/consumers"),
    ("GET", "/teams/products/orders"),
]


@pytest.fixture
def running(
    serve: Callable[..., RunningGateway], identity_provider: DevIdentityProvider, world: World
) -> RunningGateway:
    (world.contracts_dir / "products" / "billing.yaml").write_text(
        "product: billing\nowner: acme\nteam: billing-team\ntopic: acme.billing\n"
        "description: Invoices\n"
    )
    oidc = OidcSettings(issuer=identity_provider.url, audience=AUDIENCE, admin_team="platform")
    return serve(oidc=oidc)


def _call(
    http: httpx.Client, gw: RunningGateway, method: str, path: str, token: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if method == "POST":  # a valid publish request: only the caller decides the answer
        headers["Content-Type"] = "application/json"
        return http.post(gw.url + path, headers=headers, content=b'[{"value": {"n": 1}}]')
    return http.request(method, gw.url + path, headers=headers)


def test_a_team_lists_its_own_products_and_an_admin_all(
    running: RunningGateway, identity_provider: DevIdentityProvider, http: httpx.Client
) -> None:
    def listed(groups: tuple[str, ...]) -> list[str]:
        r = _call(http, running, "GET", "/v1/products", identity_provider.token(groups=groups))
        assert r.status_code == 200, r.text
        return [p["product"] for p in r.json()["products"]]

    assert listed(("orders-team",)) == ["orders"]
    assert listed(("billing-team", "orders-team")) == ["billing", "orders"]
    assert listed(("marketing",)) == []
    assert listed(("platform",)) == ["billing", "orders"]

    body = _call(http, running, "GET", "/v1/products/orders", identity_provider.token()).json()
    assert body["team"] == "orders-team"
    assert body["dead_letter_topic"] == f"{running.world.topic}.dlq"


@pytest.mark.parametrize(("method", "path"), INTERNAL)
def test_the_authorization_matrix_of_internal_endpoints(
    running: RunningGateway,
    identity_provider: DevIdentityProvider,
    http: httpx.Client,
    method: str,
    path: str,
) -> None:
    owner = _call(http, running, method, path, identity_provider.token(groups=("orders-team",)))
    admin = _call(http, running, method, path, identity_provider.token(groups=("platform",)))
    other = _call(http, running, method, path, identity_provider.token(groups=("billing-team",)))
    unknown = _call(
        http, running, method, path.replace("/orders", "/nope"), identity_provider.token()
    )
    partner = _call(http, running, method, path, running.token("globex"))

    assert owner.status_code < 400, owner.text
    assert admin.status_code < 400, admin.text
    # Another team's product answers exactly as a product that does not exist.
    assert other.status_code == unknown.status_code == 404
    assert other.json()["code"] == unknown.json()["code"] == "product_not_found"
    assert other.json()["detail"] == unknown.json()["detail"].replace("nope", "orders")
    assert partner.status_code == 401
    assert partner.json()["code"] == "invalid_token"
    assert partner.headers["content-type"] == "application/problem+json"


def test_internal_tokens_are_not_accepted_on_the_partner_api(
    running: RunningGateway, identity_provider: DevIdentityProvider, http: httpx.Client
) -> None:
    for groups in (("orders-team",), ("platform",)):
        token = identity_provider.token(groups=groups)
        for path in ("/v1/contracts", "/v1/usage", "/v1/contracts/acme-globex-orders/records"):
            r = _call(http, running, "GET", path, token)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["code"] == "invalid_token"


def test_without_an_identity_provider_internal_endpoints_refuse_everyone(
    serve: Callable[..., RunningGateway], http: httpx.Client, identity_provider: DevIdentityProvider
) -> None:
    gw = serve()
    for method, path in [("GET", "/v1/products"), *INTERNAL]:
        r = _call(http, gw, method, path, identity_provider.token())
        assert r.status_code == 401
        assert "GATEWAY_OIDC__ISSUER" in r.json()["detail"]


def test_with_the_provider_down_internal_callers_are_told_to_retry(
    running: RunningGateway, identity_provider: DevIdentityProvider, http: httpx.Client
) -> None:
    identity_provider.available = False
    r = _call(http, running, "GET", "/v1/products", identity_provider.token())
    assert r.status_code == 503
    assert r.json()["code"] == "identity_provider_unavailable"
    assert r.headers["retry-after"]
