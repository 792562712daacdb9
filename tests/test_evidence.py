"""Evidence for one question, checked offline: what did globex receive, under which terms?"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from gateway.cli import main
from gateway.core.jose import sign_detached
from gateway.services.passwords import hash_secret
from gateway.settings import LegalUser
from tests.conftest import RunningGateway, World

pytestmark = pytest.mark.kafka

CONTRACT = "acme-globex-orders"


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_an_evidence_bundle_is_verified_offline_and_a_tampered_one_refused(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    produce_orders: Any,
    kafka_config: dict[str, str],
    tmp_path: Path,
) -> None:
    produce_orders(world.topic, 5)
    user = LegalUser(username="lena", password_hash=SecretStr(hash_secret("for-legal-only")))
    gw = serve(ledger_checkpoint_seconds=0.2, legal_users=[user])
    jwks = tmp_path / "jwks.json"
    jwks.write_text(http.get(f"{gw.url}/.well-known/jwks.json").text)
    assert len(gw.pull_records(http, 5)) == 5
    # The partner acknowledges the receipt of one more pull (from the start again).
    token = gw.token("globex")
    body = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records",
        params={"from": "earliest", "limit": "5", "wait": "5"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    total = 5 + len(body["records"])
    signature = sign_detached(body["receipt"].encode(), world.key("globex"), org="globex")
    acknowledged = http.post(
        f"{gw.url}/v1/contracts/{CONTRACT}/acknowledgements",
        json={"receipt": body["receipt"], "signature": signature},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert acknowledged.status_code == 201, acknowledged.text
    # Legal's page offers the same bundle while the gateway runs (once a checkpoint follows).
    legal = ("lena", "for-legal-only")
    page = http.get(f"{gw.url}/legal/contracts/{CONTRACT}/deliveries", auth=legal)
    assert "Download the evidence bundle" in page.text
    url = f"{gw.url}/legal/contracts/{CONTRACT}/evidence"
    assert http.get(url).status_code == 401
    deadline = time.monotonic() + 10
    while True:  # until a checkpoint (every 0.2 s) follows the pulls: it closes the slice
        kinds = [e["kind"] for e in gw.gateway.ledger_entries()]
        last = max(n for n, k in enumerate(kinds) if k in ("pull", "acknowledgement"))
        if "checkpoint" in kinds[last:]:
            break
        assert time.monotonic() < deadline, "no checkpoint followed the deliveries"
        time.sleep(0.1)
    download = http.get(
        url,
        params={"from": "2026-01-01T00:00:00Z", "to": "2099-01-01T00:00:00Z"},
        auth=legal,
    )
    assert download.status_code == 200, download.text
    assert "attachment" in download.headers["content-disposition"]
    from_page = tmp_path / "from-page.json"
    from_page.write_bytes(download.content)
    code, out = cli("ledger", "verify-evidence", str(from_page), "--keys", str(jwks))
    assert code == 0, out
    assert f"{total} records" in out
    gw.stop()  # its chain closes with a final checkpoint
    bundle = tmp_path / "bundle.json"
    code, out = cli(
        "ledger", "evidence", "--contract", CONTRACT,
        "--from", "2026-01-01T00:00:00Z", "--to", "2099-01-01T00:00:00Z", "--out", str(bundle),
        "--keys", str(jwks), "--contracts-dir", str(world.contracts_dir),
        "--keys-dir", str(world.keys_dir), "--bootstrap-servers", kafka_config["bootstrap.servers"],
        "--topic", gw.gateway.settings.ledger_topic,
    )  # fmt: skip
    assert code == 0, out
    data = json.loads(bundle.read_text())
    delivered = sum(d["records"] for d in data["report"]["deliveries"])
    assert delivered == total
    assert sorted(data["organisations"]) == ["acme", "globex"]

    code, out = cli("ledger", "verify-evidence", str(bundle), "--keys", str(jwks))
    assert code == 0, out
    assert out.splitlines()[-1] == "evidence verified"
    assert f"{total} records" in out
    assert "signed by acme and globex" in out
    pulls = sum(1 for e in data["ledger"] if e["kind"] == "pull")
    assert f"{pulls} receipts signed by the gateway, over {total} records" in out
    assert "1 of them acknowledged, signed by globex" in out

    def refused(change: Callable[[dict[str, Any]], None], *extra: str) -> str:
        tampered = json.loads(bundle.read_text())
        change(tampered)
        path = tmp_path / "tampered.json"
        path.write_text(json.dumps(tampered))
        code, out = cli("ledger", "verify-evidence", str(path), *extra)
        assert code == 1, out
        assert out.splitlines()[-1] == "evidence REFUSED"
        return out

    def fewer_records(b: dict[str, Any]) -> None:
        b["report"]["deliveries"][0]["records"] = 1

    def edited_entry(b: dict[str, Any]) -> None:
        delivery = next(e for e in b["ledger"] if e["kind"] in ("pull", "stream", "progress"))
        delivery["records"] = 1

    def other_terms(b: dict[str, Any]) -> None:
        document = next(iter(b["versions"].values()))
        document["purpose"] = "Something else"

    def cut_checkpoint(b: dict[str, Any]) -> None:
        b["ledger"].pop()

    def forged_acknowledgement(b: dict[str, Any]) -> None:
        entry = next(e for e in b["ledger"] if e["kind"] == "acknowledgement")
        entry["signature"] = sign_detached(b"another receipt", world.key("globex"), org="globex")

    assert "an acknowledgement by globex does not verify" in refused(forged_acknowledgement)
    assert "the report is not what the ledger slices say" in refused(fewer_records)
    assert "does not match its hash" in refused(edited_entry)
    assert "hashes to" in refused(other_terms)
    assert "does not end in a checkpoint that verifies" in refused(cut_checkpoint)
    other = tmp_path / "other.jwks.json"
    code, _ = cli("keys", "generate", "mallory", "--keys-dir", str(tmp_path),
                  "--private-dir", str(tmp_path / "p"))  # fmt: skip
    other.write_text((tmp_path / "mallory.jwks.json").read_text())
    assert "not the ones given with --keys" in refused(lambda b: None, "--keys", str(other))
    code, out = cli("ledger", "verify-evidence", str(tmp_path / "missing.json"))
    assert code == 2
    assert len(out.strip().splitlines()) == 1
