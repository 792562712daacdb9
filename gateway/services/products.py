"""What an internal team may do with the data products it owns.

A product names its owning team; a member of that team, or of the admin team, manages it. A
product another team owns answers exactly as one that does not exist (``product_not_found``),
so the internal API does not tell teams which products others have.
"""

from __future__ import annotations

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
