"""Shared fixtures: a real Kafka-protocol broker, topics, signed contracts, a real HTTP server.

The broker is chosen by ``GATEWAY_TEST_KAFKA``: unset or ``tansu`` starts the embedded Tansu
broker; ``testcontainers`` starts Kafka in a container (needs a Docker engine); ``host:port``
uses an existing broker.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, settings

from gateway.adapters.http.app import create_app
from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.embedded import EmbeddedKafka, free_port
from gateway.adapters.kafka.producer import produce
from gateway.adapters.stores.signing import PRIVATE_SUFFIX, generate_keys, sign_file
from gateway.bootstrap import Gateway, build_gateway
from gateway.client import GatewayClient, client_assertion
from gateway.core.jose import parse_private_jwks, signing_key
from gateway.dev_identity import DevIdentityProvider
from gateway.server import GatewayServer
from gateway.settings import KafkaSettings, Settings
from tests.processes import Processes
from tests.redis_server import RedisServer
from tests.schema_registry import LocalSchemaRegistry

# Hypothesis's wall-clock checks (a 200 ms deadline per example, "input generation is slow")
# fail on a loaded machine, not on a wrong property: a property test fails on a counterexample.
settings.register_profile("gateway", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gateway")

#: How many times more cycles the fault tests run: 1 in `make test`, more in `make soak`.
SOAK = int(os.environ.get("GATEWAY_TEST_SOAK", "1"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the broker, directly or through a fixture, is marked ``kafka``:
    ``pytest -m 'not kafka'`` runs the rest without starting one."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    choice = os.environ.get("GATEWAY_TEST_KAFKA", "tansu")
    if choice == "tansu":
        with EmbeddedKafka() as broker:
            yield broker.bootstrap_servers
    elif choice == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield container.get_bootstrap_server()
    else:
        yield choice


@pytest.fixture(scope="session")
def kafka_config(kafka_bootstrap: str) -> dict[str, str]:
    return {"bootstrap.servers": kafka_bootstrap}


@pytest.fixture
def topic_factory(kafka_config: dict[str, str]) -> Callable[..., str]:
    def create(partitions: int = 1) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        create_topic(kafka_config, name, partitions)
        return name

    return create


def order(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "order_id": f"o-{n}",
        "amount": n * 1.5,
        "currency": "EUR",
        "customer": {"name": f"Name {n}", "email": f"c{n}@example.com", "country": "NL"},
        **extra,
    }


def produce_exact(
    kafka_config: dict[str, str], topic: str, records: list[tuple[str, bytes]]
) -> None:
    """``records`` in large batches (fast to produce and to read back), but the last one of
    each partition in a batch of its own: the test broker answers a partition's log end as its
    last batch's base offset + 1 (``../shared/TEST-BROKER.md``), so the end is then exact and
    a cursor at it is not refused as past it."""
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({**kafka_config}).list_topics(topic, timeout=10)
    partitions = len(metadata.topics[topic].partitions)
    cut = max(0, len(records) - partitions)
    produce(kafka_config, topic, records[:cut])
    for partition, record in enumerate(records[cut:]):
        produce(kafka_config, topic, [record], partition=partition)


@pytest.fixture
def produce_orders(kafka_config: dict[str, str]) -> Callable[..., list[dict[str, Any]]]:
    """Produce ``count`` orders (one record per batch: the test broker's end offsets stay exact)."""

    def run(
        topic: str, count: int, start: int = 0, partition: int | None = None
    ) -> list[dict[str, Any]]:
        orders = [order(n) for n in range(start, start + count)]
        produce(
            kafka_config,
            topic,
            [(o["order_id"], json.dumps(o).encode()) for o in orders],
            partition=partition,
            producer_config={"linger.ms": 0, "batch.num.messages": 1},
        )
        return orders

    return run


CONTRACT_FIELDS = """\
fields:
  order_id: clear
  amount: clear
  customer.country: clear
"""


@dataclass
class World:
    """Organisations with keys, a product on ``topic``, and contracts signed by both parties."""

    root: Path
    topic: str
    private: dict[str, Path] = field(default_factory=dict)

    @property
    def contracts_dir(self) -> Path:
        return self.root / "contracts"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    def key(self, org: str) -> Any:
        return signing_key(
            parse_private_jwks(json.loads(self.private[org].read_text()), source=org)
        )

    def add_org(self, org: str) -> None:
        generate_keys(org, self.keys_dir, self.root / "private")
        self.private[org] = self.root / "private" / f"{org}{PRIVATE_SUFFIX}"

    def add_contract(
        self,
        contract_id: str,
        consumer: str,
        *,
        provider: str = "acme",
        fields: str = CONTRACT_FIELDS,
        valid_from: str = "2026-01-01T00:00:00Z",
        valid_until: str = "2099-12-31T23:59:59Z",
        signers: tuple[str, ...] | None = None,
        extra: str = "",
        version: int = 1,
        supersedes: str | None = None,
    ) -> Path:
        name = contract_id if version == 1 else f"{contract_id}.v{version}"
        path = self.contracts_dir / f"{name}.yaml"
        if supersedes:
            extra += f"supersedes: {supersedes}\n"
        path.write_text(
            f"contract: {contract_id}\nversion: {version}\n"
            f"provider: {provider}\nconsumer: {consumer}\n"
            f"product: orders\npurpose: Testing\nvalid_from: {valid_from}\n"
            f"valid_until: {valid_until}\n{fields}{extra}signatures: []\n"
        )
        for org in signers if signers is not None else (provider, consumer):
            sign_file(path, self.private[org], org)
        return path


@pytest.fixture
def world(tmp_path: Path, topic_factory: Callable[..., str]) -> World:
    w = World(tmp_path, topic_factory(2))
    for org in ("acme", "globex", "initech"):
        w.add_org(org)
    (w.contracts_dir / "products").mkdir(parents=True)
    (w.contracts_dir / "products" / "orders.yaml").write_text(
        f"product: orders\nowner: acme\nteam: orders-team\ntopic: {w.topic}\ndescription: Orders\n"
    )
    w.add_contract("acme-globex-orders", "globex")
    w.add_contract("acme-initech-orders", "initech")
    return w


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    world: World
    server: GatewayServer | None = None
    thread: threading.Thread | None = None

    def pull_records(
        self, http: httpx.Client, count: int, cursor: str | None = None
    ) -> list[dict[str, Any]]:
        """Pull ``count`` records as globex (from ``cursor``), page after page: a page holds
        what had arrived."""
        headers = {"Authorization": f"Bearer {self.token('globex')}"}
        records: list[dict[str, Any]] = []
        params = {"wait": "5", **({"cursor": cursor} if cursor else {})}
        contract = "acme-globex-orders"
        while len(records) < count:
            url = f"{self.url}/v1/contracts/{contract}/records"
            body = http.get(url, headers=headers, params=params).json()
            assert body["records"], f"{len(records)} of {count} records arrived"
            records += body["records"]
            params = {"wait": "5", "cursor": body["cursor"]}
        return records

    def stop(self) -> None:
        """Shut the server down as a signal would, and wait until it has."""
        assert self.server is not None
        assert self.thread is not None
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "the gateway did not stop"

    def client(self, org: str) -> GatewayClient:
        return GatewayClient(self.url, org=org, key=self.world.key(org))

    def token(self, org: str) -> str:
        with self.client(org) as client:
            return client.fetch_token()

    def assertion(self, org: str) -> str:
        return client_assertion(org, self.world.key(org), f"{self.url}/oauth/token")


@pytest.fixture
def serve(world: World, kafka_bootstrap: str) -> Iterator[Callable[..., RunningGateway]]:
    """Start the gateway with uvicorn on a free loopback port (real sockets)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(*, ready: bool = True, **overrides: Any) -> RunningGateway:
        port = free_port()
        options: dict[str, Any] = {
            "contracts_dir": world.contracts_dir,
            "keys_dir": world.keys_dir,
            "state_dir": world.root / "state",
            "port": port,
            "org": "acme",
            "kafka": KafkaSettings(bootstrap_servers=kafka_bootstrap),
            "ledger_topic": f"ledger-{uuid.uuid4().hex[:8]}",
            "startup_wait_seconds": 15 if ready else 0,
        }
        settings = Settings(**{**options, **overrides})
        gateway = build_gateway(settings)
        server = GatewayServer(
            uvicorn.Config(create_app(gateway), host="127.0.0.1", port=port, log_config=None),
            gateway,
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started or (ready and gateway.ledger.problem() is not None):
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.02)
        servers.append((server, thread))
        return RunningGateway(f"http://127.0.0.1:{port}", gateway, world, server, thread)

    yield start
    for server, _ in servers:
        server.should_exit = True
    for _, thread in servers:
        thread.join(timeout=20)
    stuck = [t.name for _, t in servers if t.is_alive()]
    assert not stuck, f"the gateway's server threads did not stop: {stuck}"


@pytest.fixture
def identity_provider() -> Iterator[DevIdentityProvider]:
    """The company's OpenID Connect provider, on loopback."""
    issuer = DevIdentityProvider()
    try:
        yield issuer
    finally:
        issuer.close()


@pytest.fixture
def schema_registry() -> Iterator[LocalSchemaRegistry]:
    """A Schema Registry (its REST API) on loopback."""
    registry = LocalSchemaRegistry()
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Subprocesses of one test: whatever is still running at teardown is stopped and reaped."""
    owner = Processes()
    try:
        yield owner
    finally:
        owner.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(20.0)) as client:
        yield client


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()
