"""Field protection end to end over real sockets, checked with a plain JOSE library."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from gateway.adapters.kafka.ledger import read_entries
from gateway.adapters.kafka.producer import produce
from gateway.core.jose import parse_private_jwks
from gateway.fieldcrypto import FIELD_REGISTRY, FieldDecryptor, FieldVerificationError
from gateway.services.datakeys import encryption_key
from tests.conftest import RunningGateway, World

PROTECTED = """\
fields:
  order_id: clear
  amount: clear
  customer.email: encrypt
  customer.name: hash
  card: {mask: {keep_last: 4}}
  items[].sku: clear
filter: amount > 3
"""
EMAIL = "alice.secret@example.com"


def order(n: int) -> dict[str, Any]:
    return {
        "order_id": f"o-{n}",
        "amount": n,
        "card": "4111111111111111",
        "customer": {
            "name": "Alice" if n % 2 else "Bob",
            "email": EMAIL if n == 5 else f"c{n}@x.example",
        },
        "items": [{"sku": "A", "price": 1}, {"sku": "B", "price": 2}],
    }


def enc_key(world: World, org: str) -> Any:
    keys = parse_private_jwks(json.loads(world.private[org].read_text()), source=org)
    return encryption_key(keys, org)


@pytest.fixture
def protected(world: World, kafka_config: dict[str, str]) -> list[dict[str, Any]]:
    (world.contracts_dir / "acme-globex-orders.yaml").unlink()
    (world.contracts_dir / "acme-initech-orders.yaml").unlink()
    world.add_contract("acme-globex-orders", "globex", fields=PROTECTED)
    # initech's contract has no row filter: its records take the fast projection.
    world.add_contract(
        "acme-initech-orders", "initech", fields=PROTECTED.replace("filter: amount > 3\n", "")
    )
    orders = [order(n) for n in range(10)]
    produce(
        kafka_config,
        world.topic,
        [(o["order_id"], json.dumps(o).encode()) for o in orders],
        partition=0,
        producer_config={"linger.ms": 0, "batch.num.messages": 1},
    )
    return orders


def stream(http: httpx.Client, gw: RunningGateway, org: str, count: int) -> list[Any]:
    contract = f"acme-{org}-orders"
    headers = {"Authorization": f"Bearer {gw.token(org)}", "Accept": "text/event-stream"}
    events = []
    with http.stream("GET", f"{gw.url}/v1/contracts/{contract}/stream", headers=headers) as r:
        assert r.status_code == 200
        from tests.sse import parse_events

        pending = b""
        for chunk in r.iter_raw():
            pending += chunk
            cut = pending.rfind(b"\n\n") + 2
            if cut >= 2:
                events.extend(parse_events(pending[:cut]))
                pending = pending[cut:]
            if sum(e.event == "record" for e in events) >= count:
                break
    return events


def assert_fifth_decrypts(world: World, org: str, events: list[Any]) -> None:
    """Unwrap the data key with joserfc alone, then decrypt the email at offset 5 with it."""
    announced = events[0].json()["keys"][0]
    unwrapped = jwe.decrypt_compact(announced["jwe"], enc_key(world, org))
    assert unwrapped.protected["alg"] == "ECDH-ES+A256KW"
    data_key = OctKey.import_key(json.loads(unwrapped.plaintext or b""))
    assert data_key.kid == announced["kid"]
    fifth = next(e.json() for e in events if e.event == "record" and e.json()["offset"] == 5)
    token = fifth["value"]["customer"]["email"]
    with pytest.raises(JoseError):  # fld/pos are critical: a library must be told to check them
        jwe.decrypt_compact(token, data_key)
    opened = jwe.decrypt_compact(token, data_key, registry=FIELD_REGISTRY)
    assert json.loads(opened.plaintext or b"") == EMAIL
    assert (opened.protected["fld"], opened.protected["pos"]) == ("customer.email", "0:5")


def test_a_plain_jose_library_decrypts_and_every_rule_holds(
    serve: Callable[..., RunningGateway],
    world: World,
    protected: list[dict[str, Any]],
    http: httpx.Client,
    caplog: pytest.LogCaptureFixture,
    kafka_config: dict[str, str],
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = serve()
    events = stream(http, gw, "globex", 6)
    kinds = [e.event for e in events]
    assert kinds[0] == "keys", "the data key comes before the first record that needs it"
    records = [e.json() for e in events if e.event == "record"]
    assert [r["value"]["order_id"] for r in records] == [f"o-{n}" for n in range(4, 10)]  # filter

    assert_fifth_decrypts(world, "globex", events)

    for r in records:
        value = r["value"]
        assert set(value) == {"order_id", "amount", "customer", "card", "items"}
        assert value["card"] == "************1111"
        assert value["items"] == [{"sku": "A"}, {"sku": "B"}]
        assert len(value["customer"]["name"]) == 43  # a base64url HMAC-SHA-256
    names = {r["value"]["customer"]["name"] for r in records}
    assert len(names) == 2, "the same name gives the same pseudonym within a contract"

    initech_events = stream(http, gw, "initech", 10)
    initech = [e.json() for e in initech_events if e.event == "record"]
    assert [r["offset"] for r in initech] == list(range(10))
    assert_fifth_decrypts(world, "initech", initech_events)
    assert not names & {r["value"]["customer"]["name"] for r in initech}, "unlinkable across"
    assert all(r["value"]["card"] == "************1111" for r in initech)
    assert all(r["value"]["items"] == [{"sku": "A"}, {"sku": "B"}] for r in initech)

    # The plaintext of an encrypted field appears nowhere on the gateway's side.
    entries = list(read_entries(kafka_config, gw.gateway.settings.ledger_topic, idle=0.5))
    assert EMAIL not in json.dumps(entries)
    assert EMAIL not in caplog.text


def test_moved_truncated_or_foreign_ciphertexts_are_refused(
    serve: Callable[..., RunningGateway],
    world: World,
    protected: list[dict[str, Any]],
    http: httpx.Client,
) -> None:
    gw = serve()
    events = stream(http, gw, "globex", 6)
    decryptor = FieldDecryptor("acme-globex-orders", enc_key(world, "globex"))
    for key in events[0].json()["keys"]:
        decryptor.add(key["kid"], key["jwe"])
    records = [e.json() for e in events if e.event == "record"]
    assert decryptor.decrypt(records[1])["value"]["customer"]["email"] == EMAIL

    moved = json.loads(json.dumps(records[0]))
    moved["value"]["customer"]["email"] = records[1]["value"]["customer"]["email"]
    with pytest.raises(FieldVerificationError, match="another field or record") as info:
        decryptor.decrypt(moved)
    assert (info.value.partition, info.value.offset, info.value.field) == (0, 4, "customer.email")

    other_field = json.loads(json.dumps(records[1]))
    other_field["value"]["order_id"] = other_field["value"]["customer"]["email"]
    with pytest.raises(FieldVerificationError, match="field order_id"):
        decryptor.decrypt(other_field)

    truncated = json.loads(json.dumps(records[1]))
    truncated["value"]["customer"]["email"] = records[1]["value"]["customer"]["email"][:-6]
    with pytest.raises(FieldVerificationError, match="does not decrypt"):
        decryptor.decrypt(truncated)

    stranger = FieldDecryptor("acme-globex-orders", enc_key(world, "initech"))
    with pytest.raises(ValueError, match="cannot be unwrapped"):
        stranger.add(events[0].json()["keys"][0]["kid"], events[0].json()["keys"][0]["jwe"])


def test_keys_endpoint_and_rotation(
    serve: Callable[..., RunningGateway],
    world: World,
    protected: list[dict[str, Any]],
    http: httpx.Client,
) -> None:
    gw = serve(data_key_max_records=3)
    events = stream(http, gw, "globex", 6)
    announced = [k["kid"] for e in events if e.event == "keys" for k in e.json()["keys"]]
    assert len(announced) >= 2, "a new epoch after 3 encrypted records"
    kids_used = {
        json.loads(base64.urlsafe_b64decode(r["value"]["customer"]["email"].split(".")[0] + "=="))[
            "kid"
        ]
        for r in (e.json() for e in events if e.event == "record")
    }
    assert kids_used <= set(announced)

    headers = {"Authorization": f"Bearer {gw.token('globex')}"}
    url = f"{gw.url}/v1/contracts/acme-globex-orders/keys"
    every = http.get(url, headers=headers).json()["keys"]
    assert set(announced) <= {k["kid"] for k in every}, "old keys stay fetchable"
    one = http.get(url, headers=headers, params={"kid": announced[0]}).json()["keys"]
    assert [k["kid"] for k in one] == [announced[0]]
    assert http.get(url, headers=headers, params={"kid": "nope"}).json()["code"] == "unknown_key"
    foreign = http.get(f"{gw.url}/v1/contracts/acme-initech-orders/keys", headers=headers)
    assert foreign.status_code == 404


def test_a_path_the_schema_rules_out_refuses_the_contract(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    product = world.contracts_dir / "products" / "orders.yaml"
    product.write_text(
        product.read_text() + "schema:\n  properties:\n    order_id: {type: string}\n"
    )
    gw = serve()
    response = http.get(
        f"{gw.url}/v1/contracts/acme-globex-orders/records",
        headers={"Authorization": f"Bearer {gw.token('globex')}"},
    )
    assert response.status_code == 403
    assert response.json()["reason"] == "unknown_field"


def test_a_new_partner_key_starts_a_new_epoch_at_once(
    serve: Callable[..., RunningGateway],
    world: World,
    protected: list[dict[str, Any]],
    http: httpx.Client,
    kafka_config: dict[str, str],
) -> None:
    import time

    from joserfc.jwk import OKPKey

    gw = serve()
    first = [
        k for e in stream(http, gw, "globex", 6) if e.event == "keys" for k in e.json()["keys"]
    ]
    # globex publishes a new X25519 key (keeping its signing key, so the contract stays valid).
    public = world.keys_dir / "globex.jwks.json"
    private = json.loads(world.private["globex"].read_text())
    new_enc = OKPKey.generate_key("X25519", parameters={"use": "enc"}, auto_kid=True)
    private["keys"] = [k for k in private["keys"] if k.get("use") != "enc"] + [
        new_enc.as_dict(private=True)
    ]
    world.private["globex"].write_text(json.dumps(private))
    published = json.loads(public.read_text())
    published["keys"] = [k for k in published["keys"] if k.get("use") != "enc"] + [
        new_enc.as_dict(private=False)
    ]
    public.write_text(json.dumps(published))
    time.sleep(0.6)  # the watcher reloads the keys
    produce(kafka_config, world.topic, [("o-20", json.dumps(order(20)).encode())], partition=0)
    events = stream(http, gw, "globex", 7)
    announced = [k for e in events if e.event == "keys" for k in e.json()["keys"]]
    assert announced[0]["kid"] != first[0]["kid"], "a new epoch for the new key"
    decryptor = FieldDecryptor("acme-globex-orders", new_enc)
    decryptor.add(announced[0]["kid"], announced[0]["jwe"])
    last = [e.json() for e in events if e.event == "record"][-1]
    assert decryptor.decrypt(last)["value"]["customer"]["email"] == "c20@x.example"
