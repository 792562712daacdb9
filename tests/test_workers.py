"""``gateway serve --workers N``: N processes on one port, each a replica of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import httpx

from gateway.adapters.kafka.embedded import free_port, wait_for_port
from gateway.adapters.kafka.ledger import read_entries
from gateway.client import GatewayClient
from tests.conftest import World
from tests.processes import Processes
from tests.redis_server import RedisServer
from tests.sse import open_raw_stream
from tests.test_cli import GATEWAY, gateway_serve, wait_ready


def test_two_workers_share_the_port_and_each_records_as_a_replica_of_its_own(
    world: World,
    kafka_bootstrap: str,
    kafka_config: dict[str, str],
    redis_server: RedisServer,
) -> None:
    ledger = f"ledger-{uuid.uuid4().hex[:8]}"
    env = {
        "GATEWAY_REDIS__URL": redis_server.url,
        "GATEWAY_LEDGER_TOPIC": ledger,
        "GATEWAY_REPLICA": "edge",
        "GATEWAY_QUOTAS__TOKEN_BURST": "100",
    }
    with gateway_serve(world, kafka_bootstrap, "--org", "acme", "--workers", "2", env=env) as (
        port,
        output,
    ):
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        for _ in range(24):  # new connections: the kernel gives each to one worker
            with (
                httpx.Client() as http,
                GatewayClient(url, org="globex", key=world.key("globex"), http=http) as client,
            ):
                client.fetch_token()
    assert b"2 workers on port" in output[0]
    issued = [
        e for e in read_entries(kafka_config, ledger, idle=0.5) if e["kind"] == "token_issued"
    ]
    replicas = {e["chain"].split("/")[0] for e in issued}
    assert len(issued) == 24
    assert replicas == {"edge-0", "edge-1"}, "both workers served, each on its own chain"


def test_workers_without_redis_are_refused_in_one_line(world: World, kafka_bootstrap: str) -> None:
    """Each would enforce every quota in full, and accept an assertion another has seen."""
    done = subprocess.run(
        [*GATEWAY, "serve", "--workers", "2", "--bootstrap-servers", kafka_bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=world.root,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: --workers shares quotas and replay protection through Redis, as replicas do: "
        "set GATEWAY_REDIS__URL"
    ]


def test_sigterm_ends_every_worker_s_streams_with_shutdown_and_exits_143(
    world: World, kafka_bootstrap: str, redis_server: RedisServer, processes: Processes
) -> None:
    """A rollout: each open stream hears ``event: end`` reason ``shutdown`` (its partner
    resumes on another replica), and the parent exits as a process stopped by SIGTERM does."""
    port = free_port()
    args = ["--contracts", str(world.contracts_dir), "--keys", str(world.keys_dir)]
    args += ["--state", str(world.root / "state"), "--bootstrap-servers", kafka_bootstrap]
    server = processes.start(
        [*GATEWAY, "serve", *args, "--org", "acme", "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GATEWAY_REDIS__URL": redis_server.url},
    )
    wait_for_port("127.0.0.1", port, timeout=20)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    with GatewayClient(url, org="globex", key=world.key("globex")) as client:
        token = client.fetch_token()
    streams = []
    for _ in range(6):  # new connections: the kernel gives them to both workers
        sock = open_raw_stream(port, token, "?from=latest")
        sock.settimeout(20)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        streams.append(sock)
    server.send_signal(signal.SIGTERM)
    for sock in streams:
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        sock.close()
        assert b'event: end\ndata: {"reason":"shutdown"' in received, received
    output = processes.stop(server)
    assert server.returncode == 128 + signal.SIGTERM
    assert b"Traceback" not in output, output.decode()
