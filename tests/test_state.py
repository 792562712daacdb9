"""The gateway's secrets, made once by an operator and mounted read-only on every replica."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import CliRunner

from gateway.adapters.kafka.producer import produce
from gateway.adapters.stores.state_dir import SECRET_FILES
from gateway.cli import main
from gateway.client import client_assertion
from tests.conftest import RunningGateway, World
from tests.test_authorization import token_request
from tests.test_protection import PROTECTED, order

GATEWAY = [sys.executable, "-m", "gateway"]


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


def refused_start(*options: str) -> str:
    """``gateway serve`` with ``options`` must stop at once: one line on standard error, exit 2,
    no traceback; that line."""
    result = subprocess.run(
        [*GATEWAY, "serve", "--bootstrap-servers", "127.0.0.1:1", *options],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "GATEWAY_LOG_FORMAT": "text"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_state_init_creates_each_secret_once_and_never_overwrites(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    first = CliRunner().invoke(main, ["state", "init", str(secrets)])
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in secrets.iterdir()) == sorted(SECRET_FILES)
    for path in secrets.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert "created" in first.output
    before = snapshot(secrets)
    (secrets / "cursor.key").unlink()

    again = CliRunner().invoke(main, ["state", "init", str(secrets)])
    assert again.exit_code == 0, again.output
    assert again.output.count("kept") == len(SECRET_FILES) - 1
    assert f"created {secrets / 'cursor.key'}" in again.output
    after = snapshot(secrets)
    assert {n: v for n, v in after.items() if n != "cursor.key"} == {
        n: v for n, v in before.items() if n != "cursor.key"
    }


def test_processes_starting_together_on_a_fresh_directory_share_one_set(tmp_path: Path) -> None:
    """``serve --workers N`` without a secrets directory: N processes create the secrets at
    once. Each file is made exactly once and every process reads the same."""
    from concurrent.futures import ThreadPoolExecutor

    from gateway.adapters.stores.state_dir import init_secrets, load_secrets

    directory = tmp_path / "state"
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: init_secrets(directory), range(8)))
    assert sorted(name for names in made for name in names) == sorted(SECRET_FILES)
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".")], "temp files"
    loaded = [load_secrets(directory, create=True) for _ in range(2)]
    assert loaded[0].cursor_secret == loaded[1].cursor_secret


def test_serve_refuses_to_start_without_the_shared_secrets(tmp_path: Path) -> None:
    """A replica never makes secrets of its own in a secrets directory: its tokens and
    cursors would be refused by every other replica."""
    secrets = tmp_path / "secrets"
    CliRunner().invoke(main, ["state", "init", str(secrets)])
    (secrets / "pseudonym.key").unlink()
    said = refused_start(
        "--secrets", str(secrets), "--state", str(tmp_path / "state"), "--contracts", str(tmp_path)
    )
    assert "missing pseudonym.key" in said
    assert "gateway state init" in said
    assert not (secrets / "pseudonym.key").exists()


def test_a_state_directory_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the directory should be")
    assert "the state directory cannot be written" in refused_start("--state", str(blocked))


def test_a_replica_serves_from_read_only_secrets_and_writes_only_its_state(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    tmp_path: Path,
    kafka_config: dict[str, str],
) -> None:
    """Tokens, cursors, pseudonyms and encrypted fields all work from a secrets directory the
    gateway only reads (a Kubernetes Secret); the data keys it makes go to the state
    directory, and two replicas with the same secrets honour each other's tokens."""
    secrets = tmp_path / "secrets"
    assert CliRunner().invoke(main, ["state", "init", str(secrets)]).exit_code == 0
    secrets.chmod(0o500)
    before = snapshot(secrets)
    (world.contracts_dir / "acme-globex-orders.yaml").unlink()
    world.add_contract("acme-globex-orders", "globex", fields=PROTECTED)
    orders = [order(n) for n in range(6)]
    one_per_batch = {"linger.ms": 0, "batch.num.messages": 1}
    records = [(o["order_id"], json.dumps(o).encode()) for o in orders]
    produce(kafka_config, world.topic, records, partition=0, producer_config=one_per_batch)

    state = tmp_path / "replica-state"
    public = "https://gateway.acme.example"  # both replicas behind one name
    one = serve(secrets_dir=secrets, state_dir=state, public_url=public)
    two = serve(secrets_dir=secrets, state_dir=state, public_url=public)
    assertion = client_assertion("globex", world.key("globex"), f"{public}/oauth/token")
    token = token_request(http, one, assertion).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    url = "/v1/contracts/acme-globex-orders/records"
    first = http.get(f"{one.url}{url}", headers=auth, params={"limit": "1"})
    assert first.status_code == 200, first.text
    assert [r["offset"] for r in first.json()["records"]] == [4]  # the contract's row filter
    assert first.json()["keys"], "an encrypted field's data key came with the records"
    after = http.get(f"{two.url}{url}", headers=auth, params={"cursor": first.json()["cursor"]})
    assert after.status_code == 200, "the other replica honours the token and the cursor"
    assert [r["offset"] for r in after.json()["records"]] == [5]
    assert snapshot(secrets) == before, "the secrets directory was written"
    assert [p.name for p in (state / "data-keys").iterdir()] == ["acme-globex-orders.jsonl"]
    line = (state / "data-keys" / "acme-globex-orders.jsonl").read_text().splitlines()[0]
    assert set(json.loads(line)) == {"kid", "created", "recipient_kid", "sealed"}
