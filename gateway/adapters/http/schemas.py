"""API schemas, named by role and kept apart from the domain models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from gateway.core.contracts import ContractDocument, FieldRule, Verdict
from gateway.core.quotas import Quotas
from gateway.services.quotas import Usage


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


class ContractUsagePublic(BaseModel):
    open_streams: int
    bytes_today: int
    bytes_remaining_today: int | None


class ContractLimitsPublic(BaseModel):
    contract: str
    version: int
    limits: Quotas
    usage: ContractUsagePublic


class OrgLimitsPublic(BaseModel):
    concurrent_streams: int | None


class UsagePublic(BaseModel):
    organisation: str
    day: str
    resets_at: datetime
    limits: OrgLimitsPublic
    open_streams: int
    contracts: list[ContractLimitsPublic]

    @classmethod
    def of(cls, usage: Usage) -> UsagePublic:
        return cls(
            organisation=usage.org,
            day=usage.day,
            resets_at=usage.resets_at,
            limits=OrgLimitsPublic(concurrent_streams=usage.org_concurrent_streams),
            open_streams=usage.open_streams,
            contracts=[
                ContractLimitsPublic(
                    contract=c.contract,
                    version=c.version,
                    limits=c.limits,
                    usage=ContractUsagePublic(
                        open_streams=c.open_streams,
                        bytes_today=c.bytes_today,
                        bytes_remaining_today=c.bytes_remaining_today,
                    ),
                )
                for c in usage.contracts
            ],
        )
