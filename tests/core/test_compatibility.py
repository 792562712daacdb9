"""Which schema changes break the partners relying on a product (pure)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.compatibility import breaks, describe
from gateway.core.contracts import Contract, Product

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "amount": {"type": "number"},
        "count": {"type": "integer"},
        "status": {"enum": ["new", "paid"]},
        "customer": {
            "type": "object",
            "properties": {"email": {"type": "string"}, "country": {"type": "string"}},
        },
        "lines": {
            "type": "array",
            "items": {"type": "object", "properties": {"sku": {"type": "string"}}},
        },
        "notes": {"type": "string"},
    },
}


def product(schema: dict[str, Any], version: str = "1.0.0") -> Product:
    return Product.model_validate(
        {
            "product": "orders", "owner": "acme", "team": "t", "topic": "t",
            "description": "d", "version": version, "schema": schema,
        }
    )  # fmt: skip


def contract(fields: dict[str, str], filter: str | None = None, name: str = "c1") -> Contract:
    return Contract.model_validate(
        {
            "contract": name, "version": 1, "provider": "acme", "consumer": "globex",
            "product": "orders", "purpose": "p",
            "valid_from": datetime(2026, 1, 1, tzinfo=UTC),
            "valid_until": datetime(2027, 1, 1, tzinfo=UTC),
            "fields": fields, "filter": filter, "signatures": [],
        }
    )  # fmt: skip


SHARES = contract(
    {"order_id": "clear", "amount": "clear", "customer.email": "hash", "lines[].sku": "clear",
     "notes": "drop", "count": "clear", "status": "clear"},
    filter='customer.country == "NL"',
)  # fmt: skip


def changed(edit: Any) -> Product:
    schema = copy.deepcopy(SCHEMA)
    edit(schema["properties"])
    return product(schema, "2.0.0")


def test_removing_or_retyping_what_a_contract_shares_or_filters_on_breaks_it() -> None:
    old = product(SCHEMA)
    cases = [
        (lambda p: p.pop("order_id"), "order_id removed"),
        (lambda p: p["amount"].update(type="string"), "amount retyped (number to string)"),
        (lambda p: p["customer"]["properties"].pop("country"), "customer.country removed"),
        (lambda p: p["customer"]["properties"]["email"].update(type=["string", "null"]),
         "customer.email retyped (string to null or string)"),
        (lambda p: p["lines"]["items"]["properties"].pop("sku"), "lines[].sku removed"),
        (lambda p: p["count"].update(type="number"), "count retyped (integer to number)"),
        (lambda p: p["status"].update(enum=["new", "paid", 3]),
         "status retyped (string to integer or string)"),
    ]  # fmt: skip
    for edit, expected in cases:
        found = breaks(old, changed(edit), [SHARES])
        assert [str(b) for b in found] == [expected]


def test_additions_narrowing_and_dropped_fields_are_compatible() -> None:
    old = product(SCHEMA)
    compatible = [
        lambda p: p.update(placed_at={"type": "string"}),
        lambda p: p["amount"].update(type="integer"),
        lambda p: p.pop("notes"),  # the contract drops it
        lambda p: p["customer"]["properties"].update(name={"type": "string"}),
        lambda p: p["status"].update(enum=["new"]),
    ]
    for edit in compatible:
        assert breaks(old, changed(edit), [SHARES]) == []


def test_other_products_contracts_and_undescribed_paths_are_not_judged() -> None:
    other = contract({"order_id": "clear"}).model_copy(update={"product": "billing"})
    loose = contract({"anything.at.all": "clear"})
    assert breaks(product(SCHEMA), product({"type": "object"}, "2.0.0"), [other, loose]) == []


def test_the_refusal_names_each_contract_and_change() -> None:
    new = changed(lambda p: (p.pop("order_id"), p["amount"].update(type="string")))
    second = contract({"order_id": "clear"}, name="c2")
    found = breaks(product(SCHEMA), new, [SHARES, second])
    assert describe(new, found) == (
        "schema 2.0.0 of orders would break contracts: "
        "c1 (amount retyped (number to string), order_id removed); c2 (order_id removed)"
    )


names = st.sampled_from(["a", "b", "c"])
types = st.sampled_from(["string", "number", "integer", "boolean", "null"])
schemas = st.recursive(
    st.builds(lambda t: {"type": t}, types),
    lambda inner: st.builds(
        lambda props: {"type": "object", "properties": props},
        st.dictionaries(names, inner, min_size=1, max_size=3),
    ),
    max_leaves=6,
)


@given(schemas)
def test_a_schema_never_breaks_itself_and_adding_a_property_never_breaks(
    schema: dict[str, Any],
) -> None:
    old = product({"type": "object", "properties": {"x": schema}})
    paths = ["x", "x.a", "x.b", "x.a.c", "x.b.a"]
    everything = contract(dict.fromkeys(paths, "clear"))
    assert breaks(old, product(old.json_schema or {}, "2.0.0"), [everything]) == []
    wider = copy.deepcopy(old.json_schema or {})
    wider["properties"]["y"] = {"type": "string"}
    assert breaks(old, product(wider, "2.0.0"), [everything]) == []
