"""Two gateway processes share one quota through a real Redis, and keep enforcing a per-replica
share (quota / replicas) when Redis goes away, saying so in logs and metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx

from gateway.adapters.kafka.embedded import free_port
from gateway.client import GatewayClient
from tests.conftest import World
from tests.redis_server import RedisServer
from tests.sse import LiveStream
from tests.test_cli import gateway_serve, wait_ready
from tests.test_quotas import CONTRACT, backlog, window, with_quotas


def replicas(
    world: World, bootstrap: str, redis: RedisServer, stack: ExitStack
) -> Iterator[tuple[str, int, list[bytes]]]:
    for name in ("a", "b"):
        metrics_port = free_port()
        env = {
            "GATEWAY_REDIS__URL": redis.url,
            "GATEWAY_QUOTAS__REPLICAS": "2",
            "GATEWAY_METRICS_PORT": str(metrics_port),
            "GATEWAY_REPLICA": f"replica-{name}",
        }
        port, output = stack.enter_context(
            gateway_serve(world, bootstrap, "--org", "acme", env=env)
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url, metrics_port, output


def degraded(http: httpx.Client, metrics_port: int) -> float:
    text = http.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    (line,) = [x for x in text.splitlines() if x.startswith("gateway_quota_store_degraded ")]
    return float(line.split()[1])


def combined_rate(streams: list[LiveStream], start: float, seconds: float) -> float:
    stamps = [(t, 1) for s in streams for t, e in s.events if e.event == "record"]
    return window(stamps, start, seconds) / seconds


def test_two_replicas_share_one_quota_and_degrade_to_a_share_without_redis(
    world: World,
    kafka_bootstrap: str,
    kafka_config: dict[str, str],
    redis_server: RedisServer,
    http: httpx.Client,
) -> None:
    with_quotas(world, "{records_per_second: 100, concurrent_streams: 2}")
    backlog(kafka_config, world.topic, 4000)
    with ExitStack() as stack:
        (a, a_metrics, a_output), (b, b_metrics, _) = list(
            replicas(world, kafka_bootstrap, redis_server, stack)
        )
        tokens = {}
        for url in (a, b):  # each replica is its own issuer here (no shared public URL)
            with GatewayClient(url, org="globex", key=world.key("globex")) as client:
                tokens[url] = client.fetch_token()
        streams = [LiveStream(http, url, tokens[url]) for url in (a, b)]

        # One concurrency quota over both replicas: a third stream is refused at either.
        for url in (a, b):
            headers = {"Authorization": f"Bearer {tokens[url]}"}
            refused = http.get(f"{url}/v1/contracts/{CONTRACT}/stream", headers=headers)
            assert refused.status_code == 429
            assert refused.json()["code"] == "too_many_streams"

        # One rate over both replicas: 100 records/s together, not 100 each.
        time.sleep(5.0)
        shared = combined_rate(streams, time.monotonic() - 4.0, 4.0)
        assert abs(shared - 100) <= 10, f"{shared:.0f} records/s over two replicas"
        assert degraded(http, a_metrics) == degraded(http, b_metrics) == 0

        # Redis goes away: the streams go on, each replica enforcing its share (100 / 2).
        redis_server.stop()
        stopped = time.monotonic()
        time.sleep(5.0)
        assert all(not [e for _, e in s.events if e.event == "end"] for s in streams)
        alone = combined_rate(streams, stopped + 1.0, 4.0)
        assert abs(alone - 100) <= 10, f"{alone:.0f} records/s without Redis"
        assert degraded(http, a_metrics) == degraded(http, b_metrics) == 1
        # Each replica allows concurrent_streams / 2 = 1 stream of its own; both have one.
        headers = {"Authorization": f"Bearer {tokens[a]}"}
        refused = http.get(f"{a}/v1/contracts/{CONTRACT}/stream", headers=headers)
        assert refused.status_code == 429

        # Redis comes back (empty): the replicas share it again.
        redis_server.start()
        deadline = time.monotonic() + 10
        while degraded(http, a_metrics) or degraded(http, b_metrics):
            assert time.monotonic() < deadline, "the replicas did not go back to Redis"
            time.sleep(0.2)
        for stream in streams:
            stream.close()
    log = a_output[0].decode()
    assert "Redis unreachable" in log
    assert "enforcing quota/2 per replica" in log
    assert "Redis answers again" in log
