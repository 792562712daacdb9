"""The services of one running gateway, as the HTTP adapter and the entry points use them.

``bootstrap.build_gateway`` builds it from settings and the adapters; nothing here knows which
adapters those are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.core.archive import ContractArchive
from gateway.core.identity import TeamMember
from gateway.core.ledger import timestamp
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics
from gateway.services.anchoring import CheckpointAnchor
from gateway.services.authorization import AccessTokenVerifier, PartnerAuthorizationServer
from gateway.services.consumption import ConsumptionTracker, EndsReader
from gateway.services.ledger import Ledger
from gateway.services.observer import ContractObserver
from gateway.services.offers import Countersigning
from gateway.services.products import keep_compatible_products
from gateway.services.publishing import PublishService
from gateway.services.quotas import QuotaService
from gateway.services.receipts import Acknowledgements
from gateway.services.registry import Registry
from gateway.services.report import Delivery
from gateway.services.service_levels import ServiceLevelTracker
from gateway.services.streams import StreamService
from gateway.settings import Settings

log = logging.getLogger(__name__)

#: How long one read of the ledger by the follower may take.
FOLLOW_TIMEOUT_SECONDS = 5.0


class DeliveryIndex(Protocol):
    """The ledger's deliveries, indexed for legal's pages (``adapters/stores/ledger_index.py``)."""

    def add_all(self, entries: Iterable[Mapping[str, Any]]) -> None: ...
    def deliveries(self, contract: str, *, offset: int = 0, limit: int = 50) -> list[Delivery]: ...
    def count(self, contract: str) -> int: ...
    def totals_by_version(self, contract: str) -> dict[str, dict[str, int]]: ...
    def by_day(self, contract: str) -> dict[str, tuple[int, int]]: ...
    def version_numbers(self, contract: str) -> dict[str, int]: ...


def learn_from_ledger(
    archive: ContractArchive, index: DeliveryIndex, follower: LedgerFollower, timeout: float
) -> None:
    """What the ledger says since the last read: about contracts, into ``archive``; about
    deliveries, into ``index``. If Kafka does not answer, what was learned stays and the next
    read tries again."""
    try:
        entries = follower.read(timeout)
    except GatewayError as exc:
        log.warning("cannot follow the ledger now: %s", exc.detail)
        return
    archive.learn_all(entries)
    index.add_all(entries)


class ContractSource(Protocol):
    """Where contracts, products and keys come from (``adapters/stores/contracts_dir.py``)."""

    def load(
        self,
        *,
        gateway_org: str | None,
        now: datetime,
        settle_products: Callable[[Registry], None] | None = None,
        archive: ContractArchive | None = None,
    ) -> Registry: ...
    def fingerprint(self) -> Hashable: ...


class TeamTokenVerifier(Protocol):
    """Checks internal callers' tokens from the company's identity provider (``adapters/oidc``)."""

    def verify(self, token: str) -> TeamMember:
        """The caller, or ``AuthenticationFailed``. May block to fetch the provider's keys."""


class LedgerWriter(Ledger, Protocol):
    #: The newest checkpoint Kafka acknowledged (its compact JWS).
    latest_checkpoint: str | None

    def wait_ready(self, timeout: float) -> bool: ...
    def close(self) -> None: ...


class LedgerFollower(Protocol):
    """Reads the ledger as it grows (``adapters/kafka/ledger.py``): what other replicas record."""

    def read(self, timeout: float) -> Sequence[Mapping[str, Any]]:
        """Entries written since the last read, up to the end as it is now. Blocking;
        ``GatewayError`` when it cannot."""


class LedgerReader(Protocol):
    def entries(self) -> list[Mapping[str, Any]]:
        """Every entry in the ledger, in the order written. Blocking."""


@dataclass
class Gateway:
    settings: Settings
    registry: Registry
    contracts: ContractSource
    authorization: PartnerAuthorizationServer
    tokens: AccessTokenVerifier
    team_tokens: TeamTokenVerifier
    publishing: PublishService
    consumption: ConsumptionTracker
    #: Per partition of a topic: (first offset, log end). Blocking.
    ends_of: EndsReader
    streams: StreamService
    ledger: LedgerWriter
    ledger_reader: LedgerReader
    observer: ContractObserver
    #: Versions and countersignatures the gateway verified, beyond the files (from the ledger).
    archive: ContractArchive
    #: The ledger's deliveries, for legal's pages (fed with the archive).
    index: DeliveryIndex
    follower: LedgerFollower
    offers: Countersigning
    #: Freshness and availability per contract and day (``services/service_levels.py``).
    service_levels: ServiceLevelTracker
    #: Partners' acknowledgements of the receipts their streams carried.
    acknowledgements: Acknowledgements
    quotas: QuotaService
    metrics: GatewayMetrics
    #: Called at shutdown, after the ledger is closed (Redis clients and the like).
    closers: list[Callable[[], None]] = field(default_factory=list)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    #: The public keys of the ledger's checkpoints and receipts (the first signs, all verify),
    #: published beside the token keys.
    ledger_public_jwks: list[dict[str, Any]] = field(default_factory=list)
    #: Where checkpoints are anchored outside the ledger (``services/anchoring.py``).
    anchors: list[CheckpointAnchor] = field(default_factory=list)
    _changing: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _following: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def servable(self) -> bool:
        """Whether contracts in force can be served now (the ledger takes writes)."""
        return self.ledger.problem() is None and not self.streams.stopping

    def load(self) -> Registry:
        return self.contracts.load(
            gateway_org=self.settings.org, now=self.clock(), archive=self.archive
        )

    def follow(self) -> None:
        """Learn what the ledger says since the last call (other replicas' countersignatures,
        versions they verified, every delivery). One read at a time. Blocking."""
        with self._following:
            learn_from_ledger(self.archive, self.index, self.follower, FOLLOW_TIMEOUT_SECONDS)

    def fingerprint(self) -> Hashable:
        """Changes when the contracts, products or keys change, or the archive learns."""
        return (self.contracts.fingerprint(), self.archive.revision)

    def reload(self) -> None:
        """Read contracts and keys again and swap them in for every service at once. A
        product whose new schema would break a contract keeps the version in force. One
        reload at a time (the watcher, a countersignature): a slower one never replaces a
        newer registry with an older one."""
        with self._changing:
            self._reload()

    def _reload(self) -> None:
        previous, now = self.registry, self.clock()
        self.registry = self.contracts.load(
            gateway_org=self.settings.org,
            now=now,
            settle_products=lambda loaded: keep_compatible_products(previous, loaded, now),
            archive=self.archive,
        )
        log.info("contracts reloaded: %d contracts", len(self.registry.histories))
        self.observe()

    def observe(self) -> None:
        with self._changing:
            self.observer.observe(self.registry, self.clock())

    def latest_checkpoint(self) -> str | None:
        return self.ledger.latest_checkpoint

    def anchored(self, anchor: str, checkpoint: str) -> None:
        """Record that ``anchor`` has ``checkpoint``."""
        details = {"anchor": anchor, "checkpoint": checkpoint}
        self.ledger.record(timestamp(self.clock()), "anchored", details)

    def close(self) -> None:
        self.ledger.close()
        for close in self.closers:
            close()

    def ledger_entries(self) -> list[Mapping[str, Any]]:
        """Everything in the ledger (blocking: call from a worker thread)."""
        return self.ledger_reader.entries()
