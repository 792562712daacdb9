"""A real ``redis-server`` (Debian package ``redis-server``; ``make test`` installs it)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

from gateway.adapters.kafka.embedded import free_port, wait_for_port

NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


@dataclass
class RedisServer:
    """Started on a free loopback port without persistence; ``stop``/``start`` keep the port."""

    port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make test installs Debian's redis-server)"
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", *NO_PERSISTENCE],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, timeout=10)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None
