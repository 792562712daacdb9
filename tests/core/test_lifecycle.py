"""The contract lifecycle: amendment chains and statements, at chosen moments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.contracts import (
    ContractState,
    Verdict,
    assess,
    parse_contract,
    parse_statement,
    verify_signed_by,
)
from gateway.core.documents import canonical_bytes
from gateway.core.jose import sign_detached, signing_key
from gateway.core.lifecycle import (
    StreamCarriesOn,
    StreamEnds,
    build_history,
    grants_no_less,
    stream_decision,
)
from gateway.errors import SignatureInvalid
from tests.core.test_contracts import KEYS, PRODUCTS, PUBLIC

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def at(month: int, day: int = 1) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def contract(
    version: int,
    *,
    supersedes: str | None = None,
    signers=("acme", "globex"),
    fields: dict[str, str] | None = None,
    valid_from: str = "2026-01-01T00:00:00Z",
    valid_until: str = "2026-12-31T00:00:00Z",
    consumer: str = "globex",
) -> Any:
    data: dict[str, Any] = {
        "contract": "c",
        "version": version,
        "provider": "acme",
        "consumer": consumer,
        "product": "orders",
        "purpose": "p",
        "valid_from": valid_from,
        "valid_until": valid_until,
        "fields": fields or {"order_id": "clear"},
    }
    if supersedes:
        data["supersedes"] = supersedes
    canonical = canonical_bytes(data)
    data["signatures"] = [sign_detached(canonical, signing_key(KEYS[o]), org=o) for o in signers]
    doc = parse_contract(data, source=f"v{version}")
    return doc, assess(doc, products=PRODUCTS, keys=PUBLIC, gateway_org="acme", now=T0)


def statement(
    kind: str,
    version_hash: str,
    *,
    by: str = "acme",
    when: datetime | None = None,
    signer: str | None = None,
) -> Any:
    when = when or at(4)
    data: dict[str, Any] = {
        "statement": kind,
        "contract": "c",
        "contract_version": version_hash,
        "issued_by": by,
        "issued_at": when.isoformat(),
        "reason": f"{kind} for testing",
    }
    data["signatures"] = [
        sign_detached(canonical_bytes(data), signing_key(KEYS[signer or by]), org=signer or by)
    ]
    doc = parse_statement(data, source=kind)
    try:
        verify_signed_by(doc.canonical, doc.statement.signatures, (by,), PUBLIC)
        return doc, None
    except SignatureInvalid as exc:
        return doc, Verdict(ContractState.REFUSED, exc.code, exc.detail)


def test_draft_active_expired() -> None:
    draft = build_history("c", [contract(1, signers=("acme",))])
    assert draft.status_at(T0).verdict.state is ContractState.DRAFT
    history = build_history("c", [contract(1)])
    assert history.status_at(T0).verdict.state is ContractState.ACTIVE
    assert history.status_at(datetime(2027, 1, 1, tzinfo=UTC)).verdict.reason == "expired"
    assert history.status_at(datetime(2025, 1, 1, tzinfo=UTC)).verdict.reason == "not_yet_valid"


def test_amendment_governs_once_signed_and_started() -> None:
    v1 = contract(1)
    v2 = contract(
        2,
        supersedes=v1[0].hash,
        valid_from="2026-06-01T00:00:00Z",
        fields={"order_id": "clear", "amount": "clear"},
    )
    history = build_history("c", [v2, v1])  # any order
    assert [v.chained for v in history.versions] == [True, True]
    assert history.status_at(at(5)).governing == v1[0]
    assert history.status_at(at(7)).governing == v2[0]
    draft = contract(2, supersedes=v1[0].hash, signers=("acme",))
    pending = build_history("c", [v1, draft])
    assert pending.status_at(at(7)).governing == v1[0], "a draft amendment is not in force"
    assert pending.versions[1].check.state is ContractState.DRAFT


@pytest.mark.parametrize("case", ["wrong_hash", "gap", "after_draft", "new_consumer"])
def test_broken_chains_are_refused(case: str) -> None:
    v1 = contract(1)
    if case == "wrong_hash":
        versions = [v1, contract(2, supersedes="sha256:" + "0" * 64)]
    elif case == "gap":
        versions = [v1, contract(3, supersedes=v1[0].hash)]
    elif case == "after_draft":
        v2 = contract(2, supersedes=v1[0].hash, signers=("acme",))
        versions = [v1, v2, contract(3, supersedes=v2[0].hash)]
    else:
        versions = [
            v1,
            contract(2, supersedes=v1[0].hash, consumer="initech", signers=("acme", "initech")),
        ]
    history = build_history("c", versions)
    assert history.versions[-1].chained is False
    assert history.versions[-1].check.reason == "broken_chain"
    assert history.status_at(at(7)).governing == v1[0]


def test_suspend_resume_revoke() -> None:
    v1 = contract(1)
    h = v1[0].hash
    history = build_history(
        "c",
        [v1],
        [
            statement("suspend", h, when=at(4)),
            statement("resume", h, when=at(5)),
            statement("revoke", h, by="globex", when=at(6)),
        ],
    )
    assert all(s.accepted for s in history.statements)
    assert history.status_at(at(3)).verdict.state is ContractState.ACTIVE
    suspended = history.status_at(at(4, 15)).verdict
    assert (suspended.state, suspended.reason) == (ContractState.SUSPENDED, "suspended")
    assert "suspend for testing" in suspended.detail
    assert history.status_at(at(5, 15)).verdict.state is ContractState.ACTIVE
    assert history.status_at(at(7)).verdict.state is ContractState.REVOKED


def _eventful_history() -> Any:
    """v1 from January, v2 (more fields) from June; suspended in April, resumed in May,
    revoked in September; everything ends with 2026."""
    v1 = contract(1)
    v2 = contract(
        2,
        supersedes=v1[0].hash,
        valid_from="2026-06-01T00:00:00Z",
        fields={"order_id": "clear", "amount": "clear"},
    )
    h = v1[0].hash
    statements = [
        statement("suspend", h, when=at(4)),
        statement("resume", h, when=at(5)),
        statement("revoke", h, by="globex", when=at(9)),
    ]
    return build_history("c", [v1, v2], statements)


EVENTFUL = _eventful_history()
#: Every moment where its status changes, and one microsecond either side of each.
EDGES = sorted({m + timedelta(microseconds=d) for m in EVENTFUL._moments() for d in (-1, 0, 1)})
moments = st.one_of(
    st.sampled_from(EDGES),
    st.datetimes(
        min_value=datetime(2025, 6, 1), max_value=datetime(2027, 6, 1), timezones=st.just(UTC)
    ),
)


@given(st.lists(moments, min_size=1, max_size=30))
def test_the_remembered_status_is_always_the_status_computed_afresh(
    times: list[datetime],
) -> None:
    """Streams ask for their contract's status on every batch; the answer is remembered for as
    long as it holds. Asked in any order, at and around every edge, it never differs."""
    history = _eventful_history() if len(times) % 2 else EVENTFUL  # fresh, and well used
    for now in times:
        assert history.status_at(now) == history.status_computed(now), now


@pytest.mark.parametrize(
    ("statements", "refused_reason"),
    [
        ([("resume", "acme", 4)], "not_suspended"),
        ([("suspend", "acme", 4), ("suspend", "acme", 5)], "already_suspended"),
        ([("suspend", "globex", 4)], "provider_only"),
        ([("revoke", "acme", 4), ("resume", "acme", 5)], "already_revoked"),
        ([("revoke", "acme", 4), ("revoke", "globex", 5)], "already_revoked"),
        ([("revoke", "initech", 4)], "not_a_party"),
    ],
)
def test_illegal_transitions_are_refused(
    statements: list[tuple[str, str, int]], refused_reason: str
) -> None:
    v1 = contract(1)
    said = [statement(kind, v1[0].hash, by=by, when=at(month)) for kind, by, month in statements]
    history = build_history("c", [v1], said)
    assert history.statements[-1].accepted is False
    assert history.statements[-1].reason == refused_reason


def test_statement_signed_by_someone_else_or_for_unknown_version() -> None:
    v1 = contract(1)
    forged = statement("revoke", v1[0].hash, by="globex", signer="acme")
    unknown = statement("revoke", "sha256:" + "1" * 64, by="globex")
    history = build_history("c", [v1], [forged, unknown])
    assert [s.reason for s in history.statements] == ["signature_invalid", "unknown_version"]
    assert history.status_at(at(7)).verdict.state is ContractState.ACTIVE


def doc_with(fields: dict[str, str]) -> Any:
    return contract(1, fields=fields)[0]


@pytest.mark.parametrize(
    ("old", "new", "continues"),
    [
        ({"a": "clear"}, {"a": "clear", "b": "clear"}, True),
        ({"a.x": "clear"}, {"a": "clear"}, True),
        ({"a": "clear", "b": "clear"}, {"a": "clear"}, False),
        ({"a": "clear"}, {"a": "clear", "a.secret": "drop"}, False),
        ({"a": "clear"}, {"a.x": "clear"}, False),
    ],
)
def test_grants_no_less(old: dict[str, str], new: dict[str, str], continues: bool) -> None:
    assert grants_no_less(doc_with(old), doc_with(new)) is continues


paths = st.lists(st.sampled_from("abc"), min_size=1, max_size=2).map(".".join)
field_sets = st.dictionaries(paths, st.sampled_from(["clear", "drop"]), min_size=1, max_size=4)


@given(field_sets)
def test_a_version_always_grants_no_less_than_itself(fields: dict[str, str]) -> None:
    doc = doc_with(fields)
    assert grants_no_less(doc, doc)


DECEMBER = datetime(2026, 12, 1, tzinfo=UTC)


def decide(
    version: Any, history: Any, *, now: datetime = T0, expires: datetime = DECEMBER, exhausted=None
) -> Any:
    return stream_decision(
        now=now,
        token_expires_at=expires,
        exhausted=exhausted,
        status=history.status_at(now),
        version=version,
    )


def test_a_stream_ends_first_for_its_token_then_its_volume_then_its_contract() -> None:
    v1, check = contract(1, valid_until="2026-02-01T00:00:00Z")
    expired = build_history("c", [(v1, check)], [])
    assert decide(v1, expired, expires=T0) == StreamEnds("token_expired")
    assert decide(v1, expired, exhausted=(60, "used up")) == StreamEnds(
        "quota_exhausted", {"retry_after": 60, "detail": "used up"}
    )
    ended = decide(v1, expired)
    assert isinstance(ended, StreamEnds)
    assert ended.reason == "expired"


def test_a_stream_carries_on_under_a_version_that_grants_no_less() -> None:
    v1, c1 = contract(1)
    wider, cw = contract(2, supersedes=v1.hash, fields={"order_id": "clear", "amount": "clear"})
    assert decide(v1, build_history("c", [(v1, c1)], [])) is None
    carried = decide(v1, build_history("c", [(v1, c1), (wider, cw)], []))
    assert carried == StreamCarriesOn(wider)
    narrower, cn = contract(2, supersedes=v1.hash, fields={"amount": "clear"})
    ends = decide(v1, build_history("c", [(v1, c1), (narrower, cn)], []))
    assert isinstance(ends, StreamEnds)
    assert ends.reason == "superseded"


def test_a_stream_sending_pseudonyms_never_carries_over() -> None:
    v1, c1 = contract(1, fields={"order_id": "hash"})
    v2, c2 = contract(2, supersedes=v1.hash, fields={"order_id": "hash"})
    ends = decide(v1, build_history("c", [(v1, c1), (v2, c2)], []))
    assert isinstance(ends, StreamEnds)
    assert ends.reason == "superseded"


def test_a_status_holds_until_the_next_moment_that_can_change_it() -> None:
    """``steady_until`` names the next validity bound or statement after ``now``: streams keep
    their last answer up to it (``services/streams.py``)."""
    doc, check = contract(1, valid_from="2026-02-01T00:00:00Z", valid_until="2026-12-31T00:00:00Z")
    history = build_history("c", [(doc, check)], [statement("suspend", doc.hash, when=at(6))])
    assert history.steady_until(at(1)) == at(2)  # before it begins
    assert history.steady_until(at(3)) == at(6)  # active, until the suspension is issued
    assert history.steady_until(at(6)) == datetime(2026, 12, 31, tzinfo=UTC)
    assert history.steady_until(datetime(2027, 1, 5, tzinfo=UTC)) == datetime.max.replace(
        tzinfo=UTC
    )
    for moment in (at(1), at(3), at(6), at(9)):
        assert history.status_at(history.steady_until(moment) - timedelta(microseconds=1)) == (
            history.status_at(moment)
        )
