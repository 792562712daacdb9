"""Lifecycle changes take effect on live streams over real sockets, without a restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.adapters.stores.signing import write_statement
from gateway.core.documents import canonical_hash, load_yaml
from tests.conftest import RunningGateway, World
from tests.sse import LiveStream

CONTRACT = "acme-globex-orders"


def refused_reason(http: httpx.Client, gw: RunningGateway) -> str:
    response = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records",
        headers={"Authorization": f"Bearer {gw.token('globex')}"},
    )
    assert response.status_code == 403, response.text
    return str(response.json()["reason"])


def statement(world: World, kind: str, org: str = "acme") -> Path:
    return write_statement(
        kind,
        CONTRACT,
        reason=f"{kind} in a test",
        key_path=world.private[org],
        contracts_dir=world.contracts_dir,
        keys_dir=world.keys_dir,
        org=org,
    )


@pytest.mark.parametrize(("kind", "org"), [("revoke", "globex"), ("suspend", "acme")])
def test_a_statement_ends_the_live_stream_within_a_second(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client, kind: str, org: str
) -> None:
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    time.sleep(0.5)
    written = time.monotonic()
    statement(world, kind, org)
    ended_at, end = stream.wait_end()
    reason = {"revoke": "revoked", "suspend": "suspended"}[kind]
    assert end["reason"] == reason
    assert f"{kind} in a test" in end["detail"]
    assert ended_at - written < 1.0, f"ended {ended_at - written:.2f}s after the statement"
    assert refused_reason(http, gw) == reason
    stream.close()


def test_resume_lets_partners_back_in(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client, produce_orders: Any
) -> None:
    produce_orders(world.topic, 3)
    gw = serve()
    statement(world, "suspend")
    time.sleep(0.6)
    assert refused_reason(http, gw) == "suspended"
    time.sleep(1.1)  # statements are stamped to the second: the resume must come after
    statement(world, "resume")
    time.sleep(0.6)
    assert len(gw.pull_records(http, 3)) == 3


def amend(world: World, fields: str) -> Path:
    v1 = world.contracts_dir / f"{CONTRACT}.yaml"
    return world.add_contract(
        CONTRACT,
        "globex",
        version=2,
        supersedes=canonical_hash(load_yaml(v1.read_text(), source="v1")),
        fields=fields,
    )


def test_an_amendment_that_narrows_the_fields_ends_the_stream(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    time.sleep(0.5)
    written = time.monotonic()
    amend(world, "fields:\n  order_id: clear\n")
    ended_at, end = stream.wait_end()
    assert end["reason"] == "superseded"
    assert ended_at - written < 1.0
    # Reconnecting under the new terms works, and projects by version 2.
    listed = http.get(
        f"{gw.url}/v1/contracts", headers={"Authorization": f"Bearer {gw.token('globex')}"}
    ).json()["contracts"]
    assert (listed[0]["version"], listed[0]["fields"]) == (2, {"order_id": "clear"})


def test_an_amendment_that_widens_the_fields_keeps_the_stream(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client, produce_orders: Any
) -> None:
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    time.sleep(0.3)
    amend(
        world,
        "fields:\n  order_id: clear\n  amount: clear\n  customer.country: clear\n"
        "  currency: clear\n",
    )
    time.sleep(1.0)
    produce_orders(world.topic, 5)
    deadline = time.monotonic() + 10
    while len(stream.records()) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(stream.records()) == 5
    assert not [e for _, e in stream.events if e.event == "end"]
    stream.close()


def test_expiry_ends_the_stream_on_time(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    (world.contracts_dir / f"{CONTRACT}.yaml").unlink()
    until = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    world.add_contract(CONTRACT, "globex", valid_until=until.isoformat().replace("+00:00", "Z"))
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    _, end = stream.wait_end()
    assert end["reason"] == "expired"
    assert datetime.now(UTC) - until < timedelta(seconds=1)
    assert refused_reason(http, gw) == "expired"


def test_an_invalid_file_never_takes_down_the_others(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    (world.contracts_dir / "broken.yaml").write_text("contract: [unclosed\n")
    (world.contracts_dir / "acme-initech-orders.yaml").write_text("contract: acme-initech-orders\n")
    time.sleep(1.0)
    assert not [e for _, e in stream.events if e.event == "end"]
    listed = http.get(
        f"{gw.url}/v1/contracts", headers={"Authorization": f"Bearer {gw.token('globex')}"}
    ).json()["contracts"]
    assert [c["contract"] for c in listed] == [CONTRACT]
    assert any("broken.yaml" in r.getMessage() for r in caplog.records)
    stream.close()


def test_replicas_sharing_the_directory_converge(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    first, second = serve(), serve()
    streams = [
        LiveStream(http, first.url, first.token("globex")),
        LiveStream(http, second.url, second.token("globex")),
    ]
    time.sleep(0.5)
    statement(world, "revoke", "globex")
    for stream in streams:
        assert stream.wait_end()[1]["reason"] == "revoked"
    assert refused_reason(http, first) == refused_reason(http, second) == "revoked"


def test_deleting_the_contract_file_ends_the_live_stream_as_withdrawn(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    time.sleep(0.5)
    removed = time.monotonic()
    (world.contracts_dir / f"{CONTRACT}.yaml").unlink()
    ended_at, end = stream.wait_end()
    assert end["reason"] == "withdrawn"
    assert ended_at - removed < 1.0
    stream.close()
    listed = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}",
        headers={"Authorization": f"Bearer {gw.token('globex')}"},
    )
    assert listed.status_code == 404


@pytest.mark.parametrize(
    "hostile",
    [
        b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        + b"".join(
            f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n".encode()
            for p, n in zip("bcdefgh", "cdefghi", strict=True)
        ),
        b"\x00\xff\xfe binary \x00" * 100,
        b"contract: huge\npurpose: " + b"x" * (2 * 1024 * 1024) + b"\n",
        b"[" * 5000,
    ],
    ids=["alias-bomb", "binary", "huge", "deep"],
)
def test_a_hostile_file_is_refused_and_a_revocation_still_takes_effect_at_once(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client, hostile: bytes
) -> None:
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    time.sleep(0.5)
    (world.contracts_dir / "hostile.yaml").write_bytes(hostile)
    written = time.monotonic()
    statement(world, "revoke", "globex")
    ended_at, end = stream.wait_end()
    assert end["reason"] == "revoked"
    assert ended_at - written < 1.0, f"ended {ended_at - written:.2f}s after the statement"
    stream.close()
    refused = {r.source: r for r in gw.gateway.registry.refusals}
    assert refused[str(world.contracts_dir / "hostile.yaml")].reason == "invalid_document"
    (world.keys_dir / "hostile.jwks.json").write_bytes(hostile)  # keys are read first
    time.sleep(0.6)
    refused = {r.source: r for r in gw.gateway.registry.refusals}
    assert refused[str(world.keys_dir / "hostile.jwks.json")].reason == "invalid_keys"


def test_a_pending_pull_is_refused_when_the_contract_is_revoked_and_returns_nothing_after(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client, produce_orders: Any
) -> None:
    import threading

    gw = serve()
    token = gw.token("globex")
    answer: dict[str, Any] = {}

    def pull() -> None:
        response = http.get(
            f"{gw.url}/v1/contracts/{CONTRACT}/records",
            headers={"Authorization": f"Bearer {token}"},
            params={"wait": "30", "from": "latest"},
        )
        answer.update(status=response.status_code, body=response.json(), at=time.monotonic())

    waiting = threading.Thread(target=pull)
    waiting.start()
    time.sleep(0.5)
    revoked = time.monotonic()
    statement(world, "revoke", "globex")
    time.sleep(0.2)
    produce_orders(world.topic, 5)  # after the revocation: never to be delivered
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    assert answer["status"] == 403, answer["body"]
    assert answer["body"]["reason"] == "revoked"
    assert "records" not in answer["body"]
    assert answer["at"] - revoked < 1.5
