"""The gateway's log as an operator reads it: one JSON object a line, each naming the request,
contract and organisation it was written for, and never a token, a secret or a protected
field's plaintext, whatever the flow."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gateway.logs import CONTEXT, handler
from gateway.services.passwords import hash_secret
from gateway.settings import LegalUser
from tests.conftest import RunningGateway, World
from tests.sse import LiveStream
from tests.test_authorization import token_request

pytestmark = pytest.mark.kafka

HASHED = "acme-globex-hashed"
PASSWORD = "for-legal-only"


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """Everything logged meanwhile, as the gateway writes it in JSON."""
    buffer = io.StringIO()
    root = logging.getLogger()
    written, level = handler("json", buffer), root.level
    root.addHandler(written)
    root.setLevel(logging.INFO)
    yield buffer
    root.removeHandler(written)
    root.setLevel(level)


def test_a_line_is_one_json_object_with_its_request(logged: io.StringIO) -> None:
    token = CONTEXT.set({"request_id": "r-1", "contract": "c", "org": "globex"})
    try:
        logging.getLogger("gateway.test").warning("a %s happened", "thing")
    finally:
        CONTEXT.reset(token)
    logging.getLogger("gateway.test").info("outside a request")
    first, second = (json.loads(line) for line in logged.getvalue().splitlines())
    named = ("level", "logger", "message", "request_id", "contract", "org")
    assert {k: first[k] for k in named} == {
        "level": "WARNING", "logger": "gateway.test", "message": "a thing happened",
        "request_id": "r-1", "contract": "c", "org": "globex",
    }  # fmt: skip
    assert second["request_id"] == "-"
    assert "time" in first
    # uvicorn adds a coloured copy of its messages for terminals: not in a JSON line.
    logging.getLogger("uvicorn.error").info("Started", extra={"color_message": "\x1b[1mStarted"})
    assert "color_message" not in json.loads(logged.getvalue().splitlines()[-1])


def test_no_token_secret_or_protected_field_reaches_the_log(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    produce_orders: Any,
    logged: io.StringIO,
) -> None:
    world.add_contract(
        HASHED, "globex", fields="fields:\n  order_id: clear\n  customer.email: hash\n"
    )
    produce_orders(world.topic, 3)
    user = LegalUser(username="lena", password_hash=SecretStr(hash_secret(PASSWORD)))
    gw = serve(legal_users=[user])
    assertion = gw.assertion("globex")
    token = token_request(http, gw, assertion).json()["access_token"]
    stream = LiveStream(http, gw.url, token, contract=HASHED, params={"from": "earliest"})
    try:
        records = stream.wait_records(3, timeout=15)
    finally:
        stream.close()
    assert len(records) == 3
    # Refusals log too: a forged token, a replayed assertion, a wrong legal password.
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    refused = http.get(f"{gw.url}/v1/contracts", headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    request_id = refused.headers["x-request-id"]
    token_request(http, gw, assertion)  # replayed
    http.get(f"{gw.url}/legal", auth=("lena", "not the password"))
    gw.stop()  # the stream's and the ledger's last lines are written

    text = logged.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    for secret in (token, forged, assertion, "not the password", PASSWORD):
        assert secret not in text
    for n in range(3):  # the plaintext the contract protects
        assert f"c{n}@example.com" not in text
    streamed = [line for line in lines if line["message"].startswith("stream opened")]
    assert [(line["org"], line["contract"]) for line in streamed] == [("globex", HASHED)]
    assert streamed[0]["request_id"] != "-"
    assert any(line["request_id"] == request_id for line in lines)
