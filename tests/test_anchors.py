"""Checkpoints anchored outside the ledger: a chain deleted whole is still noticed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from gateway.adapters.kafka.ledger import read_entries
from gateway.cli import main
from tests.conftest import RunningGateway

pytestmark = pytest.mark.kafka


class Receiver:
    """A partner's endpoint on loopback that keeps what it is given; its first answer is 503."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.refused == 0:
                    receiver.refused += 1
                    self.send_response(503)
                else:
                    receiver.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/anchor"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def test_an_anchored_checkpoint_exposes_a_chain_deleted_whole(
    serve: Callable[..., RunningGateway],
    receiver: Receiver,
    http: httpx.Client,
    kafka_config: dict[str, str],
    tmp_path: Path,
) -> None:
    gw = serve(anchors=[receiver.url], anchor_seconds=0.2, ledger_checkpoint_seconds=0.2)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(http.get(f"{gw.url}/.well-known/jwks.json").text)
    deadline = time.monotonic() + 10
    while not receiver.received:  # the first hand-over was refused: tried again
        assert time.monotonic() < deadline, "no checkpoint was anchored"
        time.sleep(0.1)
    assert receiver.refused == 1
    gw.stop()
    entries = list(read_entries(kafka_config, gw.gateway.settings.ledger_topic))
    anchored = [e for e in entries if e["kind"] == "anchored"]
    assert anchored
    assert anchored[0]["anchor"] == receiver.url.split("/")[2]
    kept = tmp_path / "anchored.ndjson"
    kept.write_text("".join(json.dumps(r) + "\n" for r in receiver.received))
    exported = tmp_path / "ledger.ndjson"

    def verify(lines: list[dict[str, Any]]) -> tuple[int, str]:
        exported.write_text("".join(json.dumps(e) + "\n" for e in lines))
        args = ["ledger", "verify", "--file", str(exported), "--keys", str(jwks),
                "--anchored", str(kept)]  # fmt: skip
        result = CliRunner().invoke(main, args)
        return result.exit_code, result.output

    code, out = verify(entries)
    assert code == 0, out
    # The replica's whole chain deleted: nothing inside the ledger is left to tell.
    code, out = verify([])
    assert code == 1
    assert "CUT chain" in out
    assert "the whole chain is gone" in out
