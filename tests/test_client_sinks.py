"""The partner client's sinks under crashes: producer → gateway → client → partner's own Kafka."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from gateway.adapters.kafka.admin import create_topic, produce
from gateway.adapters.kafka.embedded import EmbeddedKafka
from tests.conftest import RunningGateway, World
from tests.test_cli import consume_command
from tests.test_protection import EMAIL, PROTECTED, order

CHECKPOINT_EVERY = 25
KILLS = 20


@pytest.fixture(scope="module")
def partner_kafka() -> Iterator[str]:
    """The partner's own Kafka cluster: a second broker."""
    with EmbeddedKafka() as broker:
        yield broker.bootstrap_servers


def read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in (0, 1)])
    messages: list[Any] = []
    idle_since = time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
        messages.extend(batch)
        if batch:
            idle_since = time.monotonic()
        elif len(messages) >= expected and time.monotonic() - idle_since > 1:
            break
    consumer.close()
    return messages


def positions(messages: list[Any]) -> list[tuple[int, int]]:
    def header(m: Any, name: str) -> int:
        return int(dict(m.headers())[name])

    return [(header(m, "gateway-partition"), header(m, "gateway-offset")) for m in messages]


def test_killing_the_client_20_times_loses_nothing(
    serve: Callable[..., RunningGateway],
    world: World,
    kafka_config: dict[str, str],
    partner_kafka: str,
    tmp_path: Path,
) -> None:
    (world.contracts_dir / "acme-globex-orders.yaml").unlink()
    world.add_contract("acme-globex-orders", "globex", fields=PROTECTED)
    orders = [order(n) for n in range(4, 1504)]  # all pass the contract's filter (amount > 3)
    produce(
        kafka_config,
        world.topic,
        [(o["order_id"], json.dumps(o).encode()) for o in orders],
        producer_config={"linger.ms": 20},
    )
    gw = serve()
    create_topic({"bootstrap.servers": partner_kafka}, "globex.orders", 2)
    command = consume_command(
        world,
        gw.url,
        tmp_path / "cursor",
        "--to-kafka",
        partner_kafka,
        "--topic",
        "globex.orders",
        "--checkpoint-every",
        str(CHECKPOINT_EVERY),
    )
    rng = random.Random(4)
    for _ in range(KILLS):
        client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 2.0))
        client.send_signal(signal.SIGKILL)
        client.wait()
    assert (tmp_path / "cursor").exists(), "the client made progress between kills"

    final = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(1)
        if len(set(positions(read_all(partner_kafka, "globex.orders", 0)))) >= len(orders):
            break
    final.send_signal(signal.SIGINT)
    _, errors = final.communicate(timeout=30)
    assert b"Traceback" not in errors, errors.decode()

    messages = read_all(partner_kafka, "globex.orders", len(orders))
    seen = positions(messages)
    assert len(set(seen)) == len(orders), "every record reached the partner's topic"
    duplicates = sum(n - 1 for n in Counter(seen).values())
    assert duplicates <= KILLS * CHECKPOINT_EVERY, f"{duplicates} duplicates"
    by_key = {m.key().decode(): json.loads(m.value()) for m in messages}
    assert by_key["o-5"]["customer"]["email"] == EMAIL, "decrypted and verified by the client"
    assert by_key["o-5"]["card"] == "************1111"
