"""The ledger writer keeps recording through bad entries, failed producers and its own defects.

The producer here is a fake with ``GuardedProducer``'s interface, so faults can be made exactly;
the writer against a real broker is tested in ``tests/test_ledger.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.adapters.kafka import ledger as ledger_module
from gateway.adapters.kafka.ledger import KafkaLedger
from gateway.core.ledger import verify


class FakeProducer:
    """Acknowledges what it is given on ``poll``; ``fail_after`` entries, it fails fatally."""

    def __init__(self, written: list[dict[str, Any]], fail_after: int | None = None) -> None:
        self.written = written
        self.fatal: str | None = None
        self._fail_after = fail_after
        self._pending: list[tuple[bytes, Callable[..., None]]] = []
        self.produced = 0

    def produce(
        self, topic: str, value: bytes, *, key: Any = None, on_delivery: Any = None
    ) -> None:
        self.produced += 1
        self._pending.append((value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        pending, self._pending = self._pending, []
        for value, delivered in pending:
            if self._fail_after is not None and len(self.written) >= self._fail_after:
                self.fatal = "_FATAL: the idempotent producer lost its sequence"
                delivered("_FATAL", None, None)
            else:
                self.written.append(orjson.loads(value))
                delivered(None, 0, len(self.written))
        return len(pending)

    def flush(self, timeout: float) -> int:
        self.poll()
        return 0

    def unreachable(self, topic: str, timeout: float) -> str | None:
        self.probes += 1
        return None

    def topic_id(self, topic: str, timeout: float) -> str | None:
        return self.topic_identity

    topic_identity: str | None = "first"
    probes = 0
    #: The writer's calls of ``poll``: one a round trip to the broker, one a wake-up at least.
    polls = 0
    answered = True

    def probed_twice_more(self) -> None:
        """Wait until the writer has probed twice after now (one full probe has seen it)."""
        seen = self.probes
        wait_for(lambda: self.probes >= seen + 2)


def writer(producers: list[FakeProducer], monkeypatch: Any) -> KafkaLedger:
    made = iter(producers)
    ledger = KafkaLedger({}, "ledger", "replica-a", producer=lambda: next(made))  # type: ignore[arg-type,return-value]
    ledger.start()
    return ledger


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the writer did not get there"
        time.sleep(0.01)


def test_a_fatal_producer_error_starts_a_new_chain_and_loses_no_entry(monkeypatch: Any) -> None:
    written: list[dict[str, Any]] = []
    ledger = writer([FakeProducer(written, fail_after=3), FakeProducer(written)], monkeypatch)
    wait_for(lambda: ledger.problem() is None)
    for n in range(6):
        ledger.record("2026-11-21T10:00:00.000Z", "token_issued", {"n": n})
    wait_for(lambda: sum(e["kind"] == "token_issued" for e in written) == 6)
    ledger.close()
    assert sorted(e["n"] for e in written if e["kind"] == "token_issued") == list(range(6))
    chains = [e for e in written if e["kind"] == "chain_started"]
    assert len(chains) == 2
    assert chains[1]["follows"] == chains[0]["chain"]
    assert "_FATAL" in chains[1]["because"]
    assert verify(written) == [], "each chain is intact: the failed one simply ends"
    assert ledger.problem() is None


def test_an_unencodable_entry_is_recorded_escaped_and_recording_goes_on(monkeypatch: Any) -> None:
    written: list[dict[str, Any]] = []
    ledger = writer([FakeProducer(written)], monkeypatch)
    ledger.record("2026-11-21T10:00:00.000Z", "contract", {"source": "draft-\udcff.yaml"})
    ledger.record("2026-11-21T10:00:00.000Z", "stream", {"from": {"0": 2**63}})
    ledger.record("2026-11-21T10:00:00.000Z", "token_issued", {"after": True})
    wait_for(lambda: any(e.get("after") for e in written))
    ledger.close()
    assert written[1]["source"] == "draft-\\udcff.yaml"
    assert written[2]["from"] == {"0": str(2**63)}
    assert verify(written) == []


def test_a_defect_in_the_writer_does_not_stop_recording(monkeypatch: Any) -> None:
    written: list[dict[str, Any]] = []

    class Broken(FakeProducer):
        def produce(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bug")

    ledger = writer([Broken(written), FakeProducer(written)], monkeypatch)
    ledger.record("2026-11-21T10:00:00.000Z", "token_issued", {"n": 1})
    wait_for(lambda: any(e.get("n") == 1 for e in written))
    assert ledger.problem() is None
    ledger.close()


def test_the_writer_keeps_up_with_thousands_of_entries_a_second(monkeypatch: Any) -> None:
    """Entries are written in batches, not one round trip to the broker each: 5,000 entries
    take a few dozen round trips (counted, not timed: a busy machine changes nothing)."""

    class Slow(FakeProducer):
        def poll(self, timeout: float = 0) -> int:
            time.sleep(0.008)  # a round trip to the broker
            return super().poll(timeout)

    written: list[dict[str, Any]] = []
    producer = Slow(written)
    ledger = writer([producer], monkeypatch)
    wait_for(lambda: ledger.problem() is None)
    before = producer.polls
    for n in range(5000):
        ledger.record("2026-11-21T10:00:00.000Z", "progress", {"n": n})
    wait_for(lambda: sum(e["kind"] == "progress" for e in written) == 5000)
    assert producer.polls - before < 500, "about one round trip per entry"
    ledger.close()
    assert verify(written) == []


def test_entries_that_come_one_by_one_wake_the_writer_once_per_gathering(monkeypatch: Any) -> None:
    """A thousand streams record their progress one by one through each second: the writer
    takes what came within ``GATHER_SECONDS`` at a time, instead of waking for each entry (each
    wake-up took the GIL from the event loop serving the streams)."""

    written: list[dict[str, Any]] = []
    producer = FakeProducer(written)
    ledger = writer([producer], monkeypatch)
    wait_for(lambda: ledger.problem() is None)
    before, started = producer.polls, time.monotonic()
    for n in range(200):
        ledger.record("2026-11-21T10:00:00.000Z", "progress", {"n": n})
        time.sleep(0.0002)  # streams record through the second, not all at once
    wait_for(lambda: sum(e["kind"] == "progress" for e in written) == 200)
    took = time.monotonic() - started
    # (Counted against the time it took: a busy machine only makes fewer, larger gatherings.)
    assert producer.polls - before <= took / ledger_module.GATHER_SECONDS + 10, took
    ledger.close()
    assert verify(written) == []


def test_a_ledger_topic_with_a_new_id_stops_the_chain_until_a_restart(monkeypatch: Any) -> None:
    """The topic was deleted and created again between two probes: refuse, never start over."""
    monkeypatch.setattr(ledger_module, "PROBE_SECONDS", 0.0)
    written: list[dict[str, Any]] = []
    producer = FakeProducer(written)
    ledger = writer([producer], monkeypatch)
    wait_for(lambda: ledger.problem() is None)
    producer.topic_identity = "second"
    wait_for(lambda: ledger.problem() is not None)
    assert "created again" in (ledger.problem() or "")
    producer.topic_identity = "first"  # nothing brings the old topic back: still refused
    producer.probed_twice_more()
    assert "created again" in (ledger.problem() or "")
    ledger.close()


def test_a_broker_that_keeps_no_topic_ids_is_not_refused(monkeypatch: Any) -> None:
    monkeypatch.setattr(ledger_module, "PROBE_SECONDS", 0.0)
    producer = FakeProducer([])
    producer.topic_identity = None
    ledger = writer([producer], monkeypatch)
    wait_for(lambda: ledger.problem() is None)
    producer.probed_twice_more()
    assert ledger.problem() is None
    ledger.close()


def test_a_ledger_topic_kafka_did_not_let_be_checked_at_start_is_checked_before_it_serves(
    monkeypatch: Any,
) -> None:
    """Kafka did not answer the check at start: the ledger counts as unavailable until the
    check has run, and for good if it refuses the topic (a retention that deletes entries)."""
    written: list[dict[str, Any]] = []
    producer = FakeProducer(written)
    verdicts = iter([(False, None), (True, "the ledger topic deletes entries after 7 days")])
    ledger = writer([producer], monkeypatch)
    ledger.check_topic_when_reachable(lambda: next(verdicts))
    producer.probed_twice_more()
    producer.probed_twice_more()
    assert ledger.problem() == "the ledger topic deletes entries after 7 days"
    assert written, "the chain itself was written: only nothing new may start"
    ledger.close()


def test_an_owed_check_that_passes_leaves_the_ledger_available(monkeypatch: Any) -> None:
    producer = FakeProducer([])
    ledger = writer([producer], monkeypatch)
    ledger.check_topic_when_reachable(lambda: (True, None))
    assert ledger.problem() is not None
    wait_for(lambda: ledger.problem() is None)
    assert ledger.reachable()
    ledger.close()
