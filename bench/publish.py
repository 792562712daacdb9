"""Benchmark of publishing over HTTP against a raw producer, in one run on one broker.

(A) a raw confluent-kafka producer (idempotent, ``acks=all``, the gateway's linger) writing
    the records;
(B) the gateway: ``POST /v1/products/{p}/records`` with JSON arrays of ``--batch`` records,
    each value validated against the product's schema, from ``--clients`` concurrent clients
    in a process of their own (as a team's service is), over keep-alive connections;
(C) the same with an ``Idempotency-Key`` on every request.

Prints records/s for each and the ratios B/A and C/B, with their targets.
Usage: python -m bench.publish [--records N] [--batch B] [--clients C]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from confluent_kafka import Producer

from bench.stream import gateway_in_thread
from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.embedded import EmbeddedKafka, free_port
from gateway.dev_identity import AUDIENCE, DevIdentityProvider
from gateway.settings import KafkaSettings, OidcSettings, PublishSettings, Settings

PRODUCT = """\
product: orders
owner: acme
team: webshop
topic: bench
description: Bench
version: 1.0.0
schema:
  type: object
  required: [order_id, amount, currency, customer]
  properties:
    order_id: {type: string}
    amount: {type: number, minimum: 0}
    currency: {type: string, enum: [EUR, USD]}
    placed_at: {type: string}
    customer:
      type: object
      required: [country]
      properties:
        name: {type: string}
        email: {type: string}
        country: {type: string, minLength: 2, maxLength: 2}
"""

TARGET_B_OVER_A = 0.25
TARGET_C_OVER_B = 0.9


def order(n: int) -> dict[str, object]:
    return {
        "order_id": f"o-{n}",
        "amount": round(n * 1.37 % 500, 2),
        "currency": "EUR",
        "placed_at": "2026-11-23T12:00:00Z",
        "customer": {"name": f"Customer {n}", "email": f"c{n}@example.com", "country": "NL"},
    }


def raw_producer(bootstrap: str, total: int) -> float:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    values = [(f"o-{n}", json.dumps(order(n)).encode()) for n in range(total)]
    started = time.perf_counter()
    for key, value in values:
        while True:
            try:
                producer.produce("bench", value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    return total / (time.perf_counter() - started)


def post_all(url: str, token: str, total: int, batch: int, clients: int, keyed: bool) -> float:
    """In a process of its own: ``total`` records in batches, from ``clients`` threads."""
    bodies = [
        json.dumps(
            [{"key": f"o-{n}", "value": order(n)} for n in range(start, min(total, start + batch))]
        ).encode()
        for start in range(0, total, batch)
    ]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    local = threading.local()

    def send(body: bytes) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(timeout=60, headers=headers)
        extra = {"Idempotency-Key": uuid.uuid4().hex} if keyed else {}
        response = local.http.post(url, content=body, headers=extra)
        assert response.status_code == 200, response.text[:300]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, bodies))
    return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    total = args.records
    print(f"{total} records of ~{len(json.dumps(order(1)))} bytes; batches of {args.batch}")
    with (
        EmbeddedKafka() as broker,
        tempfile.TemporaryDirectory() as tmp,
        DevIdentityProvider() as identity,
    ):
        config = {"bootstrap.servers": broker.bootstrap_servers}
        create_topic(config, "bench", 4)
        rate_a = raw_producer(broker.bootstrap_servers, total)
        print(f"(A) raw producer:                    {rate_a:>10,.0f} records/s")

        world = Path(tmp)
        (world / "contracts" / "products").mkdir(parents=True)
        (world / "keys").mkdir()
        (world / "contracts" / "products" / "orders.yaml").write_text(PRODUCT)
        settings = Settings(
            contracts_dir=world / "contracts",
            keys_dir=world / "keys",
            state_dir=world / "state",
            port=free_port(),
            org="acme",
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
            oidc=OidcSettings(issuer=identity.url, audience=AUDIENCE),
            publish=PublishSettings(team_records_per_second=10_000_000, max_records=10_000),
        )
        token = identity.token("bench", ("webshop",), lifetime=3600)
        url = f"{settings.issuer()}/v1/products/orders/records"
        spawn = multiprocessing.get_context("spawn")
        with gateway_in_thread(settings), spawn.Pool(1) as pool:
            pool.apply(post_all, (url, token, 2 * args.batch, args.batch, 1, False))  # warm up
            rate_b = pool.apply(post_all, (url, token, total, args.batch, args.clients, False))
            rate_c = pool.apply(post_all, (url, token, total, args.batch, args.clients, True))
        print(f"(B) gateway, validated:              {rate_b:>10,.0f} records/s")
        print(f"(C) gateway, with Idempotency-Key:   {rate_c:>10,.0f} records/s")
        b_a, c_b = rate_b / rate_a, rate_c / rate_b
        print(f"B/A = {b_a:.2f}  (target >= {TARGET_B_OVER_A}: {held(b_a >= TARGET_B_OVER_A)})")
        print(f"C/B = {c_b:.2f}  (target >= {TARGET_C_OVER_B}: {held(c_b >= TARGET_C_OVER_B)})")


def held(ok: bool) -> str:
    return "held" if ok else "NOT held"


if __name__ == "__main__":
    main()
