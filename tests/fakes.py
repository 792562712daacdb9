"""In-memory fakes at the services' Protocol seams, for unit tests of the services only.

They keep the contract of the Protocol they stand in for (``RecordSource``, ``Ledger``,
``DataKeyStore``) and nothing more; the adapters themselves are tested against the real thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.core.cursor import OFFSET_BEGINNING
from gateway.errors import GatewayError
from gateway.services.datakeys import StoredKey


@dataclass(frozen=True)
class FakeRecord:
    """A Kafka record as the encoder reads it (``SourceRecord``)."""

    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _timestamp_ms: int = 1_795_000_000_000

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return 1, self._timestamp_ms

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


class Clocks:
    """Wall and monotonic time that move only when told (or when a fake waits)."""

    def __init__(self, now: datetime = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)) -> None:
        self.now = now
        self.elapsed = 0.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.elapsed += seconds


class FakeTopic:
    """A topic's partitions as lists of record values (offset = index)."""

    def __init__(self, partitions: int, clocks: Clocks) -> None:
        self.logs: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        #: Per partition, the oldest offset still kept (retention deleted what is before it).
        self.oldest: dict[int, int] = dict.fromkeys(range(partitions), 0)
        self.clocks = clocks
        self.sources: list[FakeRecordSource] = []
        #: Raised by every fetch while set (a deleted topic, a lost position).
        self.failure: GatewayError | None = None

    def append(self, partition: int, *values: bytes) -> None:
        self.logs[partition].extend(values)

    def source(self, _topic: str) -> FakeRecordSource:
        source = FakeRecordSource(self)
        self.sources.append(source)
        return source


class FakeRecordSource:
    """``RecordSource`` over a ``FakeTopic``. An empty fetch waits its timeout on the clocks."""

    def __init__(self, topic: FakeTopic) -> None:
        self._topic = topic
        self._positions: dict[int, int] = {}
        self.closed = False

    def partitions(self) -> list[int]:
        return sorted(self._topic.logs)

    def latest(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: len(self._topic.logs[p]) for p in partitions}

    def bounds(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        return {p: (self._topic.oldest[p], len(self._topic.logs[p])) for p in partitions}

    def at_time(self, partitions: Sequence[int], moment: datetime) -> dict[int, int]:
        return dict.fromkeys(partitions, 0)

    def assign(self, positions: dict[int, int]) -> None:
        oldest = self._topic.oldest
        self._positions = {
            p: oldest[p] if o == OFFSET_BEGINNING else max(o, oldest[p])
            for p, o in positions.items()
        }

    #: Like a shared window: streams in step may share an encoding of what it returns.
    shared = True

    async def fetch(self, max_records: int, timeout: float) -> list[FakeRecord]:
        if self._topic.failure is not None:
            raise self._topic.failure
        batch: list[FakeRecord] = []
        for partition, position in sorted(self._positions.items()):
            log = self._topic.logs[partition]
            while position < len(log) and len(batch) < max_records:
                batch.append(FakeRecord(partition, position, log[position]))
                position += 1
            self._positions[partition] = position
        if not batch:
            self._topic.clocks.advance(timeout)
        return batch

    def has_unread(self, positions: dict[int, int]) -> bool:
        return any(positions.get(p, 0) < len(log) for p, log in self._topic.logs.items())

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeLedger:
    """``Ledger``: keeps entries in a list; ``problem`` is whatever the test sets."""

    entries: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    broken: str | None = None

    def record(self, time: str, kind: str, details: Mapping[str, Any]) -> None:
        self.entries.append((time, kind, dict(details)))

    def problem(self) -> str | None:
        return self.broken

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [details for _, k, details in self.entries if k == kind]


@dataclass
class FakeDataKeyStore:
    """``DataKeyStore`` in a dict."""

    keys: dict[str, list[StoredKey]] = field(default_factory=dict)

    def all(self, contract_id: str) -> list[StoredKey]:
        return list(self.keys.get(contract_id, []))

    def append(self, contract_id: str, key: StoredKey) -> None:
        self.keys.setdefault(contract_id, []).append(key)


class FakeRecordSink:
    """Kafka for publishing: topics as lists; ``fail_after`` acknowledges that many records
    of the next write, then refuses the rest (a broker lost mid-batch)."""

    def __init__(self) -> None:
        self.topics: dict[str, list[tuple[str | None, bytes, list[tuple[str, str]]]]] = {}
        self.fail_after: int | None = None

    def write(self, topic: str, records: Sequence[Any]) -> list[tuple[int, int] | str]:
        log = self.topics.setdefault(topic, [])
        outcomes: list[tuple[int, int] | str] = []
        for key, value, headers in records:
            if self.fail_after is not None and self.fail_after <= 0:
                outcomes.append("_TRANSPORT")
                continue
            if self.fail_after is not None:
                self.fail_after -= 1
            log.append((key, value, list(headers.items())))
            outcomes.append((0, len(log) - 1))
        self.fail_after = None
        return outcomes

    def ensure_topic(self, topic: str, partitions: int = 1) -> None:
        self.topics.setdefault(topic, [])
