"""Signed delivery receipts and the partner's acknowledgements, as a partner meets them.

Every few records or seconds a stream carries a receipt: the gateway's JWS over what it sent
(a digest of exactly the record events' bytes). The partner verifies it with any JOSE library
and the published JWKS, recomputes the digest from what it received, and acknowledges it with
its own signature; both are in the ledger."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import KeySet

from gateway.client import FileSink, consume
from gateway.core.jose import b64url, eddsa_allowed, sign_detached
from tests.conftest import RunningGateway, World, order, produce_exact
from tests.npm import node_script

pytestmark = pytest.mark.kafka

CONTRACT = "acme-globex-orders"


@pytest.fixture(scope="session")
def node_receipts() -> Path:
    return node_script("receipts.mjs", "jose@5.9.6")


def auth(gw: RunningGateway, org: str = "globex") -> dict[str, str]:
    tokens: dict[str, str] = gw.__dict__.setdefault("tokens", {})
    if org not in tokens:
        tokens[org] = gw.token(org)
    return {"Authorization": f"Bearer {tokens[org]}"}


def gateway_keys(http: httpx.Client, gw: RunningGateway) -> KeySet:
    """The published JWKS, found as a partner finds it (RFC 8414 ``jwks_uri``)."""
    metadata = http.get(f"{gw.url}/.well-known/oauth-authorization-server").json()
    return KeySet.import_key_set(http.get(metadata["jwks_uri"]).json())


def verified(token: str, keys: KeySet) -> dict[str, Any]:
    """A plain JOSE library's verdict, told nothing about the gateway."""
    registry = jws.JWSRegistry(algorithms=["EdDSA"], strict_check_header=False)
    with eddsa_allowed():
        obj = jws.deserialize_compact(token, keys, registry=registry)
    assert obj.headers()["typ"] == "delivery-receipt+json"
    claims: dict[str, Any] = json.loads(obj.payload)
    return claims


def digest(parts: list[bytes]) -> str:
    return b64url(hashlib.sha256(b"".join(parts)).digest())


def sse_blocks(response: httpx.Response) -> Iterator[bytes]:
    """Each SSE event's exact bytes, with its blank line."""
    buffer = b""
    for chunk in response.iter_raw():
        buffer += chunk
        while (end := buffer.find(b"\n\n")) >= 0:
            yield buffer[: end + 2]
            buffer = buffer[end + 2 :]


def sse_receipts(
    http: httpx.Client, gw: RunningGateway, records: int
) -> list[tuple[str, list[bytes]]]:
    """Receipts, each with the record events before it, read from an SSE stream until they
    cover ``records`` records."""
    found: list[tuple[str, list[bytes]]] = []
    events: list[bytes] = []
    covered = 0
    url = f"{gw.url}/v1/contracts/{CONTRACT}/stream"
    with http.stream("GET", url, params={"from": "earliest"}, headers=auth(gw)) as response:
        assert response.status_code == 200
        for block in sse_blocks(response):
            if block.startswith((b"event: record\n", b"event: refused\n")):
                events.append(block)
            elif block.startswith(b"event: receipt\n"):
                data = block.split(b"\ndata: ", 1)[1].strip()
                found.append((json.loads(data)["receipt"], events))
                covered += len(events)
                events = []
                if covered >= records:
                    return found
    raise AssertionError(f"receipts for {covered} of {records} records came")


def pull_receipt(
    http: httpx.Client, gw: RunningGateway, cursor: str | None = None
) -> tuple[str, str]:
    """A pull's receipt, and its cursor."""
    params = {"cursor": cursor} if cursor else {"from": "earliest"}
    body = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records",
        params={**params, "limit": "2", "wait": "5"},
        headers=auth(gw),
    ).json()
    assert body["records"]
    return body["receipt"], body["cursor"]


def acknowledge(
    http: httpx.Client,
    gw: RunningGateway,
    receipt: str,
    *,
    org: str = "globex",
    signer: str | None = None,
    signed: str | None = None,
    contract: str = CONTRACT,
) -> httpx.Response:
    """``org`` posts an acknowledgement of ``receipt``: ``signer``'s JWS over ``signed``."""
    signer = signer or org
    signature = sign_detached((signed or receipt).encode("ascii"), gw.world.key(signer), org=signer)
    return http.post(
        f"{gw.url}/v1/contracts/{contract}/acknowledgements",
        headers=auth(gw, org),
        json={"receipt": receipt, "signature": signature},
    )


def ledger_of(gw: RunningGateway, kind: str) -> list[Any]:
    return [e for e in gw.gateway.ledger_entries() if e.get("kind") == kind]


def test_a_partner_checks_and_acknowledges_receipts_with_only_node_and_jose(
    serve: Callable[..., RunningGateway],
    world: World,
    produce_orders: Any,
    node_receipts: Path,
) -> None:
    produce_orders(world.topic, 12)
    gw = serve(receipt_records=5, receipt_seconds=0.5)
    run = subprocess.run(
        ["node", str(node_receipts), gw.url, "globex", str(world.private["globex"]), CONTRACT,
         "12"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    receipts = json.loads(run.stdout)["receipts"]
    assert sum(r["claims"]["records"] for r in receipts) == 12
    for seq, receipt in enumerate(receipts, start=1):
        claims = receipt["claims"]
        assert receipt["typ"] == "delivery-receipt+json"
        assert (claims["contract"], claims["partner"], claims["seq"]) == (CONTRACT, "globex", seq)
        # The batch that reaches 5 records (the first receipt: its share of them), or fewer
        # after half a second.
        assert claims["records"] == receipt["counted"] > 0
        assert claims["sha256"] == receipt["digest"]  # recomputed from the bytes received
        assert sum(r["last"] - r["first"] + 1 for r in claims["ranges"]) == claims["records"]
        assert receipt["acknowledged"] == 201, receipt["answer"]
        assert receipt["answer"]["seq"] == seq
        assert receipt["answer"]["delivery"] == claims["delivery"]
    # The ledger holds both sides: the gateway's receipts and the partner's acknowledgements.
    given = {e["receipt"] for e in ledger_of(gw, "receipt")}
    acknowledged = ledger_of(gw, "acknowledgement")
    assert [(e["org"], e["receipt_seq"]) for e in acknowledged] == [
        ("globex", seq) for seq in range(1, len(receipts) + 1)
    ]
    assert {e["receipt"] for e in acknowledged} <= given


def test_receipts_cover_exactly_the_bytes_sent_over_sse_ndjson_and_pull(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client, produce_orders: Any
) -> None:
    produce_orders(world.topic, 7)
    gw = serve(receipt_records=3, receipt_seconds=0.5)
    keys = gateway_keys(http, gw)
    # SSE: a receipt after the batch that reaches 3 records, or half a second after a record.
    receipts = sse_receipts(http, gw, 7)
    claims = [verified(token, keys) for token, _ in receipts]
    assert sum(c["records"] for c in claims) == 7
    for (_, events), c in zip(receipts, claims, strict=True):
        assert c["records"] == len(events)
        assert c["sha256"] == digest(events)
        last_cursor = events[-1].split(b"\nid: ", 1)[1].split(b"\n", 1)[0].decode()
        assert c["cursor"] == last_cursor
        assert c["format"] == "text/event-stream"
    assert len({c["delivery"] for c in claims}) == 1
    ranges = [(r["partition"], r["first"], r["last"]) for c in claims for r in c["ranges"]]
    read = sorted(o for p in (0, 1) for o in range(0, 7) if (p, o) in _offsets(ranges))
    assert len(read) == 7
    # NDJSON: the record lines, each with its newline.
    headers = {**auth(gw), "Accept": "application/x-ndjson"}
    url = f"{gw.url}/v1/contracts/{CONTRACT}/stream"
    lines: list[bytes] = []
    with http.stream("GET", url, params={"from": "earliest"}, headers=headers) as response:
        for line in response.iter_lines():
            raw = line.encode()
            if raw.startswith(b'{"event":"receipt"'):
                c = verified(json.loads(raw)["receipt"], keys)
                assert c["sha256"] == digest([x + b"\n" for x in lines])
                # (This stream's first receipt: after its share of the 3 records.)
                assert c["records"] == len(lines) > 0
                break
            if not raw.startswith(b'{"event"'):
                lines.append(raw)
    # Pull: one record a line in the answer; the digest is over those lines as NDJSON sends.
    response = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records",
        params={"from": "earliest", "limit": "4", "wait": "5"},
        headers=auth(gw),
    )
    body = response.json()
    assert body["records"]
    items = response.content.split(b"\n")[1 : 1 + len(body["records"])]
    items = [item.removesuffix(b",") for item in items]
    assert [json.loads(item) for item in items] == body["records"]
    c = verified(body["receipt"], keys)
    assert (c["kind"], c["format"]) == ("pull", "application/json")
    assert c["sha256"] == digest([item + b"\n" for item in items])
    assert c["records"] == len(items)
    assert c["cursor"] == body["cursor"]


def _offsets(ranges: list[tuple[int, int, int]]) -> set[tuple[int, int]]:
    return {(p, o) for p, first, last in ranges for o in range(first, last + 1)}


def test_refused_acknowledgements_say_why(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client, produce_orders: Any
) -> None:
    produce_orders(world.topic, 4)
    gw = serve()
    first, cursor = pull_receipt(http, gw)
    second, _ = pull_receipt(http, gw, cursor)

    def refused(response: httpx.Response) -> tuple[int, str]:
        assert response.headers["content-type"] == "application/problem+json"
        return response.status_code, response.json()["code"]

    # globex's receipt, signed by initech (naming itself): not globex's acknowledgement.
    assert refused(acknowledge(http, gw, first, signer="initech")) == (422, "wrong_organisation")
    # A signature over another receipt.
    assert refused(acknowledge(http, gw, first, signed=second)) == (422, "signature_invalid")
    # A receipt changed by a byte, or one the gateway never signed (a ledger checkpoint).
    header, payload, sig = first.split(".")
    tampered = f"{header}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{sig}"
    assert refused(acknowledge(http, gw, tampered)) == (422, "receipt_invalid")
    checkpoint = ledger_of(gw, "checkpoint")[0]["signature"]
    assert refused(acknowledge(http, gw, checkpoint)) == (422, "receipt_invalid")
    # initech: not its contract (as if it did not exist), nor its receipt on its own contract.
    assert refused(acknowledge(http, gw, first, org="initech")) == (404, "contract_not_found")
    assert refused(acknowledge(http, gw, first, org="initech", contract="acme-initech-orders")) == (
        422,
        "receipt_invalid",
    )
    assert ledger_of(gw, "acknowledgement") == []
    # The right one is accepted.
    accepted = acknowledge(http, gw, first)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["seq"] == 1


def consuming(
    gw: RunningGateway,
    tmp_path: Path,
    kafka_config: dict[str, str],
    records: int,
    *,
    altered: bool = False,
) -> tuple[list[str], int]:
    """``gateway consume``'s loop for ``records`` records; the first receipt it checks makes
    one more record be produced, so that the loop reads past it. What it made of each receipt
    ("match" or "mismatch"), and the records it wrote."""
    checked: list[str] = []
    with gw.client("globex") as client, (tmp_path / "out").open("a") as out:
        original = client.check_receipt

        def check(contract: str, token: str, received: Any) -> Any:
            if altered:
                received.digest.update(b"a byte changed on the way")
            found = original(contract, token, received)
            checked.append("mismatch" if found is None else "match")
            if len(checked) == 1:
                produce_exact(
                    kafka_config, gw.world.topic, [("o-x", json.dumps(order(99)).encode())]
                )
            return found

        client.check_receipt = check  # type: ignore[method-assign]
        written = consume(
            client,
            CONTRACT,
            checkpoint=tmp_path / "cursor",
            sink=FileSink(out),
            start="earliest",
            max_records=records + 1,
        )
    return checked, written


def test_consume_acknowledges_receipts_once_its_sink_has_the_records(
    serve: Callable[..., RunningGateway],
    world: World,
    produce_orders: Any,
    kafka_config: dict[str, str],
    tmp_path: Path,
) -> None:
    produce_orders(world.topic, 5)
    gw = serve(receipt_records=5)
    checked, written = consuming(gw, tmp_path, kafka_config, 5)
    assert (checked, written) == (["match"], 6)
    assert len((tmp_path / "out").read_text().splitlines()) == 6
    acknowledged = ledger_of(gw, "acknowledgement")
    assert [(e["receipt_seq"], e["records"]) for e in acknowledged] == [(1, 5)]


def test_consume_does_not_acknowledge_what_it_did_not_receive(
    serve: Callable[..., RunningGateway],
    world: World,
    produce_orders: Any,
    kafka_config: dict[str, str],
    tmp_path: Path,
) -> None:
    """A receipt whose digest is not what arrived (bytes changed on the way) is said in an
    error line and not acknowledged."""
    produce_orders(world.topic, 3)
    gw = serve(receipt_records=3)
    checked, _ = consuming(gw, tmp_path, kafka_config, 3, altered=True)
    assert checked == ["mismatch"]
    assert ledger_of(gw, "acknowledgement") == []
