"""The composition root: the running gateway's services, built once from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.adapters.ledger.kafka import KafkaLedger, read_entries
from gateway.adapters.stores.keys import DataKeyStore, key_source
from gateway.adapters.stores.quotas import MemoryQuotaStore, RedisQuotaStore, ResilientQuotaStore
from gateway.adapters.stores.replays import SharedReplayCache
from gateway.adapters.stores.state_dir import load_or_create
from gateway.core.cursor import CursorCodec
from gateway.core.ledger import timestamp
from gateway.services.authorization import (
    AccessTokenVerifier,
    PartnerAuthorizationServer,
    PartnerClient,
)
from gateway.services.datakeys import DataKeyService
from gateway.services.observer import ContractObserver
from gateway.services.quotas import QuotaService, QuotaStore
from gateway.services.registry import Registry, load_registry
from gateway.services.streams import SourceFactory, StreamLimits, StreamService
from gateway.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    settings: Settings
    registry: Registry
    authorization: PartnerAuthorizationServer
    tokens: AccessTokenVerifier
    streams: StreamService
    ledger: KafkaLedger
    observer: ContractObserver
    quotas: QuotaService
    replays: SharedReplayCache | None = None

    def reload(self) -> None:
        """Read contracts and keys again and swap them in for every service at once."""
        self.registry = read_registry(self.settings)
        log.info("contracts reloaded: %d contracts", len(self.registry.histories))
        self.observe()

    def observe(self) -> None:
        self.observer.observe(self.registry, datetime.now(UTC))

    def close(self) -> None:
        self.ledger.close()
        if self.replays is not None:
            self.replays.close()

    def ledger_entries(self) -> list[dict[str, Any]]:
        """Everything in the ledger topic (blocking: call from a worker thread)."""
        return list(
            read_entries(self.settings.kafka.librdkafka_config(), self.settings.ledger_topic)
        )

    def watched(self) -> list[Path]:
        contracts = self.settings.contracts_dir
        return [contracts, contracts / "products", self.settings.keys_dir]


def read_registry(settings: Settings) -> Registry:
    return load_registry(
        settings.contracts_dir, settings.keys_dir, gateway_org=settings.org, now=datetime.now(UTC)
    )


def quota_store(settings: Settings) -> QuotaStore:
    """Redis shared by the replicas when configured, else this process's memory."""
    if settings.redis.url is None:
        return MemoryQuotaStore()
    redis = RedisQuotaStore.from_url(
        settings.redis.url.get_secret_value(), settings.redis.timeout_seconds
    )
    return ResilientQuotaStore(redis, settings.quotas.replicas)


def build_gateway(settings: Settings, sources: SourceFactory) -> Gateway:
    secrets = load_or_create(settings.state_dir)
    ledger = KafkaLedger(
        settings.kafka.librdkafka_config(), settings.ledger_topic, settings.replica
    )
    ledger.start()

    def token_issued(client: PartnerClient) -> None:
        details = {"client": client.client_id, "org": client.org, "method": client.auth_method}
        ledger.record(timestamp(datetime.now(UTC)), "token_issued", details)

    registry = read_registry(settings)
    issuer = settings.issuer()
    quotas = QuotaService(quota_store(settings), settings.quotas)
    redis = settings.redis
    replays = (
        SharedReplayCache.from_url(redis.url.get_secret_value(), redis.timeout_seconds)
        if redis.url is not None
        else None
    )
    # Services read the registry through the container, so a reload swaps it for all of them.
    gateway = Gateway(
        settings=settings,
        registry=registry,
        authorization=PartnerAuthorizationServer(
            issuer=issuer,
            signing_keys=secrets.signing_keys,
            token_lifetime=settings.token_lifetime_seconds,
            assertion_max_lifetime=settings.assertion_max_lifetime_seconds,
            org_keys=lambda: gateway.registry.keys,
            registered=settings.clients,
            on_issued=token_issued,
            replays=replays,
        ),
        tokens=AccessTokenVerifier(issuer, secrets.signing_keys),
        streams=StreamService(
            registry=lambda: gateway.registry,
            sources=sources,
            codec=CursorCodec(secrets.cursor_secret),
            limits=StreamLimits(heartbeat_seconds=settings.heartbeat_seconds),
            ledger=ledger,
            quotas=quotas,
            datakeys=DataKeyService(
                DataKeyStore(
                    settings.state_dir / "data-keys",
                    key_source(settings.key_source, settings.state_dir),
                ),
                max_records=settings.data_key_max_records,
                max_age=settings.data_key_max_age_seconds,
            ),
            pseudonym_secret=secrets.pseudonym_secret,
        ),
        ledger=ledger,
        observer=ContractObserver(ledger),
        quotas=quotas,
        replays=replays,
    )
    gateway.observe()
    return gateway
