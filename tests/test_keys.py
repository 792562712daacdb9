"""Organisation keys: fingerprints to confirm, and rotation that keeps contracts in force."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from joserfc.jwk import KeySet

from gateway.cli import main
from tests.conftest import RunningGateway, World
from tests.test_offers import countersign, headers, offer

pytestmark = pytest.mark.kafka


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_fingerprints_are_computed_from_the_keys_never_taken_from_their_kid(
    world: World, tmp_path: Path
) -> None:
    path = world.keys_dir / "globex.jwks.json"
    code, out = cli("keys", "fingerprint", str(path))
    assert code == 0, out
    lines = out.splitlines()
    thumbprints = [k.thumbprint() for k in KeySet.import_key_set(json.loads(path.read_text()))]
    assert len(lines) == 2
    for line, thumbprint in zip(lines, thumbprints, strict=True):
        assert f"SHA256:{thumbprint}" in line
        assert line.endswith("(kid matches)")
    # A kid that lies about the key is called out.
    data = json.loads(path.read_text())
    data["keys"][0]["kid"] = thumbprints[1]
    liar = tmp_path / "liar.jwks.json"
    liar.write_text(json.dumps(data))
    code, out = cli("keys", "fingerprint", str(liar))
    assert code == 0
    assert "is NOT its thumbprint" in out.splitlines()[0]
    (tmp_path / "junk.json").write_text("{")
    code, out = cli("keys", "fingerprint", str(tmp_path / "junk.json"))
    assert code == 2
    assert len(out.strip().splitlines()) == 1


def test_rotation_keeps_contracts_signed_with_the_old_key_in_force(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client
) -> None:
    public = world.keys_dir / "globex.jwks.json"
    old_kid = world.key("globex").kid
    code, out = cli(
        "keys", "rotate", "globex",
        "--keys-dir", str(world.keys_dir), "--private-dir", str(world.root / "private"),
    )  # fmt: skip
    assert code == 0, out
    new_kid = world.key("globex").kid  # the private JWKS now signs with the new key
    assert new_kid != old_kid
    assert new_kid in out
    assert old_kid in out
    published = {k["kid"] for k in json.loads(public.read_text())["keys"]}
    assert {old_kid, new_kid} <= published
    offer(world)
    gw = serve()
    # Signed with the old key: still active. Countersigned with the new one: active too.
    accepted = countersign(http, gw)
    assert (accepted.status_code, accepted.json()["state"]) == (200, "active"), accepted.text
    listed = http.get(f"{gw.url}/v1/contracts", headers=headers(gw)).json()["contracts"]
    assert sorted(c["contract"] for c in listed) == ["acme-globex-offer", "acme-globex-orders"]
    # Without the old key (a compromised key withdrawn), what it signed stops verifying.
    data = json.loads(public.read_text())
    data["keys"] = [k for k in data["keys"] if k["kid"] != old_kid]
    public.write_text(json.dumps(data))
    code, out = cli(
        "contract", "verify", str(world.contracts_dir / "acme-globex-orders.yaml"),
        "--keys-dir", str(world.keys_dir), "--products-dir", str(world.contracts_dir / "products"),
    )  # fmt: skip
    assert code == 1
    assert "signature_invalid" in out
    assert f"no published signing key with kid {old_kid!r}" in out
