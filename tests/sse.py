"""A strict reader of raw SSE bytes for tests: only complete events count, as in browsers."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    event: str
    id: str | None
    data: str
    comment: bool = False

    def json(self) -> Any:
        return json.loads(self.data)


def parse_events(buffer: bytes) -> list[Event]:
    """Events whose terminating blank line arrived; a trailing partial event is ignored."""
    text = buffer.decode("utf-8", errors="replace")
    complete, _, _ = text.rpartition("\n\n")
    events = []
    for block in filter(None, complete.split("\n\n")):
        fields: dict[str, list[str]] = {}
        comment = True
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            comment = False
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        events.append(
            Event(
                event=fields.get("event", ["message"])[-1],
                id=fields.get("id", [None])[-1],
                data="\n".join(fields.get("data", [])),
                comment=comment,
            )
        )
    return events


class LiveStream:
    """An SSE connection read in the background, timestamping every event and every byte."""

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        token: str,
        contract: str = "acme-globex-orders",
        params: dict[str, str] | None = None,
    ) -> None:
        self.events: list[tuple[float, Event]] = []
        #: (time received, bytes of complete events) per read.
        self.received: list[tuple[float, int]] = []
        self.response = http.send(
            http.build_request(
                "GET",
                f"{url}/v1/contracts/{contract}/stream",
                params=params,
                headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
            ),
            stream=True,
        )
        assert self.response.status_code == 200, self.response.read()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        try:
            for chunk in self.response.iter_raw():
                pending += chunk
                cut = pending.rfind(b"\n\n") + 2
                if cut >= 2:
                    now = time.monotonic()
                    self.events.extend((now, e) for e in parse_events(pending[:cut]))
                    self.received.append((now, cut))
                    pending = pending[cut:]
        except httpx.HTTPError:
            pass

    def wait_end(self, timeout: float = 10) -> tuple[float, dict[str, Any]]:
        self._thread.join(timeout)
        ends = [(t, e.json()) for t, e in self.events if e.event == "end"]
        assert ends, "the stream did not end"
        return ends[0]

    def records(self) -> list[dict[str, Any]]:
        return [e.json() for _, e in self.events if e.event == "record"]

    def wait_records(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.records()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.records()

    def close(self) -> None:
        """Hang up as a partner would. The reader thread is blocked in ``recv``, so the socket
        is shut down first: closing alone sends nothing while another thread still reads."""
        sock = self.response.extensions["network_stream"].get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self.response.close()


def open_raw_stream(port: int, token: str, query: str = "") -> socket.socket:
    """A stream of the test contract on a raw socket (the request sent, nothing read): a
    client the test controls byte by byte, or freezes."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"GET /v1/contracts/acme-globex-orders/stream{query} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    return sock
