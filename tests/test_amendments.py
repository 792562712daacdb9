"""Amendments edited in place, as anyone keeping contracts in git does.

``gateway contract amend`` turns the file into its next version; once both parties have signed
it, the old version's file is gone, yet the chain holds: the gateway keeps every version it
verified in the ledger. A widening amendment keeps live streams, a narrowing one ends them with
``superseded``, and the chain is the same after a restart and on a replica started afresh."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from gateway.adapters.stores.signing import sign_file
from gateway.cli import main
from gateway.core.documents import canonical_hash, load_yaml
from tests.conftest import RunningGateway, World
from tests.sse import LiveStream

pytestmark = pytest.mark.kafka

CONTRACT = "acme-globex-orders"
WIDER = (
    "fields:\n  order_id: clear\n  amount: clear\n  customer.country: clear\n  currency: clear\n"
)
NARROWER = "fields:\n  order_id: clear\n"


def amend_in_place(world: World, fields: str) -> str:
    """`gateway contract amend` on the contract's own file, new fields, both parties sign;
    the hash of the version it replaced."""
    path = world.contracts_dir / f"{CONTRACT}.yaml"
    replaced = canonical_hash(load_yaml(path.read_text(), source="before"))
    draft = world.root / "draft.yaml"
    result = CliRunner().invoke(main, ["contract", "amend", str(path), "--out", str(draft)])
    assert result.exit_code == 0, result.output
    text = draft.read_text()
    assert f"supersedes: {replaced}" in text
    start = text.index("fields:")
    end = text.index("signatures:")
    draft.write_text(text[:start] + fields + text[end:])
    for org in ("acme", "globex"):
        sign_file(draft, world.private[org], org)
    draft.replace(path)  # the old version's file is gone, as after a git commit
    return replaced


def listed(http: httpx.Client, gw: RunningGateway) -> list[tuple[str, int, str]]:
    body = http.get(
        f"{gw.url}/v1/contracts", headers={"Authorization": f"Bearer {gw.token('globex')}"}
    ).json()
    return [(c["contract"], c["version"], c["state"]) for c in body["contracts"]]


def test_amend_writes_the_next_version_ready_to_sign(world: World) -> None:
    path = world.contracts_dir / f"{CONTRACT}.yaml"
    before = canonical_hash(load_yaml(path.read_text(), source="v1"))
    result = CliRunner().invoke(main, ["contract", "amend", str(path)])
    assert result.exit_code == 0, result.output
    assert "version 2 of acme-globex-orders" in result.output
    data = load_yaml(path.read_text(), source="v2")
    assert (data["version"], data["supersedes"], data["signatures"]) == (2, before, [])
    assert path.read_text().count("supersedes:") == 1
    broken = world.root / "broken.yaml"
    broken.write_text("contract: [")
    refused = CliRunner().invoke(main, ["contract", "amend", str(broken)])
    assert refused.exit_code == 2
    assert "not valid YAML" in refused.output


def test_in_place_amendments_keep_the_chain_live_after_a_restart_and_on_a_new_replica(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    produce_orders: Any,
) -> None:
    ledger = "ledger-amend-" + world.root.name[-8:]
    gw = serve(ledger_topic=ledger)
    stream = LiveStream(http, gw.url, gw.token("globex"))
    time.sleep(0.5)
    # v2 widens: the stream carries on under it, though v1's file is gone.
    amend_in_place(world, WIDER)
    time.sleep(1.0)
    assert listed(http, gw) == [(CONTRACT, 2, "active")]
    produce_orders(world.topic, 3)
    assert len(stream.wait_records(3, timeout=10)) == 3
    assert not [e for _, e in stream.events if e.event == "end"]
    # v3 narrows: the stream ends with superseded, and v3 governs.
    written = time.monotonic()
    amend_in_place(world, NARROWER)
    ended_at, end = stream.wait_end()
    assert end["reason"] == "superseded"
    assert ended_at - written < 1.5
    stream.close()
    assert listed(http, gw) == [(CONTRACT, 3, "active")]
    gw.stop()
    # Only v3's file exists: a restart and a replica with nothing of its own rebuild the
    # chain v1 -> v2 -> v3 from the ledger.
    files = sorted(p.name for p in world.contracts_dir.glob("*.yaml"))
    assert files == [f"{CONTRACT}.yaml", "acme-initech-orders.yaml"]
    restarted = serve(ledger_topic=ledger)
    assert listed(http, restarted) == [(CONTRACT, 3, "active")]
    fresh = serve(ledger_topic=ledger, state_dir=world.root / "fresh-state")
    assert listed(http, fresh) == [(CONTRACT, 3, "active")]
    history = fresh.gateway.registry.histories[CONTRACT]
    assert [(e.doc.contract.version, e.chained) for e in history.versions] == [
        (1, True),
        (2, True),
        (3, True),
    ]
    assert history.versions[0].doc.source.startswith("ledger")


def test_without_the_ledger_a_lost_version_breaks_the_chain_and_says_so(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    """The archive only holds what a gateway verified: an amendment whose old version no
    gateway ever loaded is refused (broken_chain), not trusted."""
    amend_in_place(world, WIDER)
    gw = serve()
    assert listed(http, gw) == []
    refusals = {r.reason for r in gw.gateway.registry.refusals}
    assert "broken_chain" in refusals
