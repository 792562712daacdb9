"""The composition root: the running gateway's services, built once from settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.adapters.anchors import HttpAnchor
from gateway.adapters.kafka.admin import check_topics, needed_topics
from gateway.adapters.kafka.ledger import KafkaLedger, KafkaLedgerFollower, KafkaLedgerReader
from gateway.adapters.kafka.publisher import KafkaPublisher
from gateway.adapters.kafka.schema_registry import ProductFormats
from gateway.adapters.kafka.shared import SharedReaders
from gateway.adapters.kafka.source import KafkaRecordSource
from gateway.adapters.oidc import NoIdentityProvider, OidcTokenVerifier
from gateway.adapters.stores.consumption import MemoryConsumptionStore, RedisConsumptionStore
from gateway.adapters.stores.contracts_dir import ContractsDirectory
from gateway.adapters.stores.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore
from gateway.adapters.stores.keys import FileDataKeyStore, key_source
from gateway.adapters.stores.ledger_index import LedgerIndex
from gateway.adapters.stores.quotas import MemoryQuotaStore, RedisQuotaStore, ResilientQuotaStore
from gateway.adapters.stores.replays import MemoryReplayCache, SharedReplayCache
from gateway.adapters.stores.state_dir import check_writable, load_secrets
from gateway.core.archive import ContractArchive
from gateway.core.cursor import CursorCodec
from gateway.core.jose import CompactSigner
from gateway.core.ledger import timestamp
from gateway.core.receipts import RECEIPT_TYPE, ReceiptPolicy
from gateway.errors import LedgerUnavailable
from gateway.metrics import GatewayMetrics
from gateway.services.authorization import (
    AccessTokenVerifier,
    PartnerAuthorizationServer,
    PartnerClient,
    Replays,
)
from gateway.services.consumption import ConsumptionTracker, EndsReader
from gateway.services.container import Gateway, learn_from_ledger
from gateway.services.datakeys import DataKeyService
from gateway.services.observer import ContractObserver
from gateway.services.offers import Countersigning
from gateway.services.publishing import IdempotencyStore, PublishService
from gateway.services.quotas import QuotaService, QuotaStore
from gateway.services.receipts import Acknowledgements
from gateway.services.service_levels import (
    SUMMARY_TYPE,
    ServiceLevelStore,
    ServiceLevelTracker,
)
from gateway.services.streams import SourceFactory, StreamLimits, StreamService
from gateway.settings import Settings

__all__ = ["Gateway", "build_gateway"]

log = logging.getLogger(__name__)


def quota_store(settings: Settings, metrics: GatewayMetrics) -> QuotaStore:
    """Redis shared by the replicas when configured, else this process's memory."""
    if settings.redis.url is None:
        return MemoryQuotaStore()
    redis = RedisQuotaStore.from_url(
        settings.redis.url.get_secret_value(), settings.redis.timeout_seconds
    )
    return ResilientQuotaStore(redis, settings.quotas.replicas, metrics.quota_store_degraded)


def _nothing() -> None:
    return None


def _ends_through(metadata: Callable[[str], KafkaRecordSource]) -> EndsReader:
    def ends_of(topic: str) -> dict[int, tuple[int, int]]:
        source = metadata(topic)
        return source.bounds(source.partitions())

    return ends_of


def _no_ends(topic: str) -> dict[int, tuple[int, int]]:
    return {}


def _ledger_topic_verdict(settings: Settings) -> tuple[bool, str | None]:
    """Whether the ledger topic could be checked, and why it cannot hold the ledger if not."""
    report = check_topics(settings.kafka, needed_topics(settings.ledger_topic, ()), timeout=5)
    return report.unreachable is None, report.problem


def build_gateway(settings: Settings, sources: SourceFactory | None = None) -> Gateway:
    """The gateway; streams read through the process's shared readers unless ``sources`` says
    otherwise (a consumer per stream, in the benchmark that compares the two)."""
    metrics = GatewayMetrics()
    secrets_dir = settings.secrets_dir or settings.state_dir
    check_writable(settings.state_dir)
    secrets = load_secrets(
        secrets_dir, create=settings.secrets_dir is None, kek=not settings.key_source
    )
    ledger = KafkaLedger(
        settings.kafka.librdkafka_config("ledger"),
        settings.ledger_topic,
        settings.replica,
        sign=CompactSigner(secrets.ledger_key),
        checkpoint_seconds=settings.ledger_checkpoint_seconds,
        on_written=metrics.ledger_write_seconds.observe,
        on_failed=metrics.ledger_failures.inc,
    )
    metrics.watch_ledger(ledger)

    def token_issued(client: PartnerClient) -> None:
        details = {"client": client.client_id, "org": client.org, "method": client.auth_method}
        ledger.record(timestamp(datetime.now(UTC)), "token_issued", details)

    archive = ContractArchive()
    follower = KafkaLedgerFollower(
        settings.kafka.librdkafka_config("ledger"), settings.ledger_topic
    )
    # A replica started now knows the versions and countersignatures the others verified;
    # if Kafka does not answer, contracts needing them stay refused until the watcher learns.
    index = LedgerIndex()
    learn_from_ledger(archive, index, follower, max(settings.startup_wait_seconds, 1.0))
    contracts = ContractsDirectory(settings.contracts_dir, settings.keys_dir)
    registry = contracts.load(gateway_org=settings.org, now=datetime.now(UTC), archive=archive)
    # The topics it needs, checked (and the ledger's created: here only) before the ledger
    # writes: a ledger topic that deletes entries, or that the gateway's principal may not use,
    # stops the start.
    topics = check_topics(
        settings.kafka, needed_topics(settings.ledger_topic, registry.products.values()), timeout=5
    )
    if topics.problem is not None:
        raise LedgerUnavailable(topics.problem)
    if topics.unreachable is not None:  # checked once Kafka answers; not ready until then
        ledger.check_topic_when_reachable(lambda: _ledger_topic_verdict(settings))
    ledger.start()
    issuer = settings.issuer()
    quotas = QuotaService(
        quota_store(settings, metrics), settings.quotas, metrics, publish=settings.publish
    )
    redis = settings.redis
    replays: Replays
    closers: list[Callable[[], None]] = []
    idempotency: IdempotencyStore
    consumption_store: ServiceLevelStore
    if redis.url is not None:
        consumption_store = RedisConsumptionStore.from_url(
            redis.url.get_secret_value(), redis.timeout_seconds
        )
        idempotency = RedisIdempotencyStore.from_url(
            redis.url.get_secret_value(), redis.timeout_seconds
        )
        shared = SharedReplayCache.from_url(redis.url.get_secret_value(), redis.timeout_seconds)
        replays = shared
        closers.append(shared.close)
    else:
        replays = MemoryReplayCache()
        idempotency = MemoryIdempotencyStore()
        consumption_store = MemoryConsumptionStore()
    consumption = ConsumptionTracker(
        consumption_store,
        on_lag=metrics.set_lag,
    )
    service_levels = ServiceLevelTracker(
        consumption_store,
        registry=lambda: gateway.registry,
        ledger=ledger,
        sign=CompactSigner(secrets.ledger_key, typ=SUMMARY_TYPE),
        on_breach=lambda contract, objective, on: metrics.service_level_breached.labels(
            contract, objective
        ).set(1 if on else 0),
        check_seconds=settings.service_level_check_seconds,
    )
    metrics.watch_service_levels(service_levels)
    closers.append(idempotency.close)
    publisher = KafkaPublisher(
        settings.kafka.librdkafka_config("publish"),
        delivery_timeout=settings.publish.delivery_timeout_seconds,
    )
    closers.append(publisher.close)
    source_stats: Callable[[], dict[str, int]] = dict
    wake: Callable[[], None] = _nothing
    formats = ProductFormats(settings, lambda: gateway.registry)
    ends_of: EndsReader = _no_ends  # a consumer per stream (a benchmark): no lag measured
    if sources is None:
        readers = SharedReaders(
            settings.kafka.librdkafka_config("streams"),
            window_bytes=settings.reading.window_bytes,
            catch_up_readers=settings.reading.catch_up_readers,
            decoders=formats.decoder,
        )
        sources, source_stats, wake = readers.source, readers.stats, readers.wake
        metrics.watch_readers(readers.stats)
        ends_of = _ends_through(readers.metadata)
        closers.append(readers.close)
    team_tokens = OidcTokenVerifier(settings.oidc) if settings.oidc.issuer else NoIdentityProvider()
    closers.append(team_tokens.close)
    # Services read the registry through the container, so a reload swaps it for all of them.
    gateway = Gateway(
        settings=settings,
        registry=registry,
        contracts=contracts,
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
        team_tokens=team_tokens,
        consumption=consumption,
        ends_of=ends_of,
        publishing=PublishService(
            registry=lambda: gateway.registry,
            sink=publisher,
            idempotency=idempotency,
            window_seconds=settings.publish.idempotency_window_seconds,
            encoders=formats.encoder,
            on_outcome=lambda product, outcome, count: metrics.published_records.labels(
                product, outcome
            ).inc(count),
        ),
        streams=StreamService(
            registry=lambda: gateway.registry,
            sources=sources,
            codec=CursorCodec(secrets.cursor_secret, secrets.cursor_verifying),
            limits=StreamLimits(max_streams=settings.reading.max_streams),
            ledger=ledger,
            quotas=quotas,
            datakeys=DataKeyService(
                FileDataKeyStore(
                    settings.state_dir / "data-keys",
                    key_source(settings.key_source, secrets_dir),
                ),
                max_records=settings.data_key_max_records,
                max_age=settings.data_key_max_age_seconds,
            ),
            pseudonym_secret=secrets.pseudonym_secret,
            source_stats=source_stats,
            wake=wake,
            on_delivery=consumption.note,
            service_levels=service_levels,
            receipts=ReceiptPolicy(settings.receipt_records, settings.receipt_seconds),
            sign_receipt=CompactSigner(secrets.ledger_key, typ=RECEIPT_TYPE),
        ),
        ledger=ledger,
        ledger_reader=KafkaLedgerReader(
            settings.kafka.librdkafka_config("ledger"), settings.ledger_topic
        ),
        observer=ContractObserver(ledger, archive),
        archive=archive,
        index=index,
        follower=follower,
        offers=Countersigning(
            registry=lambda: gateway.registry,
            archive=archive,
            ledger=ledger,
            reload=lambda: gateway.reload(),
            clock=lambda: gateway.clock(),
        ),
        service_levels=service_levels,
        acknowledgements=Acknowledgements(
            registry=lambda: gateway.registry,
            gateway_keys=secrets.ledger_keys,
            ledger=ledger,
            clock=lambda: gateway.clock(),
        ),
        quotas=quotas,
        metrics=metrics,
        closers=closers,
        ledger_public_jwks=list(secrets.ledger_keys.as_dict(private=False)["keys"]),
        anchors=[HttpAnchor(url) for url in settings.anchors],
    )
    gateway.observe()
    return gateway
