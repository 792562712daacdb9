"""What a partner can read about its contracts before and while it consumes: the catalog, the
JSON Schema of a record as its contract delivers it (checked against records actually
delivered), and the contract's AsyncAPI 3.0 document (checked against the AsyncAPI 3.0.0 JSON
Schema of the ``@asyncapi/specs`` npm package)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.conftest import RunningGateway, World
from tests.npm import npm_package
from tests.test_protection import PROTECTED, protected

pytestmark = pytest.mark.kafka
__all__ = ["protected"]  # the fixture: a contract with every field action, and its records


SCHEMA = """\
schema:
  type: object
  properties:
    order_id: {type: string, x-classification: internal, description: The order's id}
    amount: {type: number, x-classification: internal}
    card: {type: string, x-classification: restricted}
    customer:
      type: object
      properties:
        name: {type: string, x-classification: personal}
        email: {type: string, x-classification: personal}
    items:
      type: array
      items:
        type: object
        properties:
          sku: {type: string}
          price: {type: number}
"""


@pytest.fixture(scope="session")
def asyncapi_schema() -> jsonschema_rs.Validator:
    """The AsyncAPI 3.0.0 JSON Schema, from the npm registry (cached in .cache/npm)."""
    specs = npm_package("@asyncapi/specs@6.11.1") / "schemas" / "3.0.0-without-$id.json"
    return jsonschema_rs.validator_for(json.loads(specs.read_text()), offline=True)


@pytest.fixture
def running(
    serve: Callable[..., RunningGateway], world: World, protected: list[dict[str, Any]]
) -> RunningGateway:
    path = world.contracts_dir / "products" / "orders.yaml"
    path.write_text(
        path.read_text() + "version: 2.1.0\nsupport: {email: data@acme.example}\n" + SCHEMA
    )
    return serve()


def get(http: httpx.Client, gw: RunningGateway, path: str, org: str = "globex") -> Any:
    r = http.get(gw.url + path, headers={"Authorization": f"Bearer {gw.token(org)}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_catalog_offers_the_callers_products_and_contracts(
    running: RunningGateway, http: httpx.Client
) -> None:
    catalog = get(http, running, "/v1/catalog")
    [product] = catalog["products"]
    assert product["product"] == "orders"
    assert product["provider"] == "acme"
    assert product["version"] == "2.1.0"
    assert product["support"] == {"email": "data@acme.example", "url": None, "channel": None}
    assert product["contracts"] == ["acme-globex-orders"]
    fields = {f["path"]: f for f in product["fields"]}
    assert fields["customer.email"]["classification"] == "personal"
    assert fields["order_id"]["description"] == "The order's id"
    assert [c["contract"] for c in catalog["contracts"]] == ["acme-globex-orders"]
    assert catalog["contracts"][0]["state"] == "active"


def test_the_schema_describes_exactly_what_the_contract_delivers(
    running: RunningGateway, http: httpx.Client
) -> None:
    schema = get(http, running, "/v1/contracts/acme-globex-orders/schema")
    value = schema["properties"]["value"]
    assert set(value["properties"]) == {"order_id", "amount", "customer", "card", "items"}
    assert value["additionalProperties"] is False
    customer = value["properties"]["customer"]["properties"]
    assert customer["email"]["contentMediaType"] == "application/jose"
    assert "'customer.email'" in customer["email"]["description"]
    assert customer["name"]["pattern"] == "^[A-Za-z0-9_-]{43}$"
    assert value["properties"]["card"]["type"] == ["string", "null"]
    assert value["properties"]["items"]["items"]["properties"] == {"sku": {"type": "string"}}

    validator = jsonschema_rs.validator_for(schema)
    records = get(http, running, "/v1/contracts/acme-globex-orders/records?limit=10&wait=5")
    assert records["records"]
    for record in records["records"]:
        assert validator.is_valid(record), list(validator.iter_errors(record))
    assert "filter" in PROTECTED  # the filter's fields are not delivered unless listed


def test_the_asyncapi_document_is_valid_asyncapi_3(
    running: RunningGateway, http: httpx.Client, asyncapi_schema: jsonschema_rs.Validator
) -> None:
    document = get(http, running, "/v1/contracts/acme-globex-orders/asyncapi")
    errors = [
        f"{list(e.instance_path)}: {e.message[:200]}" for e in asyncapi_schema.iter_errors(document)
    ]
    assert not errors, errors
    assert document["asyncapi"] == "3.0.0"
    oauth = document["components"]["securitySchemes"]["oauth2"]
    assert oauth["flows"]["clientCredentials"]["tokenUrl"] == f"{running.url}/oauth/token"
    assert document["channels"]["stream"]["address"] == "/v1/contracts/acme-globex-orders/stream"
    assert set(document["components"]["messages"]) == {
        "record", "refused", "keys", "gap", "end", "heartbeat",
    }  # fmt: skip
    record = document["components"]["messages"]["record"]["payload"]
    assert "email" in record["properties"]["value"]["properties"]["customer"]["properties"]


def test_another_partners_contract_is_not_found(
    running: RunningGateway, http: httpx.Client
) -> None:
    for path in ("schema", "asyncapi"):
        r = http.get(
            f"{running.url}/v1/contracts/acme-globex-orders/{path}",
            headers={"Authorization": f"Bearer {running.token('initech')}"},
        )
        assert r.status_code == 404
        assert r.json()["code"] == "contract_not_found"
