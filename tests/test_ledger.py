"""The ledger end to end: what is recorded, the report against what a client received, tampering."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from gateway.adapters.kafka.ledger import read_entries
from gateway.cli import main
from gateway.services.report import build_report
from tests.conftest import RunningGateway, World
from tests.test_streaming import CONTRACT, sse_read


def entries_until(
    kafka_config: dict[str, str], topic: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        entries = list(read_entries(kafka_config, topic, idle=0.3))
        if done(entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)


def test_the_report_matches_what_the_partner_received(
    serve: Callable[..., RunningGateway],
    world: World,
    produce_orders: Any,
    http: httpx.Client,
    kafka_config: dict[str, str],
    tmp_path: Path,
) -> None:
    produce_orders(world.topic, 40)
    gw = serve()
    token = gw.token("globex")
    events = [e for e in sse_read(http, gw, token, until_records=25) if e.event == "record"]
    events = events[:25]  # the client stops after 25, whatever else its last read held
    received = [e.json() for e in events]
    pulled = gw.pull_records(http, 15, cursor=events[-1].id)
    assert len(received) + len(pulled) == 40
    topic = gw.gateway.settings.ledger_topic
    entries = entries_until(
        kafka_config, topic, lambda es: {"stream", "pull"} <= {e.get("kind") for e in es}
    )

    report = build_report(entries, CONTRACT)
    stream, pull = sorted(report.deliveries, key=lambda d: d.kind, reverse=True)
    # The ledger records what was written to the connection; the client read 25 of it before
    # hanging up, which its next cursor (where the pull starts) shows.
    assert (stream.kind, stream.org, stream.client) == ("stream", "globex", "globex")
    assert 25 <= stream.records <= 40
    assert (pull.kind, pull.records, pull.end_reason) == ("pull", 15, "answered")
    sent = {
        (int(p), offset)
        for d in report.deliveries
        for p, (first, last) in d.ranges.items()
        for offset in range(first or 0, last + 1)
    }
    assert sent == {(r["partition"], r["offset"]) for r in [*received, *pulled]}
    v1 = world.contracts_dir / f"{CONTRACT}.yaml"
    from gateway.core.documents import canonical_hash, load_yaml

    version = canonical_hash(load_yaml(v1.read_text(), source="v1"))
    assert stream.versions == [version]
    assert report.version_numbers == {version: 1}
    assert stream.bytes > stream.records * 100

    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "chain_started"
    assert "token_issued" in kinds
    statuses = [e for e in entries if e["kind"] == "contract" and e.get("event") == "status"]
    assert {(e["contract"], e["state"]) for e in statuses} >= {(CONTRACT, "active")}
    assert token not in json.dumps(entries), "a token must never reach the ledger"

    runner = CliRunner()
    common = ["--bootstrap-servers", kafka_config["bootstrap.servers"], "--topic", topic]
    verified = runner.invoke(main, ["ledger", "verify", *common])
    assert verified.exit_code == 0, verified.output
    assert "intact" in verified.output
    as_json = runner.invoke(main, ["ledger", "report", "--contract", CONTRACT, "--json", *common])
    assert as_json.exit_code == 0, as_json.output
    sent_records = sum(d["records"] for d in json.loads(as_json.output)["deliveries"])
    assert sent_records == stream.records + pull.records
    table = runner.invoke(main, ["ledger", "report", "--contract", CONTRACT, *common])
    assert "v1: 2 deliveries" in table.output

    exported = runner.invoke(main, ["ledger", "export", *common]).output.splitlines()

    def backdated(line: str) -> str:
        entry = json.loads(line)
        entry["time"] = "2020-01-01T00:00:00.000Z"
        return json.dumps(entry)

    lines = exported
    for name, tampered, kind in [
        (
            "edited",
            [*lines[:2], backdated(lines[2]), *lines[3:]],
            "EDITED",
        ),
        ("removed", [*lines[:2], *lines[3:]], "REMOVED"),
        ("reordered", [lines[0], lines[2], lines[1], *lines[3:]], "REORDERED"),
    ]:
        path = tmp_path / f"{name}.ndjson"
        path.write_text("\n".join(tampered) + "\n")
        result = runner.invoke(main, ["ledger", "verify", "--file", str(path)])
        assert result.exit_code == 1, (name, result.output)
        assert kind in result.output, (name, result.output)


def test_a_revocation_is_recorded(
    serve: Callable[..., RunningGateway], world: World, kafka_config: dict[str, str]
) -> None:
    from tests.test_lifecycle_live import statement

    gw = serve()
    statement(world, "revoke", "globex")
    topic = gw.gateway.settings.ledger_topic

    def revoked(entries: list[dict[str, Any]]) -> bool:
        return any(e.get("state") == "revoked" for e in entries)

    entries = entries_until(kafka_config, topic, revoked)
    said = [e for e in entries if e["kind"] == "statement"]
    assert [(s["statement"], s["issued_by"], s["accepted"]) for s in said] == [
        ("revoke", "globex", True)
    ]
    assert revoked(entries)


def test_an_undecodable_file_name_is_recorded_escaped_and_recording_goes_on(
    serve: Callable[..., RunningGateway],
    world: World,
    produce_orders: Any,
    http: httpx.Client,
    kafka_config: dict[str, str],
) -> None:
    """Such a name used to kill the ledger writer: the gateway then served unrecorded."""
    gw = serve()
    topic = gw.gateway.settings.ledger_topic
    name = bytes(world.contracts_dir) + b"/draft-\xff.yaml"
    with open(name, "wb") as hostile:
        hostile.write(b"contract: draft\n")
    entries_until(kafka_config, topic, lambda es: any("draft-" in str(e) for e in es))
    produce_orders(world.topic, 3)
    assert len(gw.pull_records(http, 3)) == 3
    entries = entries_until(kafka_config, topic, lambda es: any(e["kind"] == "pull" for e in es))
    refused = [e for e in entries if e.get("event") == "refused"]
    assert refused[0]["source"].endswith("draft-\\udcff.yaml")
    assert [e["records"] for e in entries if e["kind"] == "pull"] == [3]
    assert gw.gateway.ledger.problem() is None


def test_the_first_request_to_a_starting_gateway_is_served_not_refused(
    world: World, kafka_bootstrap: str, http: httpx.Client
) -> None:
    """It listens once the ledger takes writes: no 503 "the ledger is starting" to a partner."""
    from tests.test_cli import gateway_serve

    with gateway_serve(world, kafka_bootstrap, "--org", "acme") as (port, _):
        response = http.get(f"http://127.0.0.1:{port}/readyz")
        assert response.status_code == 200, response.text


def test_signed_checkpoints_prove_a_closed_chain_and_expose_a_cut_or_a_rewrite(
    serve: Callable[..., RunningGateway], http: httpx.Client, kafka_config: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    gw = serve(ledger_checkpoint_seconds=0.2)
    jwks = tmp_path / "gateway.jwks.json"
    jwks.write_text(http.get(f"{gw.url}/.well-known/jwks.json").text)
    gw.token("globex")
    deadline = time.monotonic() + 10
    while not [e for e in gw.gateway.ledger_entries() if e["kind"] == "checkpoint"]:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    gw.stop()
    topic = gw.gateway.settings.ledger_topic
    entries = list(read_entries(kafka_config, topic))
    assert entries[-1]["kind"] == "checkpoint"
    assert entries[-1]["final"] is True
    exported = tmp_path / "ledger.ndjson"

    def verify(lines: list[dict[str, Any]], *extra: str) -> tuple[int, str]:
        exported.write_text("".join(json.dumps(e) + "\n" for e in lines))
        result = CliRunner().invoke(
            main, ["ledger", "verify", "--file", str(exported), "--keys", str(jwks), *extra]
        )
        return result.exit_code, result.output

    code, out = verify(entries)
    assert code == 0, out
    assert "1 closed" in out
    assert out.splitlines()[-1].endswith("intact")
    # The tail cut: the links still hold, the chain is not closed.
    code, out = verify(entries[:-2], "--live-seconds", "0")
    assert code == 1
    assert out.startswith("OPEN chain")
    # An entry rewritten, every hash after it recomputed: the signed heads no longer match.
    from gateway.core.ledger import entry_hash

    rewritten = [dict(e) for e in entries]
    rewritten[1]["rewritten"] = True
    for before, entry in itertools.pairwise(rewritten):
        entry["prev"] = before["hash"]
        entry["hash"] = entry_hash(entry)
    code, out = verify(rewritten)
    assert code == 1
    assert "REWRITTEN" in out
    # Keys that cannot be read: one line, exit 2.
    result = CliRunner().invoke(
        main, ["ledger", "verify", "--file", str(exported), "--keys", str(tmp_path / "none")]
    )
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
