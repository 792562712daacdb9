"""The partner client: authenticate with ``private_key_jwt``, stream a contract, resume exactly.

Usable on its own by partners (it needs none of the server's configuration)::

    client = GatewayClient("https://gateway.acme.example", org="globex", key=signing_key)
    for record in client.records("acme-globex-orders", cursor=None):
        ...

``consume`` adds a checkpoint file: records are written and flushed first, the cursor is saved
after (atomically, fsynced), so a crash can repeat records after the last checkpoint but never
lose one (at-least-once). It also acknowledges the gateway's signed delivery receipts once the
sink holds their records (``core/receipts.py`` says what a receipt signs).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

import httpx
from httpx_sse import connect_sse
from joserfc import jwt
from joserfc.jwk import KeySet, OKPKey

from gateway.core.jose import eddsa_allowed, sign_detached, signature_header, verify_compact
from gateway.errors import DocumentInvalid
from gateway.fieldcrypto import FieldDecryptor, leaves, looks_encrypted

__all__ = [
    "ASSERTION_TYPE",
    "FileSink",
    "GatewayClient",
    "GatewayClientError",
    "Interruptions",
    "KafkaSink",
    "Receipt",
    "Sink",
    "SinkError",
    "StreamEnded",
    "client_assertion",
    "consume",
    "read_checkpoint",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Ends after which the partner reconnects with its cursor: the gateway could not record
#: deliveries for a moment, or a new contract version changes what is sent.
RESUMABLE = frozenset({"ledger_unavailable", "superseded"})
#: Ends after which the partner reconnects with backoff: Kafka failed under the stream, the
#: stream's position vanished (the reconnection hears what was lost, or why it cannot go on),
#: or the gateway's replica is shutting down (another one takes the reconnection).
RETRIED = frozenset(
    {"broker_unavailable", "product_unavailable", "cursor_out_of_range", "shutdown"}
)


class GatewayClientError(Exception):
    """The gateway refused a request; ``problem`` is its RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('code')}: {problem.get('detail')}")
        self.status = status
        self.problem = problem


class SinkError(Exception):
    """The sink could not confirm that it holds the records written to it."""


class StreamEnded(Exception):
    """The gateway ended the stream (``event: end``), or the connection closed."""

    def __init__(
        self, reason: str, retry_after: float | None = None, detail: str | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        #: Seconds until the gateway will serve again (``quota_exhausted``).
        self.retry_after = retry_after


class Receipt:
    """A delivery receipt the gateway signed, checked against what this client received."""

    def __init__(self, contract: str, token: str, claims: dict[str, Any]) -> None:
        self.contract = contract
        #: The compact JWS, exactly as received: what an acknowledgement signs.
        self.token = token
        self.claims = claims


#: What a receipt is told of (``GatewayClient.records``' ``receipts``).
ReceiptHandler = Callable[[Receipt], None]


class _ReceivedBytes:
    """The record events of one connection since its last receipt (their digest, count)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.records = 0

    def add(self, event: str, cursor: str, data: str) -> None:
        # The event exactly as the gateway writes it (core/receipts.py).
        self.digest.update(f"event: {event}\nid: {cursor}\ndata: {data}\n\n".encode())
        self.records += 1

    def matches(self, claims: dict[str, Any]) -> bool:
        sha256 = base64.urlsafe_b64encode(self.digest.digest()).rstrip(b"=").decode()
        return claims.get("sha256") == sha256 and claims.get("records") == self.records


def client_assertion(org: str, key: OKPKey, audience: str, lifetime: int = 60) -> str:
    """An RFC 7523 client assertion: ``iss`` = ``sub`` = the organisation id."""
    now = int(time.time())
    claims = {
        "iss": org,
        "sub": org,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_urlsafe(16),
    }
    with eddsa_allowed():
        return jwt.encode({"alg": "EdDSA", "kid": key.kid}, claims, key, algorithms=["EdDSA"])


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code >= 400:
        response.read()  # a refused stream's problem body has not been read yet
        try:
            body = response.json()
        except ValueError:  # not the gateway answering (a proxy, another server): one line
            text = " ".join(response.text.split())[:200]
            body = {"code": "http_error", "detail": f"{response.request.url} answered: {text}"}
        raise GatewayClientError(response.status_code, body)


def _member(response: httpx.Response, name: str, url: str) -> Any:
    """``name`` from a JSON object answer; a server that is not the gateway answers otherwise
    (an HTML page, another API), which is a ``GatewayClientError``, not a ``KeyError``."""
    try:
        body = response.json()
        return body[name]
    except (ValueError, TypeError, KeyError, IndexError):
        detail = f"no '{name}' in the answer of {url}: not an Exchange Gateway?"
        raise GatewayClientError(
            response.status_code, {"code": "http_error", "detail": detail}
        ) from None


#: The stream's own refusals of a token (expired, revoked): a new token is fetched and the
#: stream reopened. Any other 401 (the token endpoint's ``invalid_client``) is final.
_TOKEN_REFUSALS = frozenset({"invalid_token", "token_expired"})


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        *,
        org: str,
        key: OKPKey,
        encryption_key: OKPKey | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.org = org
        self._key = key
        self._encryption_key = encryption_key
        self._decryptors: dict[str, FieldDecryptor] = {}
        self._http = http or httpx.Client(timeout=httpx.Timeout(30.0, read=60.0))
        self._token: str | None = None
        self._token_endpoint: str | None = None
        self._gateway_keys: KeySet | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def token_endpoint(self) -> str:
        if self._token_endpoint is None:
            url = f"{self.base_url}/.well-known/oauth-authorization-server"
            response = self._http.get(url)
            _raise_for_problem(response)
            self._token_endpoint = str(_member(response, "token_endpoint", url))
        return self._token_endpoint

    def fetch_token(self) -> str:
        endpoint = self.token_endpoint()
        response = self._http.post(
            endpoint,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion(self.org, self._key, endpoint),
            },
        )
        _raise_for_problem(response)
        self._token = str(_member(response, "access_token", endpoint))
        return self._token

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token or self.fetch_token()}"}

    def gateway_keys(self, refresh: bool = False) -> KeySet:
        """The gateway's published keys (its ``jwks_uri``), which sign its receipts."""
        if self._gateway_keys is None or refresh:
            url = f"{self.base_url}/.well-known/oauth-authorization-server"
            response = self._http.get(url)
            _raise_for_problem(response)
            jwks_uri = str(_member(response, "jwks_uri", url))
            answer = self._http.get(jwks_uri)
            _raise_for_problem(answer)
            self._gateway_keys = KeySet.import_key_set(answer.json())
        return self._gateway_keys

    def check_receipt(self, contract: str, token: str, received: _ReceivedBytes) -> Receipt | None:
        """The receipt, if it is the gateway's signature over exactly what was received since
        the last one; otherwise ``None``, said in an error line (it is not acknowledged)."""
        try:
            kid = signature_header(token).get("kid")
        except DocumentInvalid:
            kid = None
        keys = self.gateway_keys()
        if kid is not None and not any(k.kid == kid for k in keys):
            keys = self.gateway_keys(refresh=True)  # the gateway may have a newer key
        payload = verify_compact(token, keys)
        claims = json.loads(payload) if payload is not None else None
        if not isinstance(claims, dict):
            log.error("contract %s: a receipt does not verify with the gateway's keys", contract)
            return None
        if claims.get("partner") != self.org or not received.matches(claims):
            log.error(
                "contract %s: receipt %s of delivery %s does not match what was received "
                "(%d records); it is not acknowledged",
                contract,
                claims.get("seq"),
                claims.get("delivery"),
                received.records,
            )
            return None
        return Receipt(contract, token, claims)

    def acknowledge(self, receipt: Receipt) -> dict[str, Any]:
        """Sign the receipt with this organisation's key and post the acknowledgement."""
        signature = sign_detached(
            receipt.token.encode("ascii"), self._key, org=self.org, signed_at=int(time.time())
        )
        response = self._http.post(
            f"{self.base_url}/v1/contracts/{receipt.contract}/acknowledgements",
            json={"receipt": receipt.token, "signature": signature},
            headers=self._auth(),
        )
        _raise_for_problem(response)
        answer: dict[str, Any] = response.json()
        return answer

    def events(
        self,
        contract: str,
        *,
        cursor: str | None,
        start: str | None = None,
        receipts: ReceiptHandler | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(cursor, record)`` pairs from one SSE connection; ``StreamEnded`` when it ends.
        ``receipts`` is given each receipt that matches what was received."""
        return self._events(contract, cursor=cursor, start=start, opened=None, receipts=receipts)

    def _events(
        self,
        contract: str,
        *,
        cursor: str | None,
        start: str | None,
        opened: Callable[[], None] | None,
        receipts: ReceiptHandler | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        params = {"from": start} if start and not cursor else {}
        headers = self._auth()
        if cursor:
            headers["Last-Event-ID"] = cursor
        url = f"{self.base_url}/v1/contracts/{contract}/stream"
        with connect_sse(self._http, "GET", url, params=params, headers=headers) as source:
            _raise_for_problem(source.response)
            if opened is not None:
                opened()
            received = _ReceivedBytes()
            for event in source.iter_sse():
                if event.event == "record":
                    received.add(event.event, event.id, event.data)
                    yield event.id, self.verified(contract, json.loads(event.data))
                elif event.event == "refused":
                    received.add(event.event, event.id, event.data)
                    yield event.id, json.loads(event.data)
                elif event.event == "receipt":
                    token = str(json.loads(event.data).get("receipt"))
                    checked = self.check_receipt(contract, token, received)
                    received = _ReceivedBytes()
                    if checked is not None and receipts is not None:
                        receipts(checked)
                elif event.event == "keys":
                    for announced in json.loads(event.data)["keys"]:
                        self._decryptor(contract).add(announced["kid"], announced["jwe"])
                elif event.event == "gap":  # the cursor was older than the topic's retention
                    log.warning("records lost to the topic's retention: %s", event.data)
                elif event.event == "end":
                    end = json.loads(event.data)
                    raise StreamEnded(
                        end.get("reason", "unknown"), end.get("retry_after"), end.get("detail")
                    )
        raise StreamEnded("disconnected")

    def _decryptor(self, contract: str) -> FieldDecryptor:
        if self._encryption_key is None:
            raise ValueError("this contract encrypts fields: give the client your encryption key")
        if contract not in self._decryptors:
            self._decryptors[contract] = FieldDecryptor(contract, self._encryption_key)
        return self._decryptors[contract]

    def fetch_keys(self, contract: str, kid: str) -> None:
        response = self._http.get(
            f"{self.base_url}/v1/contracts/{contract}/keys",
            params={"kid": kid},
            headers=self._auth(),
        )
        _raise_for_problem(response)
        for wrapped in response.json()["keys"]:
            self._decryptor(contract).add(wrapped["kid"], wrapped["jwe"])

    def verified(self, contract: str, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with its encrypted fields decrypted and checked (``FieldVerificationError``
        names contract, partition, offset and field when one is not right)."""
        if not any(looks_encrypted(v) for _, v in leaves(record.get("value"), "")):
            return record
        decryptor = self._decryptor(contract)
        for kid in decryptor.missing_kids(record):
            self.fetch_keys(contract, kid)
        return decryptor.decrypt(record)

    def records(
        self,
        contract: str,
        *,
        cursor: str | None,
        start: str | None = None,
        give_up_after: float | None = None,
        receipts: ReceiptHandler | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Like ``events`` but reconnects: a new token when needed, backoff on failures, and
        after a quota's ``Retry-After`` (a busy concurrency quota, the day's volume used up).

        While the gateway cannot be reached (a connection error or timeout, a 5xx answer) it
        retries with exponential backoff (0.5 s doubling to 30 s), logging a warning for each
        attempt. With ``give_up_after`` it stops retrying once every attempt has failed that
        way for that many seconds (counted from the first failure since the gateway last
        answered: a stream opened, or a 4xx such as a 429), and raises the last error (an
        ``httpx.TransportError`` or a 5xx ``GatewayClientError``). A URL that is not http(s)
        (``httpx.UnsupportedProtocol``) and the token endpoint's refusal (401
        ``invalid_client``) are raised at once: no retry changes them.
        """
        backoff = 0.5
        failing_since: float | None = None  # monotonic time of the outage's first failure

        def opened() -> None:
            nonlocal backoff, failing_since
            backoff = 0.5
            failing_since = None

        def retried(what: str) -> bool:
            """Sleep the backoff, never past ``give_up_after``; ``False``: time is up."""
            nonlocal backoff, failing_since
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
            wait = backoff
            if give_up_after is not None:
                left = failing_since + give_up_after - now
                if left <= 0:
                    return False
                wait = min(wait, left)
            log.warning("%s; retrying in %.1f s", what, wait)
            time.sleep(wait)
            backoff = min(backoff * 2, 30.0)
            return True

        while True:
            try:
                for position, record in self._events(
                    contract, cursor=cursor, start=start, opened=opened, receipts=receipts
                ):
                    cursor = position
                    yield position, record
            except StreamEnded as ended:
                if ended.reason == "token_expired":
                    self._token = None
                elif ended.reason == "quota_exhausted" and ended.retry_after is not None:
                    log.warning("daily volume used up; resuming in %d s", ended.retry_after)
                    time.sleep(ended.retry_after)
                elif ended.reason in RESUMABLE:
                    wait = ended.retry_after or 0
                    log.warning("stream ended (%s); resuming in %d s", ended.reason, wait)
                    time.sleep(wait)
                elif ended.reason in RETRIED:
                    if not retried(f"stream ended ({ended})"):
                        raise
                elif ended.reason != "disconnected":
                    raise
            except GatewayClientError as exc:
                if exc.status < 500:
                    failing_since = None  # it answered: reachable
                if exc.status == 401 and exc.problem.get("code") in _TOKEN_REFUSALS:
                    self._token = None
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                elif exc.status == 429:
                    wait = float(exc.problem.get("retry_after", backoff))
                    log.warning("%s; retrying in %.0f s", exc.problem.get("detail"), wait)
                    time.sleep(wait)
                elif exc.status < 500 or not retried(f"the gateway answered {exc}"):
                    raise
            except httpx.UnsupportedProtocol:
                raise  # not http:// or https://: no retry makes it one
            except httpx.TransportError as exc:
                if not retried(f"gateway unreachable ({_describe(exc)})"):
                    raise


def _describe(exc: Exception) -> str:
    """``ConnectError: [Errno 111] Connection refused``, or the type alone when it says nothing."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_checkpoint(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def write_checkpoint(path: Path, cursor: str) -> None:
    """Atomically replace the checkpoint, durable before returning."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(cursor)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Sink(Protocol):
    """Where the client puts records. ``commit`` returns once everything written is durable,
    or raises ``SinkError`` if that is not confirmed within ``timeout`` seconds."""

    def write(self, record: dict[str, Any], cursor: str) -> None: ...
    def commit(self, timeout: float = ...) -> None: ...
    def close(self) -> None: ...


class Interruptions:
    """SIGINT and SIGTERM for a consuming loop, delivered only where it is safe to stop.

    While the loop waits on the network a signal raises ``KeyboardInterrupt`` at once. Inside
    a ``critical()`` section (the sink's writes and commits, the checkpoint write) it is held
    and raised when the section ends. A librdkafka call must not be interrupted half-way:
    confluent-kafka's ``flush`` then fails with ``SystemError: ... returned NULL`` or waits
    out its whole timeout, and a partner's ``gateway consume`` looked hung on Ctrl-C.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._depth = 0
        self._held = False

    def install(self) -> Callable[[], None]:
        """Take over the signals (main thread only); returns what puts the old handlers back."""
        previous = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        for sig in self.SIGNALS:
            signal.signal(sig, self._received)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    @property
    def held(self) -> bool:
        """A signal came inside a critical section and waits for it to end."""
        return self._held

    def forget(self) -> None:
        self._held = False

    def _received(self, _signum: int, _frame: FrameType | None) -> None:
        if self._depth:
            self._held = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._held:
            self._held = False
            raise KeyboardInterrupt


class FileSink:
    """NDJSON lines (the record plus its ``cursor``); ``commit`` flushes and fsyncs."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, record: dict[str, Any], cursor: str) -> None:
        self._out.write(json.dumps({**record, "cursor": cursor}, separators=(",", ":")) + "\n")

    def commit(self, timeout: float = 30.0) -> None:
        self._out.flush()
        with contextlib.suppress(OSError, ValueError):  # a pipe: flushed is all there is
            os.fsync(self._out.fileno())

    def close(self) -> None:
        self.commit()


class KafkaSink:
    """Into the partner's own topic, idempotently; ``commit`` waits for every acknowledgement.

    Each record keeps its key; its value is the (decrypted) record value; headers say where it
    came from (``gateway-contract``, ``gateway-partition``, ``gateway-offset``), which also lets
    a consumer drop the duplicates at-least-once delivery may bring after a crash.
    """

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        contract: str,
        stop_waiting: Callable[[], bool] | None = None,
    ) -> None:
        from gateway.adapters.kafka.producer import GuardedProducer  # needs confluent-kafka

        self._producer = GuardedProducer(config)
        #: Whether to stop waiting for room in the producer's queue (the partner's Kafka down,
        #: and the user asked to stop): the write then fails and nothing is checkpointed.
        self._stop_waiting = stop_waiting
        self._topic = topic
        self._contract = contract.encode()
        self._failures: list[str] = []

    def _delivered(self, error: str | None, _partition: int | None, _offset: int | None) -> None:
        if error is not None:
            self._failures.append(error)

    def write(self, record: dict[str, Any], cursor: str) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("gateway-contract", self._contract),
            ("gateway-partition", str(record["partition"]).encode()),
            ("gateway-offset", str(record["offset"]).encode()),
        ]
        value = json.dumps(record.get("value"), separators=(",", ":")).encode()
        try:
            self._producer.produce(
                self._topic,
                value,
                key=record.get("key"),
                headers=headers,
                on_delivery=self._delivered,
                give_up=self._stop_waiting,
            )
        except BufferError:
            raise SinkError(
                f"stopped while the topic {self._topic!r} took no records; the checkpoint stays"
            ) from None

    def commit(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if self._producer.fatal is not None:
            raise SinkError(f"the producer to {self._topic!r} failed: {self._producer.fatal}")
        if remaining or self._failures:
            failures, self._failures = self._failures[:3], []
            raise SinkError(
                f"the topic {self._topic!r} did not acknowledge {remaining} records within "
                f"{timeout:.0f} s (failures: {failures or 'none'}); the checkpoint stays put"
            )

    def close(self) -> None:
        self.commit()


def consume(
    client: GatewayClient,
    contract: str,
    *,
    checkpoint: Path,
    sink: Sink,
    start: str | None = None,
    max_records: int | None = None,
    checkpoint_every: int = 1000,
    checkpoint_seconds: float = 1.0,
    interruptions: Interruptions | None = None,
    final_commit_seconds: float = 10.0,
    give_up_after: float | None = None,
    acknowledge: bool = True,
) -> int:
    """Deliver records to ``sink``; the checkpoint advances only after the sink has them.

    At least once: a crash after the sink took records but before the checkpoint was saved
    delivers those records again, so duplicates are bounded by ``checkpoint_every`` records (or
    ``checkpoint_seconds``' worth) per crash; nothing is ever lost. On the way out (the end,
    an error, an interruption) what the sink took is committed within ``final_commit_seconds``
    and checkpointed; if the sink cannot confirm it, the checkpoint stays where it was.
    ``give_up_after`` is ``GatewayClient.records``': how long the gateway may stay unreachable.

    With ``acknowledge``, each receipt that matches what was received is acknowledged once the
    checkpoint after its records is saved (the sink has them). An acknowledgement the gateway
    cannot take now is tried again at the next checkpoint; one it refuses is logged and left.
    """
    guard = interruptions or Interruptions()  # not installed: critical() is then a no-op
    cursor = read_checkpoint(checkpoint)
    written = 0
    pending: str | None = None
    since = 0
    last_save = time.monotonic()
    #: Receipts whose records the sink has been given, to acknowledge once it holds them.
    owed: list[Receipt] = []

    def save(timeout: float = 30.0) -> None:
        nonlocal pending, last_save, since
        with guard.critical():
            if pending is not None:
                sink.commit(timeout)
                write_checkpoint(checkpoint, pending)
                pending = None
        since = 0
        last_save = time.monotonic()
        while owed and _acknowledged(client, owed[0]):  # in order; the rest wait on a failure
            owed.pop(0)
        del owed[:-MAX_OWED_ACKNOWLEDGEMENTS]

    try:
        for position, record in client.records(
            contract,
            cursor=cursor,
            start=start,
            give_up_after=give_up_after,
            receipts=owed.append if acknowledge else None,
        ):
            with guard.critical():
                sink.write(record, position)
            pending = position
            written += 1
            since += 1
            if max_records is not None and written >= max_records:
                break
            if since >= checkpoint_every or time.monotonic() - last_save >= checkpoint_seconds:
                save()
    except Exception:
        guard.forget()  # a signal held now must not stand in for the error on the way out
        raise
    finally:
        save(final_commit_seconds)
    return written


#: Acknowledgements kept for another try, at most (the oldest are given up first).
MAX_OWED_ACKNOWLEDGEMENTS = 100


def _acknowledged(client: GatewayClient, receipt: Receipt) -> bool:
    """Whether ``receipt`` is settled: acknowledged, or refused (logged). ``False``: the
    gateway could not take it now; it is tried again at the next checkpoint."""
    try:
        client.acknowledge(receipt)
    except GatewayClientError as exc:
        if exc.status >= 500:
            return False
        log.warning("receipt %s not acknowledged: %s", receipt.claims.get("seq"), exc)
    except httpx.TransportError as exc:
        log.warning("receipt not acknowledged yet (%s)", _describe(exc))
        return False
    return True
