"""API schemas, named by role and kept apart from the domain models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from gateway.core.contracts import ContractDocument, FieldRule, Verdict


class ContractPublic(BaseModel):
    contract: str
    version: int
    provider: str
    consumer: str
    product: str
    purpose: str
    valid_from: datetime
    valid_until: datetime
    fields: dict[str, FieldRule]
    filter: str | None = None
    state: str
    hash: str

    @classmethod
    def of(cls, doc: ContractDocument, verdict: Verdict) -> ContractPublic:
        c = doc.contract
        return cls(
            contract=c.contract,
            version=c.version,
            provider=c.provider,
            consumer=c.consumer,
            product=c.product,
            purpose=c.purpose,
            valid_from=c.valid_from,
            valid_until=c.valid_until,
            fields=c.fields,
            filter=c.filter,
            state=verdict.reason,
            hash=doc.hash,
        )


class ContractsPublic(BaseModel):
    contracts: list[ContractPublic]
