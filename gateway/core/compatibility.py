"""Whether a new version of a product's schema would break the partners consuming it.

A contract relies on the paths it shares (every field rule but ``drop``) and the paths its row
filter reads. A new schema breaks it when one of those paths

- is **removed**: the old schema described it, the new one does not (even if the new one allows
  other properties: a partner reading ``customer.country`` would stop receiving it), or
- is **retyped**: the new schema lets it hold a JSON type the old did not (a partner's parser
  expecting a number may meet a string; ``integer`` counts as a ``number``). Narrowing
  (``number`` to ``integer``) and adding fields are compatible.

Paths the old schema did not describe are not judged (nothing was promised about them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.core.contracts import Contract, FieldAction, Product, schema_at
from gateway.core.filters import parse_filter, paths_of

ALL_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})


@dataclass(frozen=True, slots=True)
class Break:
    """``contract`` relies on ``path``, which the new schema removes or retypes."""

    contract: str
    path: str
    change: str

    def __str__(self) -> str:
        return f"{self.path} {self.change}"


def relied_on(contract: Contract) -> set[str]:
    paths = {p for p, rule in contract.fields.items() if rule.action is not FieldAction.DROP}
    if contract.filter:
        paths |= paths_of(parse_filter(contract.filter))
    return paths


def types_of(node: Any) -> frozenset[str]:
    """The JSON types a schema node admits (every type when it does not say)."""
    kind = node.get("type") if isinstance(node, dict) else None
    if isinstance(kind, str):
        kinds = frozenset({kind})
    elif isinstance(kind, list):
        kinds = frozenset(k for k in kind if isinstance(k, str))
    elif isinstance(node, dict) and "enum" in node:
        kinds = frozenset(_json_type(v) for v in node["enum"])
    else:
        return ALL_TYPES
    return kinds | {"integer"} if "number" in kinds else kinds


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def change_of(old: Any, new: Any, path: str) -> str | None:
    """How ``path`` changed between two schemas, if in a way that breaks a reader of it."""
    before = schema_at(old, path)
    if before is None:
        return None
    after = schema_at(new, path)
    if after is None:
        return "removed"
    if types_of(after) - types_of(before):
        return f"retyped ({_shown(types_of(before))} to {_shown(types_of(after))})"
    return None


def _shown(types: frozenset[str]) -> str:
    if types == ALL_TYPES:
        return "any type"
    return " or ".join(sorted(types - {"integer"} if "number" in types else types))


def breaks(old: Product, new: Product, contracts: Iterable[Contract]) -> list[Break]:
    """What the new product version breaks, contract by contract (sorted)."""
    found = []
    for contract in contracts:
        if contract.product != new.product:
            continue
        for path in sorted(relied_on(contract)):
            change = change_of(old.json_schema, new.json_schema, path)
            if change:
                found.append(Break(contract.contract, path, change))
    return sorted(found, key=lambda b: (b.contract, b.path))


def describe(new: Product, found: list[Break]) -> str:
    """One line: which contracts, and why."""
    by_contract: dict[str, list[str]] = {}
    for b in found:
        by_contract.setdefault(b.contract, []).append(str(b))
    parts = "; ".join(f"{c} ({', '.join(changes)})" for c, changes in by_contract.items())
    return f"schema {new.version} of {new.product} would break contracts: {parts}"
