"""The partner SDK against a scripted gateway (httpx's MockTransport): how it resumes."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.client import GatewayClient
from gateway.core.jose import generate_org_keys, signing_key

BASE = "http://gateway.test"


@pytest.mark.parametrize(
    ("reason", "extra", "waits"),
    [
        ("ledger_unavailable", {"retry_after": 0}, [0]),
        ("superseded", {}, [0]),
        ("product_unavailable", {"detail": "the product's topic is gone"}, [0.5]),
        ("cursor_out_of_range", {"detail": "partition 0: position lost"}, [0.5]),
        ("shutdown", {"detail": "the gateway is shutting down"}, [0.5]),
    ],
)
def test_the_client_resumes_after_an_end_that_asks_it_to(
    reason: str, extra: dict[str, object], waits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ledger_unavailable`` and ``superseded`` used to end ``gateway consume`` with exit 1;
    a Kafka failure under the stream is retried with backoff."""
    streams: list[httpx.Request] = []
    slept: list[float] = []
    monkeypatch.setattr("gateway.client.time.sleep", slept.append)

    def record(n: int) -> str:
        data = {"partition": 0, "offset": n, "key": f"o-{n}", "value": {"order_id": f"o-{n}"}}
        return f"event: record\nid: cursor-{n}\ndata: {json.dumps(data)}\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"token_endpoint": f"{BASE}/oauth/token"})
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer"})
        streams.append(request)
        if len(streams) == 1:
            end = json.dumps({"reason": reason, **extra})
            body = record(0) + f"event: end\ndata: {end}\n\n"
        else:
            body = record(1)
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    key = signing_key(generate_org_keys())
    with GatewayClient(BASE, org="globex", key=key, http=http) as client:
        records = client.records("c", cursor=None)
        got = [next(records)[1]["offset"], next(records)[1]["offset"]]
    assert got == [0, 1]
    assert streams[1].headers["last-event-id"] == "cursor-0", "resumed with its cursor"
    assert slept == waits


def test_the_client_says_what_retention_took_from_it(caplog: pytest.LogCaptureFixture) -> None:
    gap = {"partition": 0, "first": 2, "last": 5, "reason": "retention"}
    record = {"partition": 0, "offset": 6, "key": "o-6", "value": {"order_id": "o-6"}}
    body = f"event: gap\ndata: {json.dumps(gap)}\n\n"
    body += f"event: record\nid: c6\ndata: {json.dumps(record)}\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"token_endpoint": f"{BASE}/oauth/token"})
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer"})
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with GatewayClient(BASE, org="globex", key=signing_key(generate_org_keys()), http=http) as c:
        assert next(c.records("c", cursor="c1"))[1]["offset"] == 6
    assert any("lost to the topic's retention" in r.getMessage() for r in caplog.records)
