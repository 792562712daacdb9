"""A product's new schema version that would break a contract in force is refused, at reload
(the live stream notices nothing) and by ``gateway product check`` before a deploy."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from gateway.cli import main
from tests.conftest import RunningGateway, World
from tests.sse import LiveStream

SCHEMA = """\
schema:
  type: object
  properties:
    order_id: {type: string}
    amount: {type: number}
    currency: {type: string}
    customer:
      type: object
      properties:
        country: {type: string}
"""


def write_product(world: World, version: str, schema: str = SCHEMA) -> Path:
    path = world.contracts_dir / "products" / "orders.yaml"
    path.write_text(
        f"product: orders\nowner: acme\nteam: orders-team\ntopic: {world.topic}\n"
        f"description: Orders\nversion: {version}\n{schema}"
    )
    return path


@pytest.fixture
def versioned(world: World) -> World:
    write_product(world, "1.0.0")
    return world


def breaking() -> str:
    return SCHEMA.replace("    amount: {type: number}\n", "    amount: {type: string}\n").replace(
        "        country: {type: string}\n", "        city: {type: string}\n"
    )


def test_check_names_the_contracts_a_new_version_would_break(versioned: World) -> None:
    runner = CliRunner()
    new = versioned.root / "orders-v2.yaml"
    new.write_text(write_product(versioned, "1.0.0").read_text().replace("1.0.0", "2.0.0"))
    args = ["--contracts-dir", str(versioned.contracts_dir), "--keys-dir", str(versioned.keys_dir)]

    same = runner.invoke(main, ["product", "check", str(new), *args])
    assert same.exit_code == 0, same.output

    new.write_text(new.read_text().replace(SCHEMA, breaking()))
    refused = runner.invoke(main, ["product", "check", str(new), *args])
    assert refused.exit_code == 2
    assert refused.output == (
        f"Error: {new}: schema 2.0.0 of orders would break contracts: "
        "acme-globex-orders (amount retyped (number to string), customer.country removed); "
        "acme-initech-orders (amount retyped (number to string), customer.country removed)\n"
    )

    added = SCHEMA + "    placed_at: {type: string}\n"
    new.write_text(new.read_text().replace(breaking(), added))
    ok = runner.invoke(main, ["product", "check", str(new), *args])
    assert ok.exit_code == 0, ok.output
    assert "schema 1.0.0 -> 2.0.0 is compatible with the 2 contract(s) relying on orders" in (
        ok.output
    )

    new.write_text(new.read_text().replace("2.0.0", "1.0.0"))
    unversioned = runner.invoke(main, ["product", "check", str(new), *args])
    assert unversioned.exit_code == 2
    assert "changed but its version is still 1.0.0; raise the version" in unversioned.output


@pytest.mark.kafka
def test_a_breaking_version_is_refused_at_reload_and_the_live_stream_goes_on(
    serve: Callable[..., RunningGateway], versioned: World, http: httpx.Client, produce_orders: Any
) -> None:
    gw = serve()
    stream = LiveStream(http, gw.url, gw.token("globex"))
    write_product(versioned, "2.0.0", breaking())
    deadline = time.monotonic() + 10
    while not [r for r in gw.gateway.registry.refusals if r.reason == "breaking_schema_change"]:
        assert time.monotonic() < deadline, "the reload did not refuse the new schema"
        time.sleep(0.05)
    [refusal] = [r for r in gw.gateway.registry.refusals if r.reason == "breaking_schema_change"]
    assert "acme-globex-orders (amount retyped (number to string)" in refusal.detail
    assert gw.gateway.registry.products["orders"].version == "1.0.0"

    produce_orders(versioned.topic, 3)
    deadline = time.monotonic() + 10
    while len(stream.records()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(stream.records()) == 3
    assert not [e for _, e in stream.events if e.event == "end"]

    write_product(versioned, "2.1.0", SCHEMA + "    placed_at: {type: string}\n")
    deadline = time.monotonic() + 10
    while gw.gateway.registry.products["orders"].version != "2.1.0":
        assert time.monotonic() < deadline, "the compatible version was not taken"
        time.sleep(0.05)
    assert not [e for _, e in stream.events if e.event == "end"]
    stream.close()
