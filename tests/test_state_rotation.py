"""Rotating the gateway's secrets in phases (``state_dir.py``), each followed by a rolling
restart: at every moment a replica accepts what a replica one phase behind or ahead made."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import pytest
from click.testing import CliRunner
from cryptography.exceptions import InvalidTag
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import KeySet, OKPKey

from gateway.adapters.kafka.producer import produce
from gateway.adapters.stores.keys import FileDataKeyStore, LocalKeySource, retire_kek
from gateway.adapters.stores.replays import MemoryReplayCache
from gateway.adapters.stores.state_dir import (
    KEK_FILE,
    SECRET_FILES,
    GatewaySecrets,
    Phase,
    init_secrets,
    load_secrets,
    replace_private,
    rotate,
)
from gateway.cli import main
from gateway.client import client_assertion
from gateway.core.cursor import CursorCodec
from gateway.core.jose import CompactSigner
from gateway.core.receipts import RECEIPT_TYPE, check_acknowledgement, read_receipt
from gateway.errors import AuthenticationFailed, InvalidCursor, SignatureRefused, StateInvalid
from gateway.services.authorization import (
    AccessTokenVerifier,
    PartnerAuthorizationServer,
    TokenRequest,
)
from gateway.services.datakeys import StoredKey
from tests.conftest import RunningGateway, World
from tests.test_protection import PROTECTED, order

ISSUER = "https://gateway.acme.example"
PHASES = (Phase.ADD, Phase.PROMOTE, Phase.RETIRE)


def phases(directory: Path, secret: str) -> list[GatewaySecrets]:
    """What a replica loads before the rotation and after each phase."""
    seen = [load_secrets(directory, create=False)]
    for phase in PHASES:
        rotate(directory, secret, phase, now=time.time())
        seen.append(load_secrets(directory, create=False))
    return seen


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    init_secrets(directory)
    return directory


# Access tokens


class Replica:
    """The token endpoint and the token check of one replica, from the secrets it loaded."""

    def __init__(self, secrets: GatewaySecrets, partner_key: OKPKey) -> None:
        self._partner_key = partner_key
        self.server = PartnerAuthorizationServer(
            issuer=ISSUER,
            signing_keys=secrets.signing_keys,
            token_lifetime=600,
            assertion_max_lifetime=300,
            org_keys=lambda: {"globex": KeySet([partner_key])},
            registered=[],
            replays=MemoryReplayCache(),
        )
        self.verifier = AccessTokenVerifier(ISSUER, secrets.signing_keys)

    def issue(self) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(
                "globex", self._partner_key, f"{ISSUER}/oauth/token"
            ),
        }
        status, body, _ = self.server.create_token_response(
            TokenRequest(f"{ISSUER}/oauth/token", form, None)
        )
        assert status == 200, body
        return str(body["access_token"])


def kid(token: str) -> str:
    return str(jws.extract_compact(token.encode()).headers()["kid"])


def test_access_tokens_verify_at_a_replica_one_phase_behind_or_ahead(secrets_dir: Path) -> None:
    partner = OKPKey.generate_key("Ed25519", parameters={"use": "sig"}, auto_kid=True)
    before, added, promoted, retired = (
        Replica(s, partner) for s in phases(secrets_dir, "gateway-signing")
    )
    for one, other in ((before, added), (added, promoted), (promoted, retired)):
        for issuer, checker in ((one, other), (other, one)):
            for _ in range(5):  # authlib would pick a key of a set at random
                assert checker.verifier.verify(issuer.issue()).org == "globex"
    new = load_secrets(secrets_dir, create=False).signing_keys.keys[0].kid
    signed_by = {r: {kid(r.issue()) for _ in range(10)} for r in (before, added, promoted)}
    assert signed_by[added] == signed_by[before] != {new}, "an added key only verifies"
    assert signed_by[promoted] == {new}
    assert len(added.server.public_jwks()["keys"]) == 2, "an added key is published at once"
    with pytest.raises(AuthenticationFailed):  # retired: the old key's tokens have expired
        retired.verifier.verify(before.issue())


# Ledger keys


def receipt(signer: CompactSigner, delivery: str) -> str:
    claims = {"delivery": delivery, "contract": "c1", "partner": "globex", "seq": 1}
    return signer(msgspec.json.encode(claims))


def test_receipts_signed_before_a_ledger_key_rotation_still_verify(secrets_dir: Path) -> None:
    before, added, promoted, retired = phases(secrets_dir, "ledger-signing")
    old = receipt(CompactSigner(before.ledger_key, typ=RECEIPT_TYPE), "d-old")
    during = receipt(CompactSigner(added.ledger_key, typ=RECEIPT_TYPE), "d-added")
    new = receipt(CompactSigner(promoted.ledger_key, typ=RECEIPT_TYPE), "d-new")
    assert added.ledger_key.kid == before.ledger_key.kid, "an added key does not sign"
    assert promoted.ledger_key.kid != before.ledger_key.kid
    for token in (old, during, new):  # replicas before and after the promotion accept all
        for keys in (added.ledger_keys, promoted.ledger_keys):
            assert read_receipt(token, keys) is not None
    assert read_receipt(new, before.ledger_keys) is None, "why add comes before promote"
    # Acknowledgements are checked against all the gateway's keys.
    with pytest.raises(SignatureRefused) as refused:
        check_acknowledgement(
            receipt=old,
            signature="x",
            org="globex",
            contract_id="c1",
            gateway_keys=promoted.ledger_keys,
            org_keys=None,
        )
    assert refused.value.code != "receipt_invalid", "the old key's receipt was read"
    # Retired: only the kept copy of the JWKS proves the old signatures.
    assert read_receipt(old, retired.ledger_keys) is None
    kept = KeySet.import_key_set(promoted.ledger_keys.as_dict(private=False))
    assert read_receipt(old, kept) is not None


# Cursors

POSITIONS = {0: 12, 1: -2, 7: 2**40}


def test_cursors_minted_before_a_promotion_decode_after_it_and_fail_after_retire(
    secrets_dir: Path,
) -> None:
    codecs = [
        CursorCodec(s.cursor_secret, s.cursor_verifying) for s in phases(secrets_dir, "cursor")
    ]
    before, added, promoted, retired = codecs
    minted = {name: c.encode("c1", POSITIONS) for name, c in zip("bapr", codecs, strict=True)}
    assert minted["b"] == minted["a"], "an added secret does not sign"
    for reader in (before, added, promoted):
        assert reader.decode("c1", minted["b"]) == POSITIONS
    assert added.decode("c1", minted["p"]) == POSITIONS, "a replica not yet restarted"
    assert retired.decode("c1", minted["p"]) == POSITIONS
    with pytest.raises(InvalidCursor):
        retired.decode("c1", minted["b"])
    with pytest.raises(InvalidCursor):  # the secrets never make another contract's cursor
        promoted.decode("c2", minted["b"])


secret_bytes = st.binary(min_size=32, max_size=80)


@given(
    secrets=st.lists(secret_bytes, min_size=1, max_size=4, unique_by=lambda s: s[:64]),
    signer=st.integers(min_value=0, max_value=3),
    positions=st.dictionaries(st.integers(0, 2**31 - 1), st.integers(-2, 2**63 - 1), max_size=5),
)
def test_a_cursor_decodes_exactly_when_its_secret_is_among_the_codecs(
    secrets: list[bytes], signer: int, positions: dict[int, int]
) -> None:
    made = secrets[signer % len(secrets)]
    cursor = CursorCodec(made).encode("c1", positions)
    current, *verifying = secrets
    assert CursorCodec(current, verifying).decode("c1", cursor) == positions
    others = [s for s in secrets if s != made]
    if others:
        with pytest.raises(InvalidCursor):
            CursorCodec(others[0], others[1:]).decode("c1", cursor)


# Key-encryption keys


def store_at(secrets_dir: Path, state: Path) -> FileDataKeyStore:
    """The data key store of a replica started with ``secrets_dir`` as it is now."""
    return FileDataKeyStore(state / "data-keys", LocalKeySource.from_directory(secrets_dir))


def data_key(n: int) -> StoredKey:
    return StoredKey(f"k{n}", float(n), "globex-key", os.urandom(32))


def test_data_keys_sealed_at_every_phase_of_a_kek_rotation_stay_readable(
    secrets_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    made: list[StoredKey] = []

    def sealed_by(store: FileDataKeyStore) -> None:
        made.append(data_key(len(made)))
        store.append("c1", made[-1])

    before = store_at(secrets_dir, state)
    sealed_by(before)
    rotate(secrets_dir, "kek", Phase.ADD, now=time.time())
    added = store_at(secrets_dir, state)
    sealed_by(added)
    rotate(secrets_dir, "kek", Phase.PROMOTE, now=time.time())
    promoted = store_at(secrets_dir, state)
    sealed_by(promoted)
    assert added.all("c1") == made, "a replica not yet restarted opens the new KEK's keys"
    sealed_by(added)  # it still seals under the old KEK until it restarts
    assert promoted.all("c1") == made

    changes = retire_kek(secrets_dir, state / "data-keys")
    assert changes[0].startswith("re-sealed 4 data keys")
    assert not (secrets_dir / "kek.previous.key").exists()
    retired = store_at(secrets_dir, state)
    assert retired.all("c1") == made
    only_current = FileDataKeyStore(
        state / "data-keys", LocalKeySource((secrets_dir / KEK_FILE).read_bytes())
    )
    assert only_current.all("c1") == made, "every key is sealed under kek.key alone"
    assert stat.S_IMODE((state / "data-keys" / "c1.jsonl").stat().st_mode) == 0o600
    assert sorted(p.name for p in (state / "data-keys").iterdir()) == ["c1.jsonl"]


def test_retiring_the_kek_stops_before_a_data_key_no_kek_opens(
    secrets_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    stranger = FileDataKeyStore(state / "data-keys", LocalKeySource(os.urandom(32)))
    stranger.append("c1", data_key(0))
    rotate(secrets_dir, "kek", Phase.ADD, now=time.time())
    rotate(secrets_dir, "kek", Phase.PROMOTE, now=time.time())
    before = (state / "data-keys" / "c1.jsonl").read_bytes()
    with pytest.raises(StateInvalid, match="opens under none of the KEKs"):
        retire_kek(secrets_dir, state / "data-keys")
    assert (secrets_dir / "kek.previous.key").exists(), "the old KEK is kept"
    assert (state / "data-keys" / "c1.jsonl").read_bytes() == before
    with pytest.raises(StateInvalid, match="data-keys: missing"):
        retire_kek(secrets_dir, tmp_path / "elsewhere" / "data-keys")


def waiting_for_lock(path: Path) -> None:
    """Until a process waits for the ``flock`` of ``path`` (``/proc/locks`` lists a waiter
    with ``->`` and the file's inode)."""
    inode = f":{path.stat().st_ino} "
    deadline = time.monotonic() + 10
    while not any(
        "->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines()
    ):
        assert time.monotonic() < deadline, "the writer never waited for the lock"
        time.sleep(0.01)


def test_a_key_appended_while_its_file_is_resealed_lands_in_the_new_file(
    secrets_dir: Path, tmp_path: Path
) -> None:
    """A writer that opened the file before the re-seal renamed a new one over it, and
    waited for the lock, appends to the file now there, not to the replaced one."""
    state = tmp_path / "state"
    store = store_at(secrets_dir, state)
    store.append("c1", data_key(0))
    path = state / "data-keys" / "c1.jsonl"
    with path.open("r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as reseal holds it
        writer = threading.Thread(target=store.append, args=("c1", data_key(1)))
        writer.start()
        waiting_for_lock(path)  # the writer opened the old file and waits for the lock
        replace_private(path, path.read_bytes())
        fcntl.flock(held, fcntl.LOCK_UN)
    writer.join(timeout=10)
    assert [k.kid for k in store.all("c1")] == ["k0", "k1"]


def test_a_local_key_source_opens_under_each_of_its_keys_and_seals_under_the_first() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed_old = LocalKeySource(old).seal(b"secret", b"c1/k0")
    both = LocalKeySource(new, [old])
    assert both.open(sealed_old, b"c1/k0") == b"secret"
    assert LocalKeySource(new).open(both.seal(b"s2", b"ctx"), b"ctx") == b"s2"
    with pytest.raises(InvalidTag):
        both.open(sealed_old, b"c1/other")


# The command


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["state", "rotate", *args])
    return result.exit_code, result.output


def refused(*args: str) -> str:
    """The one ``Error:`` line of a refused rotation (exit 2)."""
    code, output = run(*args)
    assert code == 2, output
    assert output.startswith("Error: "), output
    assert output.count("\n") == 1, output
    return output


def test_each_phase_prints_what_changed_and_leaves_private_files(secrets_dir: Path) -> None:
    d = str(secrets_dir)
    for secret in ("gateway-signing", "ledger-signing", "cursor", "kek"):
        for phase in ("add", "promote") + (("retire",) if secret != "kek" else ()):
            code, output = run(d, secret, "--phase", phase)
            assert code == 0, output
            assert output.strip(), f"{secret} {phase} printed nothing"
    state = str(secrets_dir.parent / "st")
    assert "data-keys: missing" in refused(d, "kek", "--phase", "retire", "--state", state)
    (secrets_dir.parent / "st" / "data-keys").mkdir(parents=True)
    code, output = run(d, "kek", "--phase", "retire", "--state", state)
    assert code == 0, output
    assert "re-sealed 0 data keys" in output
    assert "removed" in output
    assert sorted(p.name for p in secrets_dir.iterdir()) == sorted(SECRET_FILES), "no leftovers"
    for path in secrets_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    loaded = load_secrets(secrets_dir, create=False)
    assert len(loaded.signing_keys.keys) == len(loaded.ledger_keys.keys) == 1
    assert loaded.cursor_verifying == ()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("pseudonym", "--phase", "add"), "never rotated"),
        (("signing", "--phase", "add"), "not a secret of the gateway"),
        (("cursor", "--phase", "now"), "one of add, promote, retire"),
        (("cursor", "--phase", "promote"), "run --phase add first"),
        (("cursor", "--phase", "retire"), "nothing to retire"),
        (("gateway-signing", "--phase", "promote"), "run --phase add first"),
        (("ledger-signing", "--phase", "retire"), "nothing to retire"),
        (("kek", "--phase", "retire"), "give --state STATE_DIR"),
        (("cursor", "--phase", "add", "--state", "/tmp"), "only for kek --phase retire"),
    ],
)
def test_a_rotation_out_of_order_is_refused_in_one_line(
    secrets_dir: Path, args: tuple[str, ...], says: str
) -> None:
    before = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    assert says in refused(str(secrets_dir), *args)
    assert {p.name: p.read_bytes() for p in secrets_dir.iterdir()} == before


@pytest.mark.parametrize("secret", ["gateway-signing", "ledger-signing", "cursor", "kek"])
def test_a_phase_run_twice_or_skipped_is_refused(secrets_dir: Path, secret: str) -> None:
    d = str(secrets_dir)
    assert run(d, secret, "--phase", "add")[0] == 0
    assert "not promoted yet" in refused(d, secret, "--phase", "add")
    if secret != "kek":
        refused(d, secret, "--phase", "retire")
    assert run(d, secret, "--phase", "promote")[0] == 0
    assert "run --phase add first" in refused(d, secret, "--phase", "promote")
    if secret in ("cursor", "kek"):  # one previous key is kept: retire it before the next
        assert run(d, secret, "--phase", "add")[0] == 0
        assert "run --phase retire first" in refused(d, secret, "--phase", "promote")
    else:  # published keys may stay: a second rotation keeps them all, newest first
        assert run(d, secret, "--phase", "add")[0] == 0
        assert run(d, secret, "--phase", "promote")[0] == 0
        keys = json.loads((secrets_dir / f"{secret}.jwks.json").read_text())["keys"]
        assert [k["iat"] for k in keys] == sorted((k["iat"] for k in keys), reverse=True)


def test_a_promotion_interrupted_between_its_renames_is_taken_up_again(
    secrets_dir: Path,
) -> None:
    rotate(secrets_dir, "cursor", Phase.ADD, now=time.time())
    upcoming = (secrets_dir / "cursor.next.key").read_bytes()
    shutil.copy(secrets_dir / "cursor.key", secrets_dir / "cursor.previous.key")
    rotate(secrets_dir, "cursor", Phase.PROMOTE, now=time.time())
    assert (secrets_dir / "cursor.key").read_bytes() == upcoming


# Two replicas, one phase apart, behind one name


def test_replicas_one_phase_apart_honour_each_others_tokens_cursors_and_data_keys(
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
    tmp_path: Path,
    kafka_config: dict[str, str],
) -> None:
    """Every secret rotated at once: one replica restarted after ``add``, the other after
    ``promote``, sharing the state volume; then one after ``retire``."""
    secrets = tmp_path / "secrets"
    init_secrets(secrets)
    rotatable = ("gateway-signing", "ledger-signing", "cursor", "kek")
    snapshot: dict[str, Path] = {}
    for phase in (Phase.ADD, Phase.PROMOTE):
        for secret in rotatable:
            rotate(secrets, secret, phase, now=time.time())
        snapshot[phase] = shutil.copytree(secrets, tmp_path / f"secrets-{phase}")
    (world.contracts_dir / "acme-globex-orders.yaml").unlink()
    world.add_contract("acme-globex-orders", "globex", fields=PROTECTED)
    records = [(o["order_id"], json.dumps(o).encode()) for o in map(order, range(6))]
    one_per_batch = {"linger.ms": 0, "batch.num.messages": 1}
    produce(kafka_config, world.topic, records, partition=0, producer_config=one_per_batch)
    state = tmp_path / "replica-state"
    added = serve(secrets_dir=snapshot[Phase.ADD], state_dir=state, public_url=ISSUER)
    promoted = serve(secrets_dir=snapshot[Phase.PROMOTE], state_dir=state, public_url=ISSUER)

    def token(at: RunningGateway) -> dict[str, str]:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(
                "globex", world.key("globex"), f"{ISSUER}/oauth/token"
            ),
        }
        answer = http.post(f"{at.url}/oauth/token", data=form)
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    url = "/v1/contracts/acme-globex-orders/records"
    # The promoted replica makes the data key (under the new KEK) and a cursor (new secret).
    first = http.get(f"{promoted.url}{url}", headers=token(promoted), params={"limit": "1"})
    assert first.status_code == 200, first.text
    assert first.json()["keys"]
    old_cursor = http.get(f"{added.url}{url}", headers=token(added), params={"limit": "1"})
    assert old_cursor.status_code == 200, old_cursor.text
    # Each honours the other's token, cursor and data key.
    at_added = http.get(
        f"{added.url}{url}", headers=token(promoted), params={"cursor": first.json()["cursor"]}
    )
    assert at_added.status_code == 200, at_added.text
    assert [r["offset"] for r in at_added.json()["records"]] == [5]
    at_promoted = http.get(
        f"{promoted.url}{url}",
        headers=token(added),
        params={"cursor": old_cursor.json()["cursor"]},
    )
    assert at_promoted.status_code == 200, at_promoted.text
    # Both publish every key, and in the same order.
    published = http.get(f"{promoted.url}/.well-known/jwks.json").json()["keys"]
    behind = http.get(f"{added.url}/.well-known/jwks.json").json()["keys"]
    assert {k["kid"] for k in behind} == {k["kid"] for k in published}
    assert [k["kty"] for k in published] == ["EC", "EC", "OKP", "OKP"]
    assert all("d" not in k for k in published)

    rotate(secrets, "gateway-signing", Phase.RETIRE, now=time.time())
    rotate(secrets, "ledger-signing", Phase.RETIRE, now=time.time())
    rotate(secrets, "cursor", Phase.RETIRE, now=time.time())
    retire_kek(secrets, state / "data-keys")
    retired = serve(secrets_dir=secrets, state_dir=state, public_url=ISSUER)
    again = http.get(
        f"{retired.url}{url}", headers=token(promoted), params={"cursor": first.json()["cursor"]}
    )
    assert again.status_code == 200, "tokens and cursors of the promoted key, data keys resealed"
    refused = http.get(
        f"{retired.url}{url}",
        headers=token(retired),
        params={"cursor": old_cursor.json()["cursor"]},
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_cursor"
