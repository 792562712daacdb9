"""Who may see what: two partners, two contracts, and every refusal a partner can meet."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from joserfc import jwt
from pydantic import SecretStr

from gateway.client import client_assertion
from gateway.core.jose import eddsa_allowed
from gateway.services.passwords import hash_secret
from gateway.settings import QuotaSettings, RedisSettings, RegisteredClient
from tests.conftest import RunningGateway, World
from tests.redis_server import RedisServer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OWN, FOREIGN = "acme-globex-orders", "acme-initech-orders"


def partner_paths(contract: str) -> list[str]:
    return [
        f"/v1/contracts/{contract}",
        f"/v1/contracts/{contract}/stream",
        f"/v1/contracts/{contract}/records",
    ]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert {"type", "title", "detail"} <= set(body)
    assert "Traceback" not in response.text
    return body


def token_request(http: httpx.Client, gw: RunningGateway, assertion: str) -> httpx.Response:
    return http.post(
        f"{gw.url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )


def test_a_partner_never_sees_another_partners_contract(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    produce_orders(world.topic, 3)
    gw = serve()
    globex = {"Authorization": f"Bearer {gw.token('globex')}"}
    listed = http.get(f"{gw.url}/v1/contracts", headers=globex).json()
    assert [c["contract"] for c in listed["contracts"]] == [OWN]
    assert listed["contracts"][0]["state"] == "active"

    missing = [
        assert_problem(http.get(gw.url + p, headers=globex), 404, "contract_not_found")
        for p in partner_paths("no-such-contract")
    ]
    foreign = [
        assert_problem(http.get(gw.url + p, headers=globex), 404, "contract_not_found")
        for p in partner_paths(FOREIGN)
    ]
    # Indistinguishable from a contract that does not exist (apart from the echoed id).
    for a, b in zip(missing, foreign, strict=True):
        assert a["detail"].replace("no-such-contract", "X") == b["detail"].replace(FOREIGN, "X")

    document = http.get(f"{gw.url}/v1/contracts/{OWN}", headers=globex).json()
    assert document["consumer"] == "globex"
    assert len(document["signatures"]) == 2


def test_a_cursor_from_another_contract_or_edited_is_refused(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    produce_orders(world.topic, 3)
    gw = serve()
    initech = {"Authorization": f"Bearer {gw.token('initech')}"}
    foreign_cursor = http.get(
        f"{gw.url}/v1/contracts/{FOREIGN}/records", headers=initech, params={"wait": "2"}
    ).json()["cursor"]
    globex = {"Authorization": f"Bearer {gw.token('globex')}"}
    for path in partner_paths(OWN)[1:]:
        assert_problem(
            http.get(gw.url + path, headers=globex, params={"cursor": foreign_cursor}),
            400,
            "invalid_cursor",
        )
    own = http.get(
        f"{gw.url}/v1/contracts/{OWN}/records", headers=globex, params={"wait": "2"}
    ).json()["cursor"]
    payload, tag = own.split(".")
    decoded = base64.urlsafe_b64decode(payload + "==").decode()
    forged = base64.urlsafe_b64encode(decoded.replace(":", ":9", 1).encode()).decode().rstrip("=")
    for bad in (f"{forged}.{tag}", own[:-2], "garbage", own + "x"):
        assert_problem(
            http.get(f"{gw.url}/v1/contracts/{OWN}/stream", headers=globex, params={"cursor": bad}),
            400,
            "invalid_cursor",
        )
        assert_problem(
            http.get(
                f"{gw.url}/v1/contracts/{OWN}/stream", headers={**globex, "Last-Event-ID": bad}
            ),
            400,
            "invalid_cursor",
        )


def test_contracts_not_active_are_refused_with_the_reason(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    world.add_contract("expired", "globex", valid_until="2026-02-01T00:00:00Z")
    world.add_contract("future", "globex", valid_from="2098-01-01T00:00:00Z")
    world.add_contract("one-signature", "globex", signers=("acme",))
    world.add_contract("bad-field", "globex", fields="fields:\n  order_id: publish\n", signers=())
    world.add_contract("broken-chain", "globex", version=2, supersedes="sha256:" + "0" * 64)
    world.add_contract(
        "someone-else-s", "initech", fields="fields:\n  order_id: publish\n", signers=()
    )
    tampered = world.add_contract("tampered", "globex")
    tampered.write_text(
        tampered.read_text().replace("customer.country: clear", "customer.email: clear")
    )
    gw = serve()
    globex = {"Authorization": f"Bearer {gw.token('globex')}"}
    expected = {
        "expired": "expired",
        "future": "not_yet_valid",
        "one-signature": "signature_missing",
        "tampered": "signature_invalid",
        "bad-field": "invalid_document",
        "broken-chain": "broken_chain",
    }
    for contract, reason in expected.items():
        for path in partner_paths(contract)[1:]:
            body = assert_problem(
                http.get(gw.url + path, headers=globex), 403, "contract_not_active"
            )
            assert body["reason"] == reason
    listed = http.get(f"{gw.url}/v1/contracts", headers=globex).json()["contracts"]
    assert [c["contract"] for c in listed] == [OWN]
    # Another organisation's refused contract stays invisible: as if it did not exist.
    other = http.get(f"{gw.url}/v1/contracts/someone-else-s", headers=globex)
    assert_problem(other, 404, "contract_not_found")


def test_tokens_missing_invalid_or_expired_are_refused(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    gw = serve(token_lifetime_seconds=1)
    url = f"{gw.url}/v1/contracts/{OWN}/stream"
    body = assert_problem(http.get(url), 401, "invalid_token")
    assert "Bearer" in http.get(url).headers["www-authenticate"]
    assert_problem(
        http.get(url, headers={"Authorization": "Bearer nonsense"}), 401, "invalid_token"
    )
    assert_problem(http.get(url, headers={"Authorization": "Basic abc"}), 401, "invalid_token")
    token = gw.token("globex")
    header, claims, signature = token.split(".")
    forged_claims = json.loads(base64.urlsafe_b64decode(claims + "=="))
    forged_claims["org"] = "initech"
    forged = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).decode().rstrip("=")
    assert_problem(
        http.get(url, headers={"Authorization": f"Bearer {header}.{forged}.{signature}"}),
        401,
        "invalid_token",
    )
    time.sleep(2.1)
    body = assert_problem(
        http.get(url, headers={"Authorization": f"Bearer {token}"}), 401, "token_expired"
    )
    assert "expired" in body["detail"]


def test_private_key_jwt_rules(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    gw = serve()
    assertion = gw.assertion("globex")
    ok = token_request(http, gw, assertion)
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer"
    assert ok.json()["expires_in"] == 600
    assert ok.headers["cache-control"] == "no-store"
    # Replayed assertion.
    assert_problem(token_request(http, gw, assertion), 400, "invalid_client")
    now = int(time.time())
    key = world.key("globex")

    def signed(claims: dict[str, Any], signer: Any = key) -> str:
        with eddsa_allowed():
            return jwt.encode(
                {"alg": "EdDSA", "kid": signer.kid}, claims, signer, algorithms=["EdDSA"]
            )

    base = {"iss": "globex", "sub": "globex", "aud": f"{gw.url}/oauth/token", "exp": now + 60}
    refused = [
        signed({**base, "jti": "a", "aud": "https://elsewhere.example/oauth/token"}),
        signed({**base, "jti": "b", "exp": now + 3600}),  # lives too long
        signed({**base, "jti": "c", "exp": now - 120}),  # expired
        signed({**base}),  # no jti
        signed({**base, "jti": "d", "iss": "initech", "sub": "initech"}),  # someone else's id
        signed({**base, "jti": "e", "sub": "nobody", "iss": "nobody"}),  # unknown client
    ]
    for bad in refused:
        response = token_request(http, gw, bad)
        body = assert_problem(response, response.status_code, "invalid_client")
        assert response.status_code in (400, 401)
        assert body["error"] == "invalid_client"
    # The issuer as audience is accepted too (RFC 7523 §3).
    assert token_request(http, gw, signed({**base, "jti": "f", "aud": gw.url})).status_code == 200


def test_client_secret_basic_and_metadata(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    client = RegisteredClient(
        client_id="globex-etl", org="globex", secret_hash=SecretStr(hash_secret("s3cret-s3cret"))
    )
    gw = serve(clients=[client])
    token_url = f"{gw.url}/oauth/token"
    good = http.post(
        token_url, data={"grant_type": "client_credentials"}, auth=("globex-etl", "s3cret-s3cret")
    )
    assert good.status_code == 200
    listed = http.get(
        f"{gw.url}/v1/contracts", headers={"Authorization": f"Bearer {good.json()['access_token']}"}
    )
    assert [c["contract"] for c in listed.json()["contracts"]] == [OWN]
    bad = http.post(
        token_url, data={"grant_type": "client_credentials"}, auth=("globex-etl", "nope")
    )
    assert_problem(bad, bad.status_code, "invalid_client")
    assert_problem(
        http.post(token_url, data={"grant_type": "password"}, auth=("globex-etl", "s3cret-s3cret")),
        400,
        "unsupported_grant_type",
    )
    assert_problem(
        http.post(token_url, json={"grant_type": "client_credentials"}), 400, "invalid_request"
    )

    meta = http.get(f"{gw.url}/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == gw.url
    assert meta["token_endpoint"] == token_url
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    jwks = http.get(meta["jwks_uri"]).json()
    assert all("d" not in key for key in jwks["keys"])
    # The access token verifies with the published key and is an RFC 9068 token.
    from joserfc.jwk import KeySet

    decoded = jwt.decode(good.json()["access_token"], KeySet.import_key_set(jwks))
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["client_id"] == "globex-etl"
    assert decoded.claims["org"] == "globex"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "yesterday"}, "invalid_parameter"),
        ({"from": "2026-01-01T00:00:00"}, "invalid_parameter"),  # no offset
        ({"limit": "0"}, "invalid_parameter"),
        ({"limit": "100000"}, "invalid_parameter"),
        ({"wait": "-1"}, "invalid_parameter"),
        ({"wait": "abc"}, "invalid_parameter"),
    ],
)
def test_bad_parameters_are_400_problems(
    serve: Callable[..., RunningGateway], http: httpx.Client, params: dict[str, str], code: str
) -> None:
    gw = serve()
    headers = {"Authorization": f"Bearer {gw.token('globex')}"}
    assert_problem(
        http.get(f"{gw.url}/v1/contracts/{OWN}/records", headers=headers, params=params), 400, code
    )


def test_unacceptable_format_and_unknown_route(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    gw = serve()
    headers = {"Authorization": f"Bearer {gw.token('globex')}", "Accept": "application/xml"}
    assert_problem(
        http.get(f"{gw.url}/v1/contracts/{OWN}/stream", headers=headers), 406, "not_acceptable"
    )
    assert_problem(http.get(f"{gw.url}/nowhere"), 404, "not_found")


def test_broker_unavailable_is_503(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    (world.contracts_dir / "products" / "orders.yaml").write_text(
        "product: orders\nowner: acme\nteam: orders-team\ntopic: no-such-topic-here\n"
        "description: Orders\n"
    )
    gw = serve()
    headers = {"Authorization": f"Bearer {gw.token('globex')}"}
    response = http.get(f"{gw.url}/v1/contracts/{OWN}/stream", headers=headers)
    assert_problem(response, 503, "product_unavailable")
    assert response.headers["retry-after"]


def test_kafka_unreachable_fails_closed(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    from gateway.adapters.kafka.embedded import free_port
    from gateway.settings import KafkaSettings

    gw = serve(ready=False, kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    # Nothing can be recorded, so no token is issued and nothing may be delivered.
    refused = token_request(http, gw, gw.assertion("globex"))
    body = assert_problem(refused, 503, "ledger_unavailable")
    assert refused.json()["error"] == "temporarily_unavailable"
    assert refused.headers["retry-after"]
    assert "recorded" in body["detail"]
    # (A stream or pull is refused the same way: tests/services/test_streams.py.)
    for probe in ("/readyz", "/healthz"):
        health = http.get(f"{gw.url}{probe}")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
    assert http.get(f"{gw.url}/livez").status_code == 200, "alive: a restart cures nothing"


def test_a_broker_that_does_not_answer_is_broker_unavailable() -> None:
    from gateway.adapters.kafka.embedded import free_port
    from gateway.adapters.kafka.source import KafkaRecordSource
    from gateway.errors import BrokerUnavailable

    source = KafkaRecordSource({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, "t")
    with pytest.raises(BrokerUnavailable) as info:
        source.partitions()
    source.close_now()
    assert info.value.code == "broker_unavailable"


def test_an_assertion_used_at_one_replica_is_refused_at_another(
    serve: Callable[..., RunningGateway], redis_server: RedisServer, http: httpx.Client
) -> None:
    """Replicas behind one public URL share assertion ids through Redis (RFC 7523 §3 item 7)."""
    shared = {
        "public_url": "https://gateway.test",
        "redis": RedisSettings(url=SecretStr(redis_server.url)),
    }
    first, second = serve(**shared), serve(**shared)
    assertion = client_assertion(
        "globex", first.world.key("globex"), "https://gateway.test/oauth/token"
    )
    assert token_request(http, first, assertion).status_code == 200
    replayed = token_request(http, second, assertion)
    assert replayed.status_code == 400, replayed.text  # RFC 6749 §5.2: no Basic header
    assert replayed.json()["error"] == "invalid_client"
    fresh = client_assertion(
        "globex", first.world.key("globex"), "https://gateway.test/oauth/token"
    )
    assert token_request(http, second, fresh).status_code == 200


def test_brute_force_on_a_client_secret_is_throttled_however_the_form_names_the_client(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    """Varying ``client_id`` used to evade the limit: 200 wrong secrets, 0 refusals."""
    client = RegisteredClient(
        client_id="globex-etl", org="globex", secret_hash=SecretStr(hash_secret("s3cret-s3cret"))
    )
    gw = serve(clients=[client], quotas=QuotaSettings(token_requests_per_minute=60, token_burst=5))
    statuses = []
    for attempt in range(30):
        answer = http.post(
            f"{gw.url}/oauth/token",
            data={"grant_type": "client_credentials", "client_id": f"decoy-{attempt}"},
            auth=("globex-etl", f"guess-{attempt}"),
        )
        statuses.append(answer.status_code)
    assert statuses.count(429) >= 20, statuses
    assert 200 not in statuses


def test_a_client_id_that_disagrees_with_the_credentials_is_refused(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    client = RegisteredClient(
        client_id="globex-etl", org="globex", secret_hash=SecretStr(hash_secret("s3cret-s3cret"))
    )
    gw = serve(clients=[client])
    refused = http.post(
        f"{gw.url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "initech"},
        auth=("globex-etl", "s3cret-s3cret"),
    )
    assert_problem(refused, 401, "invalid_client")


def test_two_authentication_methods_in_one_request_issue_nothing(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    """A wrong Basic secret beside a valid assertion of another organisation (RFC 6749 §2.3)."""
    client = RegisteredClient(
        client_id="globex-etl", org="globex", secret_hash=SecretStr(hash_secret("s3cret-s3cret"))
    )
    gw = serve(clients=[client])
    mixed = http.post(
        f"{gw.url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": gw.assertion("initech"),
        },
        auth=("globex-etl", "wrong"),
    )
    body = assert_problem(mixed, 400, "invalid_request")
    assert "one client authentication method" in body["detail"]
