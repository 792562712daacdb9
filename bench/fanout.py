"""Fan-out: thousands of partner streams of one contract on one gateway process.

One ``gateway serve`` process (embedded Tansu broker), one contract, N SSE streams held open
from ``latest`` by an asyncio client on raw sockets (this process). Phases:

- **Idle** (for each N in ``--streams``): the gateway's RSS, threads, broker connections and
  CPU while nothing is produced. Targets: 10,000 streams under 600 MB RSS; threads and broker
  connections independent of N; idle CPU near zero (under 5% of a core).
- **Live** (``--live`` streams): 100 records/s produced; every stream must receive every record
  in order. Delivery latency p50/p99 of the gateway's streams (a sample of 50 parses every event)
  against a raw confluent-kafka consumer on the same topic in the same run. Target: p99 added
  <= 100 ms, no loss.
- **Mixed**: the live streams plus 20 streams draining a pre-filled history topic: the live
  streams' p99 beside the backfill.

With ``--workers N`` the gateway runs N worker processes (and a Redis they share); figures are
for all of them together.

Usage: python -m bench.fanout [--streams 1000,5000,10000] [--live 1000] [--seconds 10]
       [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.serving import gateway_serving, prefill_history
from bench.stream import FIELDS
from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.embedded import EmbeddedKafka
from gateway.adapters.kafka.source import STREAM_CONSUMER_DEFAULTS
from gateway.adapters.stores.signing import (
    PRIVATE_SUFFIX,
    generate_keys,
    read_signing_key,
    sign_file,
)
from gateway.client import GatewayClient
from gateway.services.streams import WORKER_THREADS
from tests.redis_server import RedisServer

RATE = 100
SAMPLED = 50
HISTORY_STREAMS = 20


def write_world(root: Path) -> None:
    for org in ("acme", "globex"):
        generate_keys(org, root / "keys", root / "private")
    products = root / "contracts" / "products"
    products.mkdir(parents=True)
    for product in ("live", "history"):
        (products / f"{product}.yaml").write_text(
            f"product: {product}\nowner: acme\nteam: orders-team\ntopic: {product}\n"
            "description: Bench\n"
        )
    for name, product, fields in (
        ("fan", "live", "  seq: clear\n  sent_at: clear\n  notes: clear\n"),
        ("backfill", "history", "".join(f"  {path}: clear\n" for path in FIELDS)),
    ):
        path = root / "contracts" / f"{name}.yaml"
        path.write_text(
            f"contract: {name}\nversion: 1\nprovider: acme\nconsumer: globex\n"
            f"product: {product}\npurpose: Benchmark\nvalid_from: 2026-01-01T00:00:00Z\n"
            "valid_until: 2099-01-01T00:00:00Z\nquotas: {concurrent_streams: 10000}\n"
            f"fields:\n{fields}signatures: []\n"
        )
        for org in ("acme", "globex"):
            sign_file(path, root / "private" / f"{org}{PRIVATE_SUFFIX}", org)


class Streams:
    """N SSE connections on raw sockets, in one event loop in a thread of its own."""

    def __init__(self, port: int, bearer: str) -> None:
        self._port = port
        self._bearer = bearer
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.counts: list[int] = []
        self.latencies: list[float] = []
        self.out_of_order = 0
        self.history_events = 0
        self._writers: list[asyncio.StreamWriter] = []

    def open(self, count: int, contract: str = "fan", query: str = "?from=latest") -> None:
        asyncio.run_coroutine_threadsafe(self._open(count, contract, query), self.loop).result()

    async def _open(self, count: int, contract: str, query: str) -> None:
        semaphore = asyncio.Semaphore(200)

        async def one(index: int) -> None:
            async with semaphore:
                reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
                writer.write(
                    f"GET /v1/contracts/{contract}/stream{query} HTTP/1.1\r\nHost: bench\r\n"
                    f"Authorization: Bearer {self._bearer}\r\n"
                    "Accept: text/event-stream\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace").splitlines()[0])
                self._writers.append(writer)
                if contract == "fan":
                    slot = len(self.counts)
                    self.counts.append(0)
                    asyncio.get_running_loop().create_task(
                        self._read(reader, slot, sampled=slot < SAMPLED)
                    )
                else:
                    asyncio.get_running_loop().create_task(self._drain(reader))

        await asyncio.gather(*(one(i) for i in range(count)))

    async def _read(self, reader: asyncio.StreamReader, slot: int, *, sampled: bool) -> None:
        last = -1
        pending = b""
        while chunk := await reader.read(65536):
            if not sampled:
                self.counts[slot] += chunk.count(b"event: record\n")
                continue
            now = time.time()
            pending += chunk
            *complete, pending = pending.split(b"\n\n")
            for event in complete:
                if b"event: record" not in event:
                    continue
                value = json.loads(event[event.index(b"data: ") + 6 :])["value"]
                self.latencies.append(now - value["sent_at"])
                if value["seq"] <= last:
                    self.out_of_order += 1
                last = value["seq"]
                self.counts[slot] += 1

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(1 << 20):
            self.history_events += chunk.count(b"event: record\n")

    def take_latencies(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return taken

    def close(self) -> None:
        async def close_all() -> None:
            for writer in self._writers:
                writer.close()

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class Producing:
    """``RATE`` records/s into ``live``, each with its send time and sequence number."""

    def __init__(self, config: dict[str, str]) -> None:
        self._producer = Producer({**config, "linger.ms": 0, "batch.num.messages": 1})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set():
            value = {"seq": self.sent, "sent_at": time.time(), "notes": "x" * 200}
            self._producer.produce("live", json.dumps(value).encode())
            self._producer.poll(0)
            self.sent += 1
            time.sleep(max(0.0, started + self.sent / RATE - time.perf_counter()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._producer.flush(5)


def loopback_send_cost(count: int) -> float:
    """Microseconds of the writer's CPU per write of 80 bytes to each of ``count`` loopback
    sockets whose reader (another process) sleeps until data comes: the kernel's share of a
    stream's write on this machine, whatever the server."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=count)
    port = listener.getsockname()[1]
    reader = subprocess.Popen(
        [sys.executable, "-c", _SLEEPING_READERS, str(port), str(count)], stdout=subprocess.PIPE
    )
    try:
        accepted = [listener.accept()[0] for _ in range(count)]
        assert reader.stdout is not None
        reader.stdout.readline()
        rounds, started = 5, time.process_time()
        for _ in range(rounds):
            for sock in accepted:
                sock.send(b"x" * 80)
            time.sleep(0.2)  # the readers go back to sleep
        return (time.process_time() - started) / (rounds * count) * 1e6
    finally:
        reader.kill()
        reader.wait()
        for sock in accepted:
            sock.close()
        listener.close()


_SLEEPING_READERS = """
import selectors, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
selector = selectors.DefaultSelector()
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port))
    selector.register(sock, selectors.EVENT_READ)
print("connected", flush=True)
while True:
    for key, _ in selector.select():
        key.fileobj.recv(65536)
"""


def raw_latencies(config: dict[str, str], stop: threading.Event, into: list[float]) -> None:
    consumer = Consumer({**config, **STREAM_CONSUMER_DEFAULTS})
    _, high = consumer.get_watermark_offsets(TopicPartition("live", 0), timeout=5)
    consumer.assign([TopicPartition("live", 0, high)])
    while not stop.is_set():
        first = consumer.poll(0.25)  # at once, not after a batch's count or timeout
        if first is None:
            continue
        for message in [first, *consumer.consume(num_messages=100, timeout=0)]:
            if message.error() is None:
                into.append(time.time() - json.loads(message.value())["sent_at"])
    consumer.close()


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    if not ordered:
        return float("nan"), float("nan")
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


def usage(process: Any, broker_port: int, seconds: float) -> dict[str, float]:
    cpu = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    connections = sum(
        1
        for c in process.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == broker_port and c.status == psutil.CONN_ESTABLISHED
    )
    return {
        "rss_mb": process.memory_info().rss / 1e6,
        "threads": process.num_threads(),
        "connections": connections,
        "cpu": (after.user + after.system - cpu.user - cpu.system) / seconds,
    }


class Processes:
    """``gateway serve`` and its workers, measured together (as ``psutil.Process``)."""

    def __init__(self, pid: int) -> None:
        self._root = psutil.Process(pid)

    def _all(self) -> list[psutil.Process]:
        children = self._root.children()
        return children if children else [self._root]

    def cpu_times(self) -> Any:
        times = [p.cpu_times() for p in self._all()]
        return SimpleNamespace(user=sum(t.user for t in times), system=sum(t.system for t in times))

    def memory_info(self) -> Any:
        return SimpleNamespace(rss=sum(p.memory_info().rss for p in self._all()))

    def num_threads(self) -> int:
        return sum(p.num_threads() for p in self._all())

    def net_connections(self, kind: str) -> list[Any]:
        return [c for p in self._all() for c in p.net_connections(kind=kind)]


def busy(process: Any, since: Any) -> float:
    now = process.cpu_times()
    return now.user + now.system - since.user - since.system


def settle(process: Any, timeout: float = 120.0) -> None:
    """Until the gateway has finished with the streams just closed (their ledger entries,
    quota releases): under 10% of a core over a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        since = process.cpu_times()
        time.sleep(1.0)
        if busy(process, since) < 0.1:
            return


def verdict(held: bool) -> str:
    return "held" if held else "NOT held"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", default="1000,5000,10000")
    parser.add_argument("--live", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1, help="gateway serve --workers N")
    args = parser.parse_args()
    steps = [int(n) for n in args.streams.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with EmbeddedKafka() as broker, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = {"bootstrap.servers": broker.bootstrap_servers}
        broker_port = int(broker.bootstrap_servers.rsplit(":", 1)[1])
        create_topic(config, "live", 1)
        create_topic(config, "history", 4)
        prefill_history(config, args.history)
        write_world(root)
        env = {
            "GATEWAY_QUOTAS__ORG_CONCURRENT_STREAMS": "20000",
            "GATEWAY_READING__MAX_STREAMS": "20000",
        }
        extra: list[str] = []
        redis = RedisServer()
        if args.workers > 1:  # workers share quotas and replay protection through Redis
            redis.start()
            env["GATEWAY_REDIS__URL"] = redis.url
            extra += ["--workers", str(args.workers)]
        streams: Streams | None = None
        try:
            serving = gateway_serving(root, broker.bootstrap_servers, *extra, env=env)
            with serving as (port, server):
                url = f"http://127.0.0.1:{port}"
                streams = measure_all(args, steps, config, root, url, port, server, broker_port)
        finally:
            if streams is not None:
                streams.close()
            redis.stop()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def measure_all(
    args: argparse.Namespace,
    steps: list[int],
    config: dict[str, str],
    root: Path,
    url: str,
    port: int,
    server: subprocess.Popen[bytes],
    broker_port: int,
) -> Streams:
    """The three phases; returns the streams still open (closed by the caller)."""
    gateway = Processes(server.pid)
    key = read_signing_key(root / "private" / f"globex{PRIVATE_SUFFIX}")
    with GatewayClient(url, org="globex", key=key) as client:
        bearer = client.fetch_token()
    base = usage(gateway, broker_port, 2.0)
    print(f"no streams: RSS {base['rss_mb']:.0f} MB, {base['threads']:.0f} threads, "
          f"{base['connections']:.0f} broker connections")  # fmt: skip

    # Idle fan-out.
    streams = Streams(port, bearer)
    idle: dict[int, dict[str, float]] = {}
    opened = 0
    for step in steps:
        started = time.perf_counter()
        streams.open(step - opened)
        took = time.perf_counter() - started
        opened = step
        time.sleep(2.0)
        idle[step] = measured = usage(gateway, broker_port, 5.0)
        print(
            f"{step:>6} idle streams (opened in {took:.1f} s): "
            f"RSS {measured['rss_mb']:.0f} MB, {measured['threads']:.0f} threads, "
            f"{measured['connections']:.0f} broker connections, "
            f"CPU {measured['cpu'] * 100:.1f}% of a core"
        )
    largest = idle[steps[-1]]
    print(
        f"target: {steps[-1]} streams under 600 MB RSS: "
        f"{verdict(largest['rss_mb'] < 600)} ({largest['rss_mb']:.0f} MB)"
    )
    threads = [round(m["threads"]) for m in idle.values()]
    connections = {round(m["connections"]) for m in idle.values()}
    # Worker threads (32 at most, for opening streams) come and go with the load; the
    # rest (librdkafka's, uvicorn's) are fixed.
    bounded = max(threads) - min(threads) <= WORKER_THREADS
    print(
        "target: threads and broker connections independent of the streams: "
        f"{verdict(bounded and len(connections) == 1)} "
        f"(threads {threads}, connections {sorted(connections)})"
    )
    print(
        f"target: idle CPU under 5% of a core: {verdict(largest['cpu'] < 0.05)} "
        f"({largest['cpu'] * 100:.1f}%)"
    )
    streams.close()
    settle(gateway)

    # Live fan-out.
    streams = Streams(port, bearer)
    streams.open(args.live)
    time.sleep(2.0)
    raw: list[float] = []
    stop = threading.Event()
    rawer = threading.Thread(target=raw_latencies, args=(config, stop, raw), daemon=True)
    rawer.start()
    time.sleep(1.0)
    producing = Producing(config)
    producing.start()
    client = psutil.Process()
    gateway_cpu, client_cpu = gateway.cpu_times(), client.cpu_times()
    time.sleep(args.seconds)
    gateway_used = busy(gateway, gateway_cpu) / args.seconds
    client_used = busy(client, client_cpu) / args.seconds
    producing.stop()
    sent = producing.sent
    # A gateway that lags is not one that loses: wait until every stream has every
    # record, or nothing has moved for 5 s.
    last, still = -1, time.monotonic()
    while sum(streams.counts) < sent * args.live and time.monotonic() - still < 5:
        if sum(streams.counts) != last:
            last, still = sum(streams.counts), time.monotonic()
        time.sleep(0.2)
    stop.set()
    rawer.join(5)
    live = streams.take_latencies()
    raw_p50, raw_p99 = percentiles(raw)
    p50, p99 = percentiles(live)
    complete = sum(c == sent for c in streams.counts)
    print(f"live: {sent} records at {RATE}/s to {args.live} streams "
          f"({sent * args.live / args.seconds:,.0f} deliveries/s)")  # fmt: skip
    print(f"  (R) raw consumer      p50 {raw_p50:7.1f} ms   p99 {raw_p99:7.1f} ms")
    print(f"  (G) gateway streams   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    print(
        f"  CPU: gateway {gateway_used * 100:.0f}% of a core, this client "
        f"{client_used * 100:.0f}% (on 2 cores, the client's load adds latency)"
    )
    print(f"  streams with every record: {complete}/{args.live}; "
          f"out of order: {streams.out_of_order}")  # fmt: skip
    print(
        f"target: p99 added <= 100 ms: {verdict(p99 - raw_p99 <= 100)} "
        f"({p99 - raw_p99:+.1f} ms); no loss: {verdict(complete == args.live)}"
    )
    per_send = loopback_send_cost(args.live)
    print(
        f"  this machine's floor: a write to each of {args.live} idle loopback sockets costs "
        f"{per_send:.0f} us of CPU in the kernel, {per_send * args.live / 1000:.0f} ms for one "
        "record to reach every stream, before any gateway work"
    )

    # Mixed: the same live streams beside streams draining history.
    streams.open(HISTORY_STREAMS, contract="backfill", query="")
    time.sleep(1.0)
    before = streams.history_events
    producing = Producing(config)
    producing.start()
    started = time.perf_counter()
    time.sleep(args.seconds)
    producing.stop()
    rate = (streams.history_events - before) / (time.perf_counter() - started)
    time.sleep(2.0)
    p50_mixed, p99_mixed = percentiles(streams.take_latencies())
    print(f"mixed: + {HISTORY_STREAMS} streams draining history ({rate:,.0f} events/s)")
    print(f"  (M) gateway streams   p50 {p50_mixed:7.1f} ms   p99 {p99_mixed:7.1f} ms")
    print(f"  M-G p99 = {p99_mixed - p99:+.1f} ms")
    return streams


if __name__ == "__main__":
    main()
