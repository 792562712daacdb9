"""Enforcing a contract's quotas on its streams and pulls, and the token endpoint's rate.

- **Rates** (``records_per_second``, ``bytes_per_second``) throttle. A stream reads batches
  sized to a tenth of a second of its rate, sends them, charges the shared bucket, and waits
  as long as the bucket says before reading more. Nothing is skipped; the cursor stays exact.
- **Daily volume** (``bytes_per_day``, UTC calendar day) is reserved before a batch is sent. A
  batch that does not fit is cut after its last whole record that does; the stream then ends
  with ``quota_exhausted`` and new streams and pulls are refused until the day ends.
- **Concurrency** (``concurrent_streams`` per contract, and per organisation from settings)
  is a lease per stream or pull in progress. ``keep_leases`` renews every lease held in the
  process in one store call every ``RENEW_SECONDS`` (not one call per stream: 10,000 idle
  streams would make 1,000 calls a second to Redis); a replica that dies stops renewing, and
  its slots free up within ``LEASE_SECONDS``.
- **Token requests** are admitted per client id at ``token_requests_per_minute``.

The quotas in force are the governing contract version's, bounded by settings
(``Quotas.within``): an amendment changes the rates and volume of live streams at once;
a lower concurrency applies to streams opened after it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import anyio

from gateway.core.contracts import ContractDocument
from gateway.core.quotas import (
    RATE_BURST_SECONDS,
    PolicyItem,
    QuotaKeys,
    Quotas,
    Rate,
    UtcDay,
    day_window,
    ratelimit_fields,
    remaining,
    seconds_until,
)
from gateway.core.times import rfc3339
from gateway.errors import QuotaExceeded
from gateway.metrics import GatewayMetrics
from gateway.settings import PublishSettings, QuotaSettings

log = logging.getLogger(__name__)

#: A stream's concurrency lease lives this long unless renewed (frees a dead replica's slots).
LEASE_SECONDS = 30.0
RENEW_SECONDS = 10.0
#: Retry-After for a refused stream: no quota says when a slot frees up; this is a polite pace.
CONCURRENCY_RETRY_AFTER = 5
#: Bytes per record assumed before a stream has sent any (to size its first batch).
FIRST_RECORD_BYTES = 512
UNLIMITED_VOLUME = 2**62
#: Bytes of contracts without a daily volume are added to the shared day count this often
#: (they only feed ``/v1/usage``): not a store call per batch of every stream.
VOLUME_COUNT_SECONDS = 1.0
#: Failed logins to the legal pages: 10 a minute per user name and per address, 5 at once.
LOGIN_FAILURES = Rate(10 / 60, burst=5 * 6.0)
#: An address may make this many times a client's token requests (several partners may share
#: one address behind a NAT; one attacker varying client names from it may not).
TOKEN_ADDRESS_FACTOR = 10


class QuotaStore(Protocol):
    """Quota state (``adapters/stores/quotas.py``): in memory, or in Redis across replicas."""

    async def throttle(self, key: str, units: float, rate: Rate) -> float: ...
    async def admit(self, key: str, units: float, rate: Rate) -> float: ...
    async def debt(self, key: str) -> float: ...
    async def reserve(self, key: str, amount: int, limit: int, expires_at: float) -> int: ...
    async def give_back(self, key: str, amount: int) -> None: ...
    async def volume(self, key: str) -> int: ...
    async def lease(self, keys: list[tuple[str, int | None]], holder: str, ttl: float) -> int: ...
    async def release(self, keys: list[str], holder: str) -> None: ...
    async def renew(self, leases: Mapping[str, Sequence[str]], ttl: float) -> None:
        """Extend each holder's leases on its keys by ``ttl`` (never refused)."""

    async def holders(self, key: str) -> int: ...
    async def close(self) -> None: ...


def _records_policy(per_second: float) -> PolicyItem:
    # The draft's quota is an integer per window: 0.5 records/s is 1 record per 2 s.
    if per_second >= 1:
        return PolicyItem("records", round(per_second), 1, vendor_unit="record")
    return PolicyItem("records", 1, round(1 / per_second), vendor_unit="record")


@dataclass(frozen=True)
class ContractUsage:
    contract: str
    version: int
    limits: Quotas
    open_streams: int
    bytes_today: int
    #: ``None`` when the contract has no daily volume.
    bytes_remaining_today: int | None


@dataclass(frozen=True)
class Usage:
    """An organisation's limits and what it used today (UTC), per contract."""

    org: str
    day: str
    resets_at: datetime
    org_concurrent_streams: int | None
    open_streams: int
    contracts: list[ContractUsage]


class QuotaService:
    def __init__(
        self,
        store: QuotaStore,
        rules: QuotaSettings,
        metrics: GatewayMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        publish: PublishSettings | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.publish = publish or PublishSettings()
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self._effective: dict[str, Quotas] = {}
        #: The lease keys of every stream and pull running in this process, by holder.
        self._held: dict[str, list[str]] = {}
        #: Holders that closed while a renewal round was in flight (``None``: no round).
        self._closed_meanwhile: set[str] | None = None
        #: Day volume of contracts without a daily limit, sent here and not yet in the store:
        #: key -> (bytes, when the key may expire).
        self._uncounted: dict[str, tuple[int, float]] = {}
        self._counted_at = monotonic()

    async def count_volume(self, key: str, size: int, expires_at: float) -> None:
        """Count ``size`` bytes of a contract without a daily limit (in the store at most
        ``VOLUME_COUNT_SECONDS`` later)."""
        held, _ = self._uncounted.get(key, (0, expires_at))
        self._uncounted[key] = (held + size, expires_at)
        if self.monotonic() - self._counted_at >= VOLUME_COUNT_SECONDS:
            await self.flush_volume()

    async def flush_volume(self) -> None:
        """Add the volume counted in this process to the store's day counts."""
        uncounted, self._uncounted = self._uncounted, {}
        self._counted_at = self.monotonic()
        for key, (size, expires_at) in uncounted.items():
            await self.store.reserve(key, size, UNLIMITED_VOLUME, expires_at)

    async def keep_leases(self, interval: float = RENEW_SECONDS) -> None:
        """Renew the leases of every stream and pull in this process, all in one store call,
        every ``interval`` seconds (runs for the life of the app)."""
        while True:
            await anyio.sleep(interval)
            await self.renew_held()

    async def renew_held(self) -> None:
        """One round of ``keep_leases`` (also with no stream left: the store may have releases
        to make). A failure is logged and the next round tries again (a lease outlives three
        rounds)."""
        held, self._closed_meanwhile = dict(self._held), set()
        try:
            await self.store.renew(held, LEASE_SECONDS)
        except Exception as exc:  # whatever the store's failure, the answer is the same
            log.warning("renewing %d stream leases failed: %s", len(held), exc)
        finally:
            closed, self._closed_meanwhile = self._closed_meanwhile, None
        # A stream that closed while the round ran may have had its lease renewed after its
        # release (a round of thousands takes a while): release it again.
        for holder in closed & held.keys():
            with contextlib.suppress(Exception):  # it expires by itself in LEASE_SECONDS
                await self.store.release(held[holder], holder)

    def held(self, holder: str, keys: list[str] | None) -> None:
        """Keep ``holder``'s leases renewed (``None``: no longer)."""
        if keys is None:
            self._held.pop(holder, None)
            if self._closed_meanwhile is not None:
                self._closed_meanwhile.add(holder)
        else:
            self._held[holder] = keys

    def effective(self, doc: ContractDocument) -> Quotas:
        quotas = self._effective.get(doc.hash)
        if quotas is None:
            own = doc.contract.quotas or Quotas()
            quotas = own.within(self.rules.defaults, self.rules.ceilings)
            self._effective[doc.hash] = quotas
        return quotas

    def day_key(self, contract_id: str) -> tuple[str, datetime]:
        day, ends = day_window(self.clock())
        return QuotaKeys.volume(contract_id, day), ends

    async def open(self, contract_id: str, org: str, version: ContractDocument) -> StreamQuota:
        """A running stream's or pull's quotas; refuses with ``QuotaExceeded`` first if a
        concurrency slot or the day's volume is not available."""
        quotas = self.effective(version)
        if quotas.bytes_per_day is not None:
            day, ends = self.day_key(contract_id)
            if await self.store.volume(day) >= quotas.bytes_per_day:
                raise self.exhausted(contract_id, quotas, ends)
        holder = uuid.uuid4().hex
        keys = QuotaKeys.leases(contract_id, org)
        full = await self.store.lease(
            list(
                zip(
                    keys,
                    (quotas.concurrent_streams, self.rules.org_concurrent_streams),
                    strict=True,
                )
            ),
            holder,
            LEASE_SECONDS,
        )
        if full:
            self.metrics.quota_refusals.labels("too_many_streams").inc()
            whose = "this contract" if full == 1 else f"organisation {org!r}"
            limit = quotas.concurrent_streams if full == 1 else self.rules.org_concurrent_streams
            raise QuotaExceeded(
                f"{whose} already has {limit} streams open (its concurrency quota)",
                code="too_many_streams",
                retry_after=CONCURRENCY_RETRY_AFTER,
                fields=await self.fields(contract_id, org, quotas),
            )
        stream_quota = StreamQuota(self, contract_id, org, version, holder)
        self.held(holder, list(keys))
        try:
            await stream_quota.start()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream_quota.close()
            raise
        return stream_quota

    def exhausted(self, contract_id: str, quotas: Quotas, ends: datetime) -> QuotaExceeded:
        self.metrics.quota_refusals.labels("quota_exhausted").inc()
        retry_after = seconds_until(ends, self.clock())
        return QuotaExceeded(
            f"the contract's daily volume of {quotas.bytes_per_day} bytes is used up "
            f"until {rfc3339(ends)}",
            code="quota_exhausted",
            retry_after=retry_after,
            fields=ratelimit_fields([(self._daily_policy(quotas), 0, retry_after)]),
        )

    @staticmethod
    def _daily_policy(quotas: Quotas) -> PolicyItem:
        return PolicyItem("daily", quotas.bytes_per_day or 0, 86_400, "content-bytes")

    async def fields(self, contract_id: str, org: str, quotas: Quotas) -> dict[str, str]:
        """``RateLimit-Policy`` and ``RateLimit`` for the caller's quotas on a contract."""
        items: list[tuple[PolicyItem, int, int]] = []
        if quotas.records_per_second is not None:
            debt = await self.store.debt(QuotaKeys.rates(contract_id)[0])
            left, reset = remaining(debt, Rate(quotas.records_per_second))
            items.append((_records_policy(quotas.records_per_second), left, reset))
        if quotas.bytes_per_second is not None:
            debt = await self.store.debt(QuotaKeys.rates(contract_id)[1])
            left, reset = remaining(debt, Rate(quotas.bytes_per_second))
            items.append(
                (PolicyItem("bytes", quotas.bytes_per_second, 1, "content-bytes"), left, reset)
            )
        if quotas.bytes_per_day is not None:
            day, ends = self.day_key(contract_id)
            used = await self.store.volume(day)
            reset = seconds_until(ends, self.clock())
            items.append((self._daily_policy(quotas), quotas.bytes_per_day - used, reset))
        contract_key, org_key = QuotaKeys.leases(contract_id, org)
        for name, key, limit in (
            ("streams", contract_key, quotas.concurrent_streams),
            ("org-streams", org_key, self.rules.org_concurrent_streams),
        ):
            if limit is not None:
                open_now = await self.store.holders(key)
                items.append((PolicyItem(name, limit, None, "concurrency"), limit - open_now, 0))
        return ratelimit_fields(items)

    async def admit_token(self, key: str, *, per_address: bool = False) -> None:
        """Brute-force protection of the token endpoint: a rate per client, and
        ``TOKEN_ADDRESS_FACTOR`` times that per source address (``per_address``)."""
        rules = self.rules
        factor = TOKEN_ADDRESS_FACTOR if per_address else 1
        per_minute = rules.token_requests_per_minute * factor
        rate = Rate(per_minute / 60)
        rate = Rate(rate.per_second, burst=rules.token_burst * factor * rate.interval)
        retry_after = await self.store.admit(QuotaKeys.token(key), 1, rate)
        if retry_after > 0:
            self.metrics.quota_refusals.labels("too_many_requests").inc()
            policy = PolicyItem("token", per_minute, 60, "request")
            wait = max(1, math.ceil(retry_after))
            raise QuotaExceeded(
                f"too many token requests; try again in {wait} s",
                code="too_many_requests",
                retry_after=wait,
                fields=ratelimit_fields([(policy, 0, wait)]),
            )

    async def admit_publish(self, team: str, records: int) -> None:
        """A team's publishing rate (``publish.team_records_per_second``), over all replicas.
        A request at most ``publish.max_records`` long always fits an idle bucket."""
        per_second = self.publish.team_records_per_second
        burst = max(RATE_BURST_SECONDS, self.publish.max_records / per_second)
        retry_after = await self.store.admit(
            QuotaKeys.publish(team), records, Rate(per_second, burst=burst)
        )
        if retry_after > 0:
            self.metrics.quota_refusals.labels("too_many_requests").inc()
            wait = max(1, math.ceil(retry_after))
            policy = PolicyItem("publish", round(per_second), 1, vendor_unit="record")
            raise QuotaExceeded(
                f"team {team} publishes more than {per_second:g} records/s; try again in {wait} s",
                code="too_many_requests",
                retry_after=wait,
                fields=ratelimit_fields([(policy, 0, wait)]),
            )

    async def check_login(self, keys: list[str]) -> None:
        """Before a password is checked: refused (``too_many_requests``) while any of ``keys``
        (the user name, the address) has used up its failures."""
        rate = LOGIN_FAILURES
        for key in keys:
            over = await self.store.debt(QuotaKeys.login(key)) + rate.interval - rate.burst
            if over > 0:
                self.metrics.quota_refusals.labels("too_many_requests").inc()
                wait = max(1, math.ceil(over))
                raise QuotaExceeded(
                    f"too many failed logins; try again in {wait} s",
                    code="too_many_requests",
                    retry_after=wait,
                )

    async def login_failed(self, keys: list[str]) -> None:
        for key in keys:
            await self.store.throttle(QuotaKeys.login(key), 1, LOGIN_FAILURES)

    async def close(self) -> None:
        await self.flush_volume()  # what this process counted and had not stored yet
        await self.store.close()

    async def usage(self, org: str, docs: list[ContractDocument]) -> Usage:
        """The caller's limits and what it used, per contract (``GET /v1/usage``)."""
        now = self.clock()
        day, ends = day_window(now)
        contracts = []
        for doc in docs:
            contract_id = doc.contract.contract
            quotas = self.effective(doc)
            contract_key, _ = QuotaKeys.leases(contract_id, org)
            volume_key = QuotaKeys.volume(contract_id, day)
            used = await self.store.volume(volume_key) + self._uncounted.get(volume_key, (0,))[0]
            limit = quotas.bytes_per_day
            contracts.append(
                ContractUsage(
                    contract=contract_id,
                    version=doc.contract.version,
                    limits=quotas,
                    open_streams=await self.store.holders(contract_key),
                    bytes_today=used,
                    bytes_remaining_today=None if limit is None else max(0, limit - used),
                )
            )
        return Usage(
            org=org,
            day=day,
            resets_at=ends,
            org_concurrent_streams=self.rules.org_concurrent_streams,
            open_streams=await self.store.holders(QuotaKeys.org_leases(org)),
            contracts=contracts,
        )


class StreamQuota:
    """The quotas of one running stream or pull (see the module docstring)."""

    def __init__(
        self,
        service: QuotaService,
        contract_id: str,
        org: str,
        version: ContractDocument,
        holder: str,
    ) -> None:
        self._service = service
        self._store = service.store
        self._monotonic = service.monotonic
        self.contract_id = contract_id
        self.org = org
        #: The contract version whose quotas apply (the stream moves it on an amendment).
        self.version = version
        self.quotas: Quotas = service.effective(version)
        self._holder = holder
        self._rate_keys = QuotaKeys.rates(contract_id)
        self._lease_keys = QuotaKeys.leases(contract_id, org)
        self._resume_at = 0.0  # monotonic
        self._records = 0
        self._bytes = 0
        self._reserved = ("", "")  # (volume key, day) of the last reservation
        self._day = UtcDay()
        #: Bytes sent per UTC day (the unit of the daily quota), for the ledger.
        self.bytes_by_day: dict[str, int] = {}
        self._closed = False
        #: Set when the day's volume ran out: the stream ends, ``retry_after`` seconds to wait.
        self.exhausted: QuotaExceeded | None = None
        # The contract's metric series, looked up once rather than per batch.
        metrics = service.metrics
        self._open = metrics.open_streams.labels(contract_id)
        self._records_sent = metrics.delivered_records.labels(contract_id)
        self._bytes_sent = metrics.delivered_bytes.labels(contract_id)
        self._throttled = metrics.throttled_seconds.labels(contract_id)
        self._open.inc()

    def adopt(self, version: ContractDocument) -> None:
        """A new version governs the stream: its rates and volume apply from now."""
        self.version = version
        self.quotas = self._service.effective(version)

    async def start(self) -> None:
        """Wait for what other streams of the contract already sent (the shared buckets)."""
        quotas = self.quotas
        wait = 0.0
        for key, per_second in (
            (self._rate_keys[0], quotas.records_per_second),
            (self._rate_keys[1], quotas.bytes_per_second),
        ):
            if per_second is not None:
                wait = max(wait, await self._store.debt(key) - RATE_BURST_SECONDS)
        self._resume_at = self._monotonic() + max(0.0, wait)

    def delay(self) -> float:
        """Seconds to wait before reading more (0: go on)."""
        return max(0.0, self._resume_at - self._monotonic())

    def batch_size(self, most: int) -> int:
        """Records to read next: about one burst (a tenth of a second) of the rates."""
        quotas = self.quotas
        size = most
        if quotas.records_per_second is not None:
            size = min(size, math.ceil(quotas.records_per_second * RATE_BURST_SECONDS))
        if quotas.bytes_per_second is not None:
            per_record = self._bytes / self._records if self._records else FIRST_RECORD_BYTES
            size = min(size, int(quotas.bytes_per_second * RATE_BURST_SECONDS / per_record))
        return max(1, size)

    async def reserve(self, size: int) -> int:
        """Bytes of the day's volume granted for a batch of ``size`` bytes (all, or less when
        the day's volume runs out: the caller cuts the batch to fit and ends)."""
        limit = self.quotas.bytes_per_day
        now = self._service.clock()
        day, ends = self._day.of(now)
        key, reserved_day = self._reserved
        if reserved_day != day:  # the first reservation, or a new day
            key = QuotaKeys.volume(self.contract_id, day)
        self._reserved = (key, day)  # settled against the same day, even across midnight
        if limit is None:  # nothing to refuse: counted in the process, stored once a second
            await self._service.count_volume(key, size, ends.timestamp() + 3600)
            return size
        granted = await self._store.reserve(key, size, limit, ends.timestamp() + 3600)
        if granted < size:
            self.exhausted = self._service.exhausted(self.contract_id, self.quotas, ends)
        return granted

    async def settle(self, granted: int, records: int, size: int) -> None:
        """``records`` and ``size`` bytes went out: return unused volume, charge the rates.

        Once a record does not fit, the rest of the day's volume is kept as used: the day is
        over for the contract, and new streams are refused until the next one."""
        key, day = self._reserved
        if granted > size and self.exhausted is None:
            await self._store.give_back(key, granted - size)
        self._records += records
        self._bytes += size
        if size:
            self.bytes_by_day[day] = self.bytes_by_day.get(day, 0) + size
        self._records_sent.inc(records)
        self._bytes_sent.inc(size)
        quotas = self.quotas
        wait = 0.0
        if quotas.records_per_second is not None and records:
            rate = Rate(quotas.records_per_second)
            wait = await self._store.throttle(self._rate_keys[0], records, rate)
        if quotas.bytes_per_second is not None and size:
            rate = Rate(quotas.bytes_per_second)
            wait = max(wait, await self._store.throttle(self._rate_keys[1], size, rate))
        if wait > 0:
            self._throttled.inc(wait)
        self._resume_at = self._monotonic() + wait

    async def fields(self) -> dict[str, str]:
        return await self._service.fields(self.contract_id, self.org, self.quotas)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._open.dec()
        self._service.held(self._holder, None)
        await self._store.release(self._lease_keys, self._holder)
        await self._service.flush_volume()
