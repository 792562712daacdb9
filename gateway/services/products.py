"""What an internal team may do with the data products it owns.

A product names its owning team; a member of that team, or of the admin team, manages it. A
product another team owns answers exactly as one that does not exist (``product_not_found``),
so the internal API does not tell teams which products others have.
"""

from __future__ import annotations

from datetime import datetime

from gateway.core.compatibility import breaks, describe
from gateway.core.contracts import Product
from gateway.core.identity import TeamMember
from gateway.errors import ProductNotFound
from gateway.services.registry import Registry


def products_managed_by(registry: Registry, member: TeamMember) -> list[Product]:
    return sorted(
        (p for p in registry.products.values() if member.manages(p.team)),
        key=lambda p: p.product,
    )


def managed_product(registry: Registry, member: TeamMember, name: str) -> Product:
    product = registry.products.get(name)
    if product is None or not member.manages(product.team):
        raise ProductNotFound(f"no product {name!r} among those of your teams")
    return product


def schema_change_refusal(
    previous: Product | None, new: Product, registry: Registry, now: datetime
) -> str | None:
    """Why ``new`` may not replace ``previous`` (the version in force), or ``None``: its
    schema changed under the same version, or it would break a contract of ``registry``
    relying on it (in force, or signed to start later)."""
    if previous is None or previous.json_schema == new.json_schema:
        return None
    if previous.version == new.version:
        return (
            f"the schema of {new.product} changed but its version is still {new.version}; "
            "raise the version"
        )
    relying = [doc.contract for doc in registry.contracts_relying_on(new.product, now)]
    found = breaks(previous, new, relying)
    return describe(new, found) if found else None


def keep_compatible_products(previous: Registry, loaded: Registry, now: datetime) -> None:
    """On a reload, before contracts are read again: a product whose new schema is refused
    keeps the version in force (so its contracts are judged against that one), and the
    refusal is recorded with the reason; its partners notice nothing."""
    for name, product in list(loaded.products.items()):
        before = previous.products.get(name)
        refusal = schema_change_refusal(before, product, previous, now)
        if refusal is not None and before is not None:
            loaded.products[name] = before
            loaded.refuse(f"product {name}", "breaking_schema_change", refusal)
