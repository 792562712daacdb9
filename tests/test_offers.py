"""Offers countersigned over the API: no contract file travels by hand.

The provider signs a version (an offer); the partner reads it, signs its exact bytes with its
own JOSE library and posts the detached JWS. The contract is then active on every replica,
after a restart, and with the contracts directory untouched (as when it is a read-only git
checkout); ``gateway contract export`` writes the signed file for the repository."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from joserfc import jws
from joserfc.jwk import KeySet

from gateway.cli import main
from gateway.core.documents import canonical_hash, load_yaml
from gateway.core.jose import b64url_decode, eddsa_allowed, sign_detached
from tests.conftest import RunningGateway, World
from tests.npm import node_script

pytestmark = pytest.mark.kafka

OFFER = "acme-globex-offer"


@pytest.fixture(scope="session")
def node_jose() -> Path:
    """Node 20 with only the ``jose`` package (from the npm registry, cached in .cache/npm)."""
    return node_script("countersign.mjs", "jose@5.9.6")


def offer(world: World, contract: str = OFFER, **kwargs: Any) -> Path:
    """A contract signed by acme alone: offered to globex."""
    return world.add_contract(contract, "globex", signers=("acme",), **kwargs)


def headers(gw: RunningGateway, org: str = "globex") -> dict[str, str]:
    """One token per organisation and gateway (the token endpoint is rate limited)."""
    tokens: dict[str, str] = gw.__dict__.setdefault("tokens", {})
    if org not in tokens:
        tokens[org] = gw.token(org)
    return {"Authorization": f"Bearer {tokens[org]}"}


def signatures_of(http: httpx.Client, gw: RunningGateway, contract: str = OFFER) -> Any:
    response = http.get(f"{gw.url}/v1/contracts/{contract}/signatures", headers=headers(gw))
    assert response.status_code == 200, response.text
    return response.json()


def countersign(
    http: httpx.Client,
    gw: RunningGateway,
    *,
    org: str = "globex",
    payload: bytes | None = None,
    signer: str | None = None,
    contract: str = OFFER,
    version: str | None = None,
) -> httpx.Response:
    """Post ``org``'s detached JWS (by ``signer``'s key, naming ``signer``) over ``payload``
    (by default the offer's own bytes)."""
    body = signatures_of(http, gw, contract)
    signer = signer or org
    signature = sign_detached(
        b64url_decode(body["payload"]) if payload is None else payload,
        gw.world.key(signer),
        org=signer,
    )
    return http.post(
        f"{gw.url}/v1/contracts/{contract}/signatures",
        headers=headers(gw, org),
        json={"version": version or body["version"], "signature": signature},
    )


def verify_offline(body: dict[str, Any], jwks: dict[str, dict[str, Any]]) -> list[str]:
    """Each signature re-attached to the payload and verified with joserfc against the
    signer's published JWKS: the organisations whose signatures hold."""
    verified = []
    for signature in body["signatures"]:
        header, _, sig = signature.split(".")
        keys = KeySet.import_key_set(jwks[json.loads(b64url_decode(header))["org"]])  # type: ignore[arg-type]
        # A plain JOSE library, told nothing about the gateway's header members.
        registry = jws.JWSRegistry(algorithms=["EdDSA"], strict_check_header=False)
        with eddsa_allowed():
            obj = jws.deserialize_compact(
                f"{header}.{body['payload']}.{sig}", keys, registry=registry
            )
        verified.append(obj.headers()["org"])
    return sorted(verified)


def published_jwks(http: httpx.Client, gw: RunningGateway, *orgs: str) -> dict[str, Any]:
    found = {}
    for org in orgs:
        response = http.get(f"{gw.url}/v1/organisations/{org}/jwks", headers=headers(gw))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/jwk-set+json"
        found[org] = response.json()
    return found


def test_a_partner_countersigns_an_offer_with_only_node_and_jose(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    produce_orders: Any,
    node_jose: Path,
) -> None:
    path = offer(world)
    before = path.read_text()
    produce_orders(world.topic, 3)
    gw = serve()
    run = subprocess.run(
        ["node", str(node_jose), gw.url, "globex", str(world.private["globex"])],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["contract"] == OFFER
    assert out["provider_signed"] == ["acme"]
    assert out["status"] == 200, out["accepted"]
    assert out["accepted"]["state"] == "active"
    assert out["accepted"]["signed_by"] == ["acme", "globex"]
    assert out["record"]["value"]["order_id"] == "o-0"
    # Both signatures verify offline against the keys the gateway publishes.
    body = signatures_of(http, gw)
    assert (body["signed_by"], body["awaiting"]) == (["acme", "globex"], [])
    assert verify_offline(body, published_jwks(http, gw, "acme", "globex")) == ["acme", "globex"]
    # Nothing was written to the contracts directory: the signature is in the ledger.
    assert path.read_text() == before
    signed = [e for e in gw.gateway.ledger_entries() if e.get("kind") == "signature"]
    assert [(e["contract"], e["org"]) for e in signed] == [(OFFER, "globex")]


def test_refused_countersignatures_say_why(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    offer(world)
    offer(world, "acme-globex-lapsed", valid_until="2026-06-01T00:00:00Z")
    world.add_contract("acme-globex-unsigned", "globex", signers=())
    moved = offer(world, "acme-globex-moved")
    older = canonical_hash(load_yaml(moved.read_text(), source="v1"))
    world.add_contract(
        "acme-globex-moved", "globex", version=2, supersedes=older, signers=("acme",)
    )
    gw = serve()

    def refused(response: httpx.Response, status: int, code: str) -> str:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == code, body
        return str(body["detail"])

    assert "you sign as 'globex'" in refused(
        countersign(http, gw, signer="initech"), 422, "wrong_organisation"
    )
    assert "does not verify over the canonical bytes" in refused(
        countersign(http, gw, payload=b'{"other":"terms"}'), 422, "signature_invalid"
    )
    assert "has no version" in refused(
        countersign(http, gw, version="sha256:" + "0" * 64), 422, "not_offered"
    )
    # Another organisation cannot even see the offer.
    refused(
        http.post(
            f"{gw.url}/v1/contracts/{OFFER}/signatures",
            headers=headers(gw, "initech"),
            json={"version": "sha256:" + "0" * 64, "signature": "a..b"},
        ),
        404,
        "contract_not_found",
    )
    assert "ended with its validity" in refused(
        countersign(http, gw, contract="acme-globex-lapsed"), 422, "offer_expired"
    )
    assert "is not the offer" in refused(
        countersign(http, gw, contract="acme-globex-moved", version=older), 422, "not_offered"
    )
    assert "acme has not signed" in refused(
        countersign(http, gw, contract="acme-globex-unsigned"), 422, "not_offered"
    )
    malformed = http.post(
        f"{gw.url}/v1/contracts/{OFFER}/signatures",
        headers=headers(gw),
        json={"version": signatures_of(http, gw)["version"], "signature": "not a jws"},
    )
    refused(malformed, 422, "signature_invalid")
    refused(
        http.post(f"{gw.url}/v1/contracts/{OFFER}/signatures", headers=headers(gw), json={}),
        400,
        "invalid_parameter",
    )
    # Still an offer, still awaiting globex; the unsigned draft is not shown at all.
    catalog = http.get(f"{gw.url}/v1/catalog", headers=headers(gw)).json()["contracts"]
    offers = {c["contract"]: c["offer"] for c in catalog}
    assert offers[OFFER] == f"/v1/contracts/{OFFER}/signatures"
    assert "acme-globex-unsigned" not in offers
    assert offers["acme-globex-orders"] is None
    # Keys: the provider's and one's own, no one else's.
    assert (
        http.get(f"{gw.url}/v1/organisations/initech/jwks", headers=headers(gw)).json()["code"]
        == "organisation_not_found"
    )


def test_a_countersignature_reaches_every_replica_a_restart_and_the_repository(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    kafka_bootstrap: str,
) -> None:
    offer(world)
    ledger = "ledger-offers-" + world.root.name[-8:]
    a = serve(ledger_topic=ledger, watch_seconds=0.2)
    b = serve(ledger_topic=ledger, watch_seconds=0.2, state_dir=world.root / "state-b")
    response = countersign(http, a)
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["recorded"]) == ("active", True)
    again = countersign(http, a)  # the same again: accepted, nothing new recorded
    assert (again.status_code, again.json()["recorded"]) == (200, False)

    def listed(gw: RunningGateway) -> list[str]:
        body = http.get(f"{gw.url}/v1/contracts", headers=headers(gw)).json()
        return sorted(c["contract"] for c in body["contracts"])

    deadline = time.monotonic() + 10
    while OFFER not in listed(b):
        assert time.monotonic() < deadline, "replica b never learned the countersignature"
        time.sleep(0.1)
    a.stop()
    fresh = serve(ledger_topic=ledger, state_dir=world.root / "state-c")
    assert OFFER in listed(fresh)
    # The operator exports the signed file for the repository (a read-only checkout).
    out = world.root / "exported.yaml"
    result = CliRunner().invoke(
        main,
        ["contract", "export", OFFER, "--contracts-dir", str(world.contracts_dir),
         "--keys-dir", str(world.keys_dir), "--bootstrap-servers", kafka_bootstrap,
         "--topic", ledger, "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "signed by acme, globex" in result.output
    verified = CliRunner().invoke(
        main, ["contract", "verify", str(out), "--keys-dir", str(world.keys_dir),
               "--products-dir", str(world.contracts_dir / "products")],
    )  # fmt: skip
    assert verified.output.startswith("OK "), verified.output


def test_an_offer_countersigned_before_its_start_comes_into_force_then(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    offer(world, valid_from="2098-01-01T00:00:00Z")
    gw = serve()
    accepted = countersign(http, gw)
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["state"], accepted.json()["signed_by"]) == (
        "not_yet_valid",
        ["acme", "globex"],
    )
    assert "2098-01-01" in accepted.json()["detail"]
