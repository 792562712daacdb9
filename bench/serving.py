"""What the process benchmarks share: a pre-filled history topic and ``gateway serve`` started
as a subprocess on the embedded broker, ready (``/readyz``) before measuring."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from bench.stream import record
from gateway.adapters.kafka.embedded import free_port
from gateway.adapters.kafka.producer import produce


def prefill_history(config: Mapping[str, str], count: int) -> None:
    """``count`` orders into the topic ``history``, in large batches (fast to read back)."""
    produce(
        config,
        "history",
        ((f"o-{n}", record(n)) for n in range(count)),
        producer_config={"linger.ms": 100, "batch.size": 1_000_000},
    )


@contextlib.contextmanager
def gateway_serving(
    root: Path,
    bootstrap_servers: str,
    *extra: str,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``gateway serve`` for the world in ``root`` on a free port; yields the port and the
    process once it is ready, and stops it (SIGINT, then SIGKILL after 30 s) at the end."""
    port = free_port()
    arguments: Sequence[str] = [
        "--port", str(port), "--org", "acme", "--contracts", str(root / "contracts"),
        "--keys", str(root / "keys"), "--state", str(root / "state"),
        "--bootstrap-servers", bootstrap_servers, *extra,
    ]  # fmt: skip
    # The gateway's log goes to $BENCH_GATEWAY_LOG when set (appended), else nowhere.
    log = Path(os.environ.get("BENCH_GATEWAY_LOG", os.devnull)).open("ab")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", *arguments],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "GATEWAY_LEDGER_TOPIC": "bench-ledger", **(env or {})},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        yield port, server
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
