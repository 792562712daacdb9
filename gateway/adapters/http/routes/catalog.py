"""``GET /v1/catalog``: what the provider offers the calling partner, and its contracts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.adapters.http.deps import CurrentPartner, GatewayDep
from gateway.adapters.http.openapi import errors
from gateway.adapters.http.schemas import ContractPublic
from gateway.core.contracts import ContractState, Product, Support
from gateway.services.offers import awaits

router = APIRouter(tags=["catalog"])


class FieldPublic(BaseModel):
    path: str
    type: str | list[str] | None
    classification: str | None
    description: str | None


class OfferedProductPublic(BaseModel):
    """The public part of a product's descriptor: what it is, its fields, whom to ask."""

    product: str
    provider: str
    description: str
    version: str
    fields: list[FieldPublic]
    support: Support | None
    #: The caller's contracts on it.
    contracts: list[str]

    @classmethod
    def of(cls, product: Product, contracts: list[str]) -> OfferedProductPublic:
        def field(path: str, node: Any) -> FieldPublic:
            node = node if isinstance(node, dict) else {}
            return FieldPublic(
                path=path,
                type=node.get("type"),
                classification=node.get("x-classification"),
                description=node.get("description"),
            )

        return cls(
            product=product.product,
            provider=product.owner,
            description=product.description,
            version=product.version,
            fields=[field(path, node) for path, node in product.field_schemas()],
            support=product.support,
            contracts=contracts,
        )


class CatalogPublic(BaseModel):
    products: list[OfferedProductPublic]
    #: Every contract naming the caller as consumer, whatever its state.
    contracts: list[ContractPublic]


@router.get("/v1/catalog", responses=errors(401, 503))
def catalog(partner: CurrentPartner, gateway: GatewayDep) -> CatalogPublic:
    """The products the provider offers the caller (those its contracts name) and every
    contract naming the caller, with its state; ``offer`` links a version awaiting the
    caller's signature (drafts the provider has not signed are not shown)."""
    registry = gateway.streams.registry()
    now = gateway.streams.clock()
    contracts: list[ContractPublic] = []
    by_product: dict[str, list[str]] = {}
    for cid in sorted(registry.histories):
        history = registry.histories[cid]
        if history.latest.contract.consumer != partner.org:
            continue
        status = history.status_at(now)
        doc = status.governing or history.latest
        public = ContractPublic.of(doc, status.verdict)
        if awaits(registry, partner.org, history.latest):
            public.offer = f"/v1/contracts/{cid}/signatures"
        elif status.governing is None and status.verdict.state is ContractState.DRAFT:
            continue  # a draft its provider has not signed: not offered to anyone yet
        contracts.append(public)
        by_product.setdefault(doc.contract.product, []).append(cid)
    products = [
        OfferedProductPublic.of(registry.products[name], cids)
        for name, cids in sorted(by_product.items())
        if name in registry.products
    ]
    return CatalogPublic(products=products, contracts=contracts)
