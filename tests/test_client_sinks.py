"""The partner client's sinks under crashes: producer → gateway → client → partner's own Kafka."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.embedded import EmbeddedKafka
from tests.conftest import SOAK, RunningGateway, World, produce_exact
from tests.processes import Processes
from tests.test_cli import consume_command
from tests.test_protection import EMAIL, PROTECTED, order

CHECKPOINT_EVERY = 25
KILLS = 20 * SOAK
INTERRUPTS = 20 * SOAK
pytestmark = pytest.mark.soak


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


def protected_orders(
    world: World, kafka_config: dict[str, str], partner_kafka: str
) -> tuple[list[dict[str, Any]], str]:
    """1,500 orders under a contract that protects fields, and a fresh topic in the partner's
    Kafka (the partner broker outlives one test)."""
    (world.contracts_dir / "acme-globex-orders.yaml").unlink()
    world.add_contract("acme-globex-orders", "globex", fields=PROTECTED)
    orders = [order(n) for n in range(4, 1504)]  # all pass the contract's filter (amount > 3)
    produce_exact(
        kafka_config, world.topic, [(o["order_id"], json.dumps(o).encode()) for o in orders]
    )
    topic = f"globex.orders.{uuid.uuid4().hex[:8]}"
    create_topic({"bootstrap.servers": partner_kafka}, topic, 2)
    return orders, topic


def to_kafka(world: World, url: str, checkpoint: Path, partner_kafka: str, topic: str) -> list[str]:
    """``gateway consume`` into the partner's own Kafka topic."""
    command = consume_command(world, url, checkpoint, "--to-kafka", partner_kafka, "--topic", topic)
    return [*command, "--checkpoint-every", str(CHECKPOINT_EVERY)]


def test_killing_the_client_20_times_loses_nothing(
    serve: Callable[..., RunningGateway],
    processes: Processes,
    world: World,
    kafka_config: dict[str, str],
    partner_kafka: str,
    tmp_path: Path,
) -> None:
    orders, topic = protected_orders(world, kafka_config, partner_kafka)
    gw = serve()
    command = to_kafka(world, gw.url, tmp_path / "cursor", partner_kafka, topic)
    rng = random.Random(4)
    for _ in range(KILLS):
        client = processes.start(command, stop_signal=signal.SIGKILL, stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 2.0))
        processes.stop(client)
    assert (tmp_path / "cursor").exists(), "the client made progress between kills"

    final = processes.start(
        command, stop_signal=signal.SIGINT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(1)
        if len(set(positions(read_all(partner_kafka, topic, 0)))) >= len(orders):
            break
    errors = processes.stop(final)
    assert b"Traceback" not in errors, errors.decode()

    messages = read_all(partner_kafka, topic, len(orders))
    seen = positions(messages)
    assert len(set(seen)) == len(orders), "every record reached the partner's topic"
    duplicates = sum(n - 1 for n in Counter(seen).values())
    assert duplicates <= KILLS * CHECKPOINT_EVERY, f"{duplicates} duplicates"
    by_key = {m.key().decode(): json.loads(m.value()) for m in messages}
    assert by_key["o-5"]["customer"]["email"] == EMAIL, "decrypted and verified by the client"
    assert by_key["o-5"]["card"] == "************1111"


def test_interrupting_the_client_mid_stream_stops_it_cleanly(
    serve: Callable[..., RunningGateway],
    processes: Processes,
    world: World,
    kafka_config: dict[str, str],
    partner_kafka: str,
    tmp_path: Path,
) -> None:
    """Ctrl-C or SIGTERM at any moment: the client exits promptly, quietly and consistently.

    A signal that lands inside a librdkafka call (the sink's produce or flush) used to break
    confluent-kafka's call state: ``SystemError: flush returned NULL`` or a flush that waited
    out its whole timeout, which looked like a hung ``gateway consume``.
    """
    _, topic = protected_orders(world, kafka_config, partner_kafka)
    gw = serve()
    codec = gw.gateway.streams._codec
    rng = random.Random(7)
    for run in range(INTERRUPTS):
        checkpoint = tmp_path / f"cursor-{run}"  # from the start each time: always mid-stream
        run_topic = f"{topic}-{run}"  # this run's records alone
        create_topic({"bootstrap.servers": partner_kafka}, run_topic, 2)
        command = to_kafka(world, gw.url, checkpoint, partner_kafka, run_topic)
        sig = signal.SIGINT if run % 2 else signal.SIGTERM
        client = processes.start(command, stop_signal=sig, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not checkpoint.exists():  # it is streaming: the first records are committed
            assert client.poll() is None, processes.stop(client).decode()
            assert time.monotonic() < deadline, "the client wrote no checkpoint"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        errors = processes.stop(client, timeout=15).decode()
        assert "Traceback" not in errors, errors
        assert client.returncode == 0, errors
        if run % 5 == 0:  # the checkpoint never runs ahead of what the partner's topic holds
            saved = codec.decode("acme-globex-orders", checkpoint.read_text().strip())
            claimed = sum(max(after, 0) for after in saved.values())
            # (Wait for as many as the checkpoint claims: a first fetch may take a while.)
            held = set(positions(read_all(partner_kafka, run_topic, claimed)))
            for partition, after in saved.items():
                missing = [o for o in range(max(after, 0)) if (partition, o) not in held]
                assert not missing, f"checkpointed past records the sink lacks: {missing[:5]}"
