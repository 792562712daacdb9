"""Data key epochs on an in-memory store and a clock the test moves."""

from __future__ import annotations

from joserfc.jwk import OKPKey

from gateway.services.datakeys import DataKeyService
from tests.fakes import FakeDataKeyStore


def recipient() -> OKPKey:
    return OKPKey.generate_key("X25519", parameters={"use": "enc"}, auto_kid=True)


def test_a_new_epoch_after_max_records_after_max_age_and_on_a_new_consumer_key() -> None:
    now = [1000.0]
    store = FakeDataKeyStore()
    keys = DataKeyService(store, max_records=3, max_age=60, clock=lambda: now[0])
    consumer = recipient()
    key, granted = keys.reserve("c", consumer, 2)
    assert granted == 2
    again, granted = keys.reserve("c", consumer, 5)
    assert (again.kid, granted) == (key.kid, 1), "the epoch's last record, not five"
    fourth, granted = keys.reserve("c", consumer, 5)
    assert fourth.kid != key.kid, "a new epoch after max_records"
    assert granted == 3
    now[0] += 61
    assert keys.reserve("c", consumer, 1)[0].kid != fourth.kid, "a new epoch after max_age"
    rotated = keys.current("c", recipient()).kid
    assert rotated not in {k.kid for k in store.all("c")[:-1]}, "a new epoch for a new key"
    assert len(store.all("c")) == 4, "every key is kept for the partner's replay window"


def test_every_key_can_be_fetched_wrapped_to_the_current_consumer_key() -> None:
    store = FakeDataKeyStore()
    keys = DataKeyService(store, max_records=1, max_age=60, clock=lambda: 0.0)
    consumer = recipient()
    made = [keys.reserve("c", consumer, 10)[0].kid for _ in range(3)]
    wrapped = keys.wrapped("c", consumer, None)
    assert [w["kid"] for w in wrapped] == list(dict.fromkeys(made))
    assert (
        keys.wrapped("c", consumer, made[0]) == [wrapped[0]]
        or len(keys.wrapped("c", consumer, made[0])) == 1
    )
