"""API schemas, named by role and kept apart from the domain models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gateway.core.contracts import ContractDocument, FieldRule, Product, Support, Verdict
from gateway.core.quotas import Quotas
from gateway.core.service_levels import DayReport, ServiceLevels
from gateway.services.consumption import ConsumerView
from gateway.services.publishing import Published
from gateway.services.quotas import Usage


class ProductPublic(BaseModel):
    """A data product's descriptor as its owning team sees it."""

    product: str
    owner: str
    team: str
    topic: str
    description: str
    version: str
    format: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    retention: str | None
    support: Support | None
    dead_letter_topic: str

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    @classmethod
    def of(cls, p: Product) -> ProductPublic:
        return cls(
            product=p.product,
            owner=p.owner,
            team=p.team,
            topic=p.topic,
            description=p.description,
            version=p.version,
            format=p.format.value,
            schema=p.json_schema,
            retention=p.retention,
            support=p.support,
            dead_letter_topic=p.dlq_topic,
        )


class HourPublic(BaseModel):
    hour: datetime
    records: int
    bytes: int
    lag: int | None


class ConsumerPublic(BaseModel):
    """One contract on the product: the partner, its terms' state, its use and its lag."""

    contract: str
    version: int
    partner: str
    state: str
    valid_from: datetime
    valid_until: datetime
    live_streams: int
    last_delivery: datetime | None
    records_today: int
    bytes_today: int
    bytes_per_day: int | None
    bytes_remaining_today: int | None
    #: Records between the partner's last position and the log end (``None``: never consumed).
    lag: int | None
    #: The partner's last position per partition (the offset its cursor resumes at).
    positions: dict[int, int]
    #: The last 24 hours, oldest first: records and bytes delivered, lag measured.
    hours: list[HourPublic]

    @classmethod
    def of(cls, view: ConsumerView) -> ConsumerPublic:
        return cls.model_validate(view, from_attributes=True)


class ConsumersPublic(BaseModel):
    product: str
    topic: str
    #: Per partition, the log end now.
    log_end: dict[int, int]
    consumers: list[ConsumerPublic]


class ProductsPublic(BaseModel):
    products: list[ProductPublic]


#: One record of a publish request (JSON array items, or NDJSON lines).
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["value"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": ["string", "null"]},
        "value": {"description": "Validated against the product's schema"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


class PositionPublic(BaseModel):
    partition: int
    offset: int


class PublishedPublic(BaseModel):
    """Where each record of a publish request was written, in request order."""

    product: str
    topic: str
    schema_version: str
    records: list[PositionPublic]

    @staticmethod
    def encode(published: Published) -> bytes:
        """The answer's JSON, written directly: a model per record position would cost more
        than producing the record (measured, ``bench/publish.py``)."""
        p = published.product
        return orjson.dumps(
            {
                "product": p.product,
                "topic": p.topic,
                "schema_version": p.version,
                "records": [{"partition": a, "offset": b} for a, b in published.positions],
            }
        )


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
    #: In the catalog: where the newest version awaiting the caller's signature is offered.
    offer: str | None = None

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


class FreshnessMeasured(BaseModel):
    #: Upper bounds of the median and the 99th percentile age (``">300"``: beyond 300 s).
    p50_seconds: float | str | None
    p99_seconds: float | str | None
    #: Share of the counted records within the objective's seconds.
    within_target: float | None
    #: ``None``: no objective, or nothing measured yet.
    met: bool | None


class AvailabilityMeasured(BaseModel):
    up_seconds: float
    down_seconds: float
    ratio: float | None
    met: bool | None


class ServiceLevelDay(BaseModel):
    day: str
    #: Records counted against freshness.
    records: int
    #: Records not counted: you were away when they were produced, or that far behind.
    released: int
    freshness: FreshnessMeasured
    availability: AvailabilityMeasured


class ServiceLevelsPublic(BaseModel):
    contract: str
    #: What the contract (or, where it is silent, its product) promises.
    objectives: ServiceLevels
    #: UTC days, oldest first; the last is today, so far.
    days: list[ServiceLevelDay]
    #: The objectives today's figures miss.
    breached: list[str]


def service_levels_public(
    contract: str, levels: ServiceLevels, reports: list[DayReport]
) -> ServiceLevelsPublic:
    return ServiceLevelsPublic(
        contract=contract,
        objectives=levels,
        days=[ServiceLevelDay.model_validate(r.as_json()) for r in reports],
        breached=reports[-1].breached if reports else [],
    )
