"""The command line as operators and partners use it, including real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from gateway.adapters.kafka.embedded import free_port, wait_for_port
from gateway.adapters.stores.signing import generate_keys
from gateway.cli import main
from tests.certificates import self_signed
from tests.conftest import World
from tests.processes import stop

GATEWAY = [sys.executable, "-m", "gateway"]
REPO = Path(__file__).resolve().parent.parent


def test_keys_generate_writes_private_0600_and_public_only(tmp_path: Path) -> None:
    args = ["keys", "generate", "globex", "--keys-dir", str(tmp_path / "keys")]
    args += ["--private-dir", str(tmp_path / "private")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    private = tmp_path / "private" / "globex.private.jwks.json"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    public = json.loads((tmp_path / "keys" / "globex.jwks.json").read_text())
    assert {(k["kty"], k["crv"], k["use"]) for k in public["keys"]} == {
        ("OKP", "Ed25519", "sig"),
        ("OKP", "X25519", "enc"),
    }
    assert all("d" not in k and k["kid"] for k in public["keys"])
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0
    assert "exists" in again.output


def test_contract_sign_and_verify(world: World) -> None:
    runner = CliRunner()
    path = world.add_contract("fresh", "globex", signers=())
    args = ["contract", "verify", str(path), "--keys-dir", str(world.keys_dir)]
    unsigned = runner.invoke(main, args)
    assert unsigned.exit_code == 1
    assert "signature_missing" in unsigned.output
    for org in ("acme", "globex"):
        signed = runner.invoke(
            main, ["contract", "sign", str(path), "--key", str(world.private[org])]
        )
        assert signed.exit_code == 0, signed.output
    ok = runner.invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith(f"OK {path} (fresh v1): active")
    path.write_text(path.read_text().replace("purpose: Testing", "purpose: Something else"))
    tampered = runner.invoke(main, args)
    assert tampered.exit_code == 1
    assert "signature_invalid" in tampered.output
    broken = world.contracts_dir / "broken.yaml"
    broken.write_text("contract: broken\nversion: one\n")
    both = runner.invoke(
        main, ["contract", "verify", str(world.contracts_dir), "--keys-dir", str(world.keys_dir)]
    )
    assert both.exit_code == 1
    assert "version: Input should be a valid integer" in both.output
    assert "OK " in both.output  # the good contracts are still reported good


def wait_ready(url: str, timeout: float = 20, **client: Any) -> None:
    """Until /healthz says ready (the ledger writes), as a readiness probe would."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5, **client) as http:
        while http.get(f"{url}/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)


@contextlib.contextmanager
def gateway_serve(
    world: World, bootstrap: str, *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[int, list[bytes]]]:
    """`gateway serve` as a subprocess; yields its port and (filled at exit) its output."""
    port = free_port()
    args = ["--contracts", str(world.contracts_dir), "--keys", str(world.keys_dir)]
    args += ["--state", str(world.root / "state"), "--bootstrap-servers", bootstrap]
    process = subprocess.Popen(
        [*GATEWAY, "serve", *args, "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    output: list[bytes] = []
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        yield port, output
    finally:
        output.append(stop(process, signal.SIGINT))
    assert b"Traceback" not in output[0], output[0].decode()


@pytest.fixture
def served(world: World, kafka_bootstrap: str) -> Iterator[str]:
    with gateway_serve(world, kafka_bootstrap, "--org", "acme") as (port, output):
        wait_ready(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}"
    assert b"serving plain HTTP" in output[0]


def consume_command(world: World, url: str, checkpoint: Path, *extra: str) -> list[str]:
    """`gateway consume` as globex on its contract, as a partner would run it."""
    key = str(world.private["globex"])
    args = ["--contract", "acme-globex-orders", "--key", key, "--gateway", url]
    return [*GATEWAY, "consume", *args, "--checkpoint", str(checkpoint), *extra]


def consume(world: World, url: str, checkpoint: Path, count: int) -> list[dict[str, Any]]:
    result = subprocess.run(
        consume_command(world, url, checkpoint, "--max-records", str(count)),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_serve_and_consume_resume_from_the_checkpoint(
    world: World, served: str, produce_orders: Callable[..., Any], tmp_path: Path
) -> None:
    orders = produce_orders(world.topic, 25)
    checkpoint = tmp_path / "globex.cursor"
    first = consume(world, served, checkpoint, 10)
    second = consume(world, served, checkpoint, 15)
    keys = [r["key"] for r in first + second]
    assert sorted(keys) == sorted(o["order_id"] for o in orders)
    assert checkpoint.read_text() == second[-1]["cursor"]
    assert all(set(r["value"]) == {"order_id", "amount", "customer"} for r in first + second)


def test_demo_runs_and_its_printed_commands_work(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen(
        [*GATEWAY, "demo", "--port", str(port), "--workdir", str(tmp_path / "demo")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    output = b""
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        wait_ready(f"http://127.0.0.1:{port}")
        key = tmp_path / "demo" / "private" / "globex.private.jwks.json"
        assert not (REPO / "keys" / "globex.jwks.json").exists(), "demo keys stay out of the repo"
        token = subprocess.run(
            [*GATEWAY, "token", "--key", str(key), "--gateway", f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        url = f"http://127.0.0.1:{port}/v1/contracts/acme-globex-orders/records"
        with httpx.Client(timeout=20) as http:
            body = http.get(
                url,
                headers={"Authorization": f"Bearer {token}"},
                params={"wait": "5", "limit": "3"},
            ).json()
        assert body["records"], body
        value = body["records"][0]["value"]
        assert set(value) == {"order_id", "amount", "currency", "customer", "payment"}
        assert set(value["customer"]) == {"country", "email", "name"}
        assert value["customer"]["country"] in ("NL", "DE", "BE"), "the row filter"
        assert value["customer"]["email"].count(".") == 4, "a compact JWE"
        assert value["payment"]["card"].startswith("************")
        consumed = subprocess.run(
            [*GATEWAY, "consume", "--contract", "acme-globex-orders", "--key", str(key),
             "--gateway", f"http://127.0.0.1:{port}", "--max-records", "2",
             "--checkpoint", str(tmp_path / "globex.cursor")],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        decrypted = json.loads(consumed.stdout.splitlines()[0])["value"]["customer"]["email"]
        assert decrypted.endswith("@example.com"), "consume decrypts with the partner's key"
        with httpx.Client(timeout=20) as http:
            home = http.get(f"http://127.0.0.1:{port}/")
        assert home.status_code == 200
        assert "/v1/catalog" in home.text
        assert "default-src 'none'" in home.headers["content-security-policy"]

        # The webshop team, with the token the demo's identity provider gave it.
        team = {"Authorization": f"Bearer {(tmp_path / 'demo' / 'webshop.token').read_text()}"}
        base = f"http://127.0.0.1:{port}/v1/products/orders"
        order = {"order_id": "o-x1", "amount": 12.5, "currency": "EUR", "customer": {}}
        with httpx.Client(timeout=20, headers=team) as http:
            published = http.post(f"{base}/records", json=[{"key": "o-x1", "value": order}])
            assert published.status_code == 200, published.text
            refused = http.post(f"{base}/records", json=[{"value": {"order_id": 7}}])
            assert refused.json()["code"] == "records_invalid"
            consumers = http.get(f"{base}/consumers").json()["consumers"]
            assert [c["partner"] for c in consumers] == ["globex"]
    finally:
        output = stop(demo, signal.SIGINT, timeout=30)
    text = output.decode()
    assert "gateway token --key" in text
    assert "Last-Event-ID" in text
    assert "TEAM_TOKEN=$(cat" in text
    password = text.split("(user legal, password ")[1].split(")")[0]
    assert password not in text.split("As legal")[0], "the legal password is not a client secret"
    assert "Traceback" not in text
    assert demo.returncode in (0, -signal.SIGINT, 130)


def test_demo_on_a_port_in_use_says_so_before_anything_else(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*GATEWAY, "demo", "--port", str(port), "--workdir", str(tmp_path / "demo")],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"Error: port {port} is in use: choose another with --port N (make demo PORT=N)"
    )
    assert result.stdout == ""


def test_serve_with_tls(world: World, kafka_bootstrap: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    with gateway_serve(world, kafka_bootstrap, *tls) as (port, output):
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trust, timeout=10) as http:
            meta = http.get(
                f"https://127.0.0.1:{port}/.well-known/oauth-authorization-server"
            ).json()
        assert meta["issuer"] == f"https://127.0.0.1:{port}"
    assert b"serving plain HTTP" not in output[0]


def test_contract_new_show_diff_history(world: World) -> None:
    from gateway.adapters.stores.signing import write_statement
    from gateway.core.documents import canonical_hash, load_yaml

    runner = CliRunner()
    product = world.contracts_dir / "products" / "orders.yaml"
    product.write_text(
        product.read_text()
        + "schema:\n  properties:\n    order_id: {type: string}\n    amount: {type: number}\n"
        + "    currency: {type: string}\n"
        + "    customer:\n      properties:\n        country: {type: string}\n"
    )
    made = runner.invoke(
        main, ["contract", "new", str(product), "--consumer", "initech", "--id", "drafted"]
    )
    assert made.exit_code == 0, made.output
    draft = world.contracts_dir / "drafted.yaml"
    assert load_yaml(draft.read_text(), source="d")["fields"] == {
        "order_id": "drop",
        "amount": "drop",
        "currency": "drop",
        "customer.country": "drop",
    }
    assert "# quotas:" in draft.read_text()  # offered, commented out

    with_quotas = world.add_contract(
        "acme-initech-orders", "initech", extra="quotas: {records_per_second: 50}\n"
    )
    shown = runner.invoke(main, ["contract", "show", str(with_quotas)])
    assert "quota records_per_second: 50.0" in shown.output

    v1 = world.contracts_dir / "acme-globex-orders.yaml"
    shown = runner.invoke(main, ["contract", "show", str(v1)])
    assert "acme shares 'orders' with globex" in shown.output
    assert shown.output.count("signed by ") == 2
    assert "time not stated" not in shown.output  # signing time is in the protected header

    v2 = world.add_contract(
        "acme-globex-orders",
        "globex",
        version=2,
        supersedes=canonical_hash(load_yaml(v1.read_text(), source="v1")),
        fields="fields:\n  order_id: clear\n  amount: clear\n  customer.country: clear\n"
        "  currency: clear\n",
    )
    diff = runner.invoke(main, ["contract", "diff", str(v1), str(v2)])
    assert diff.output.splitlines()[1:] == ["  + field currency: clear"]

    write_statement(
        "suspend",
        "acme-globex-orders",
        reason="audit",
        key_path=world.private["acme"],
        contracts_dir=world.contracts_dir,
        keys_dir=world.keys_dir,
    )
    history = runner.invoke(
        main,
        [
            "contract",
            "history",
            "acme-globex-orders",
            "--contracts-dir",
            str(world.contracts_dir),
            "--keys-dir",
            str(world.keys_dir),
        ],
    )
    assert history.exit_code == 0, history.output
    lines = history.output.splitlines()
    assert lines[0].startswith("acme-globex-orders: suspended")
    assert " * v2 " in history.output
    assert "   v1 " in history.output
    assert "suspend by acme: audit [accepted]" in history.output


def test_malformed_documents_name_line_and_field(world: World) -> None:
    bad = world.contracts_dir / "bad.yaml"
    bad.write_text(
        "contract: bad\nversion: 1\nprovider: acme\nconsumer: globex\nproduct: orders\n"
        "purpose: p\nvalid_from: 2026-01-01T00:00:00Z\nvalid_until: 2027-01-01T00:00:00Z\n"
        "fields:\n  order_id: clear\n  amount: publish\nsignatures: []\n"
    )
    result = CliRunner().invoke(
        main, ["contract", "verify", str(bad), "--keys-dir", str(world.keys_dir)]
    )
    assert result.exit_code == 1
    assert "line 11, fields.amount:" in result.output


#: A user mistake a command line is given, and a word the one line that explains it contains.
#: Each builds its arguments from the world (``{...}`` placeholders, see ``mistake_paths``).
MISTAKES: dict[str, tuple[list[str], str]] = {}
for _name, _word in (
    ("public", "public"),
    ("empty", "empty"),
    ("not_json", "not JSON"),
    ("directory", "directory"),
):
    _key = f"{{{_name}}}"
    MISTAKES[f"token-key-{_name}"] = (["token", "--key", _key, "--gateway", "{url}"], _word)
    MISTAKES[f"consume-key-{_name}"] = (
        ["consume", "--contract", "acme-globex-orders", "--key", _key, "--gateway", "{url}"],
        _word,
    )
    MISTAKES[f"sign-key-{_name}"] = (["contract", "sign", "{contract}", "--key", _key], _word)
    for _kind in ("suspend", "resume", "revoke"):
        MISTAKES[f"{_kind}-key-{_name}"] = (
            [
                *("contract", _kind, "acme-globex-orders", "--reason", "r", "--key", _key),
                *("--contracts-dir", "{contracts}", "--keys-dir", "{keys}"),
            ],
            _word,
        )
for _name, _url, _word in (
    ("no-scheme", "localhost:8080", "scheme"),
    ("ftp", "ftp://x", "ftp://"),
    ("unreachable", "{url}", "unreachable"),
):
    MISTAKES[f"token-gateway-{_name}"] = (
        ["token", "--key", "{private}", "--gateway", _url],
        _word,
    )
    MISTAKES[f"consume-gateway-{_name}"] = (
        [
            *("consume", "--contract", "acme-globex-orders", "--key", "{private}"),
            *("--gateway", _url, "--deadline", "1", "--checkpoint", "{cursor}"),
        ],
        _word,
    )
for _name, _word in (("missing", "does not exist"), ("empty-file", "empty")):
    _file = "{nowhere}" if _name == "missing" else "{empty_contract}"
    MISTAKES[f"sign-contract-{_name}"] = (["contract", "sign", _file, "--key", "{private}"], _word)
    MISTAKES[f"verify-contract-{_name}"] = (
        ["contract", "verify", _file, "--keys-dir", "{keys}"],
        _word,
    )
    MISTAKES[f"show-contract-{_name}"] = (["contract", "show", _file], _word)


def mistake_paths(world: World) -> dict[str, str]:
    root = world.root / "mistakes"
    root.mkdir()
    (root / "empty.json").write_text("")
    (root / "notes.txt").write_text("these are not keys\n")
    (root / "a-directory").mkdir()
    (root / "empty.yaml").write_text("")
    contract = world.add_contract("to-sign", "globex", signers=())
    return {
        "public": str(world.keys_dir / "globex.jwks.json"),
        "empty": str(root / "empty.json"),
        "not_json": str(root / "notes.txt"),
        "directory": str(root / "a-directory"),
        "private": str(world.private["globex"]),
        "url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "contract": str(contract),
        "contracts": str(world.contracts_dir),
        "keys": str(world.keys_dir),
        "cursor": str(root / "globex.cursor"),
        "nowhere": str(root / "no-such-contract.yaml"),
        "empty_contract": str(root / "empty.yaml"),
    }


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_user_mistake_is_one_clear_line_and_exit_2(world: World, mistake: str) -> None:
    template, word = MISTAKES[mistake]
    paths = mistake_paths(world)
    args = [arg.format(**paths) for arg in template]
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    assert word in errors[0], result.output


def test_consume_retries_an_unreachable_gateway_until_its_deadline(
    world: World, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    command = consume_command(world, url, tmp_path / "globex.cursor", "--deadline", "3")
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert elapsed < 10, f"gave up after {elapsed:.1f} s"
    retries = [line for line in result.stderr.splitlines() if "retrying in" in line]
    assert retries, result.stderr
    assert "unreachable" in retries[0]
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    assert "unreachable" in last, result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "globex.cursor").exists()


def test_consume_deadline_is_in_its_help() -> None:
    result = CliRunner().invoke(main, ["consume", "--help"])
    assert "--deadline" in result.output


def test_consume_with_a_key_the_gateway_refuses_stops_at_once(
    world: World, served: str, tmp_path: Path
) -> None:
    """The token endpoint's ``invalid_client`` (400, or 401 which was retried silently for
    ever) is final: one line, exit 1, no retry."""
    elsewhere = tmp_path / "elsewhere"  # not the keys the gateway reads (world.keys_dir)
    stranger = generate_keys("umbrella", elsewhere / "keys", elsewhere / "private")
    for key, org in ((stranger, "umbrella"), (world.private["initech"], "globex")):
        args = ["--contract", "acme-globex-orders", "--key", str(key), "--org", org]
        result = subprocess.run(
            [*GATEWAY, "consume", *args, "--gateway", served, "--checkpoint", str(tmp_path / "c")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1, result.stderr
        assert "invalid_client" in result.stderr.splitlines()[-1], result.stderr
        assert "Traceback" not in result.stderr
        assert "retrying" not in result.stderr


def test_the_client_s_retries_end_where_no_retry_helps(caplog: pytest.LogCaptureFixture) -> None:
    """5xx answers are retried, each attempt said, until ``give_up_after``; the last answer is
    then raised. A 401 ``invalid_client`` from the token endpoint is raised at once."""
    from gateway.client import GatewayClient, GatewayClientError
    from gateway.core.jose import generate_org_keys, signing_key

    base = "http://gateway.test"
    answers: dict[str, httpx.Response] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        return answers[request.url.path]

    meta = {"token_endpoint": f"{base}/oauth/token"}
    key = signing_key(generate_org_keys())
    busy = {"code": "broker_unavailable", "detail": "Kafka cannot be reached"}
    answers["/.well-known/oauth-authorization-server"] = httpx.Response(503, json=busy)
    http = httpx.Client(transport=httpx.MockTransport(handler))
    with GatewayClient(base, org="globex", key=key, http=http) as client:
        started = time.monotonic()
        with pytest.raises(GatewayClientError) as unavailable:
            next(client.records("c", cursor=None, give_up_after=1.0))
        assert 1.0 <= time.monotonic() - started < 5
        assert unavailable.value.status == 503
        said = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
        assert said, "every retry is said"
        assert said[0].startswith("the gateway answered 503 broker_unavailable")

        answers["/.well-known/oauth-authorization-server"] = httpx.Response(200, json=meta)
        refused = {"code": "invalid_client", "detail": "The client assertion does not verify."}
        answers["/oauth/token"] = httpx.Response(401, json=refused)
        started = time.monotonic()
        with pytest.raises(GatewayClientError) as final:
            next(client.records("c", cursor=None))
        assert final.value.status == 401
        assert time.monotonic() - started < 0.5, "not retried"


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["ledger", "verify", "--file", "{garbage}"], "not an exported ledger"),
        (
            ["ledger", "report", "--contract", "c", "--file", "{empty}", "--from", "2026-01-01"],
            "UTC offset",
        ),
        (
            ["ledger", "verify", "--bootstrap-servers", "127.0.0.1:{port}", "--topic", "t"],
            "Kafka could not",
        ),
    ],
    ids=["not-ndjson", "naive-time", "no-broker"],
)
def test_ledger_commands_answer_mistakes_in_one_line(
    tmp_path: Path, args: list[str], word: str
) -> None:
    (tmp_path / "garbage").write_text("not json\n")
    (tmp_path / "empty").write_text("")
    values = {"garbage": tmp_path / "garbage", "empty": tmp_path / "empty", "port": free_port()}
    result = CliRunner().invoke(main, [a.format(**values) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (1, 2)
    assert word in result.output
    assert "Traceback" not in result.output
