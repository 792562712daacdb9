"""Topic administration: creating topics, and checking at start the topics the gateway needs.

``check_topics`` describes every topic the gateway needs (the ledger's, each product's, each
product's dead-letter topic) and reports on each: ok, created, missing, not authorized,
misconfigured. Missing ledger and dead-letter topics are created (the ledger's with infinite
retention), on the cluster's default replication factor. A ledger topic the gateway cannot use
as it is (not authorized, not creatable, or keeping entries for a limited time) is the report's
``problem``: deliveries could not be proven later, so the gateway must not serve (fail closed).
A product's missing topic or an unusable dead-letter topic is a warning: the rest works.

What a Kafka error means for the operator, naming the ACL the gateway's principal lacks, is
``explain`` and ``explain_connection``: pure functions of a ``KafkaError``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ResourceType,
)
from confluent_kafka.cimpl import NewTopic
from cryptography import x509

from gateway.adapters.kafka.errors import map_kafka_errors
from gateway.core.contracts import Product
from gateway.errors import BrokerUnavailable
from gateway.settings import REDACTED, KafkaSettings

__all__ = [
    "CLUSTER_DEFAULT",
    "INFINITE_RETENTION",
    "NeededTopic",
    "TopicCheck",
    "TopicReport",
    "TopicState",
    "TopicUse",
    "check_operations",
    "check_topics",
    "create_topic",
    "explain",
    "explain_connection",
    "needed_topics",
    "principal_of",
    "retention_problem",
]

log = logging.getLogger(__name__)

#: The ledger topic's configuration: its entries are evidence, never deleted nor compacted.
INFINITE_RETENTION: Mapping[str, str] = MappingProxyType(
    {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
)
#: The replication factor that asks for the cluster's ``default.replication.factor`` (KIP-464).
CLUSTER_DEFAULT = -1


def create_topic(
    config: Mapping[str, Any],
    name: str,
    partitions: int = 1,
    *,
    topic_config: Mapping[str, str] | None = None,
    replication_factor: int = CLUSTER_DEFAULT,
) -> None:
    """Create ``name`` unless it exists (replicated as the cluster's default says)."""
    admin = AdminClient(dict(config))
    topic = NewTopic(
        name, partitions, replication_factor=replication_factor, config=dict(topic_config or {})
    )
    with map_kafka_errors("create a topic"):
        futures = admin.create_topics([topic], request_timeout=10)
        for future in futures.values():
            try:
                future.result(timeout=15)
            except TimeoutError:
                raise BrokerUnavailable(f"Kafka did not create topic {name!r} in time") from None
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise


class TopicUse(StrEnum):
    """What the gateway does with a topic: it decides the ACLs needed and what a gap costs."""

    LEDGER = "ledger"
    PRODUCT = "product"
    DEAD_LETTER = "dead-letter"


#: The ACL operations on the topic without which the gateway cannot do its part.
REQUIRED_OPERATIONS: Mapping[TopicUse, tuple[str, ...]] = MappingProxyType(
    {
        TopicUse.LEDGER: ("DESCRIBE", "READ", "WRITE"),
        TopicUse.PRODUCT: ("DESCRIBE", "READ"),
        TopicUse.DEAD_LETTER: ("DESCRIBE", "WRITE"),
    }
)
#: Operations whose lack costs one feature, and what: said at start, not a failure.
WANTED_OPERATIONS: Mapping[TopicUse, Mapping[str, str]] = MappingProxyType(
    {
        TopicUse.LEDGER: {"DESCRIBE_CONFIGS": "its retention cannot be checked"},
        TopicUse.PRODUCT: {"WRITE": "its team cannot publish to it over HTTP"},
        TopicUse.DEAD_LETTER: {},
    }
)


@dataclass(frozen=True)
class NeededTopic:
    name: str
    use: TopicUse
    #: The product whose topic (or dead-letter topic) it is.
    product: str | None = None

    def label(self) -> str:
        if self.use is TopicUse.LEDGER:
            return f"the ledger topic {self.name!r}"
        if self.use is TopicUse.PRODUCT:
            return f"topic {self.name!r} of product {self.product!r}"
        return f"dead-letter topic {self.name!r} of product {self.product!r}"


def needed_topics(ledger_topic: str, products: Iterable[Product]) -> list[NeededTopic]:
    """The ledger topic, then each product's topic and dead-letter topic."""
    needed = [NeededTopic(ledger_topic, TopicUse.LEDGER)]
    for product in sorted(products, key=lambda p: p.product):
        needed.append(NeededTopic(product.topic, TopicUse.PRODUCT, product.product))
        needed.append(NeededTopic(product.dlq_topic, TopicUse.DEAD_LETTER, product.product))
    return needed


class TopicState(StrEnum):
    OK = "ok"
    CREATED = "created"
    MISSING = "missing"
    NOT_AUTHORIZED = "not authorized"
    #: It exists, but not as the gateway needs it (a ledger whose entries would be deleted).
    MISCONFIGURED = "misconfigured"
    #: It exists and is usable, but something about it could not be verified.
    UNVERIFIED = "unverified"
    #: Kafka did not answer, or answered with an error that says nothing about the topic.
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class TopicCheck:
    topic: NeededTopic
    state: TopicState
    #: One line for the log (and readiness): what is wrong and what to do; or a note.
    message: str = ""

    @property
    def fatal(self) -> bool:
        """The gateway must not serve: deliveries could not be recorded, or not kept."""
        return self.topic.use is TopicUse.LEDGER and self.state in (
            TopicState.MISSING,
            TopicState.NOT_AUTHORIZED,
            TopicState.MISCONFIGURED,
        )


@dataclass(frozen=True)
class TopicReport:
    checks: tuple[TopicCheck, ...]
    #: Why no topic could be checked (Kafka did not answer, or refused the credentials). Not
    #: fatal by itself: the ledger refuses readiness while it cannot write.
    unreachable: str | None = None
    #: Why the gateway must not serve, or ``None``.
    problem: str | None = None

    def of(self, name: str) -> list[TopicCheck]:
        return [c for c in self.checks if c.topic.name == name]


# ---------------------------------------------------------------------------------------------
# What Kafka's errors mean for the operator (pure).

Action = Literal["describe", "create", "describe_configs"]
_VERBS: Mapping[Action, str] = MappingProxyType(
    {"describe": "describe", "create": "create", "describe_configs": "read the configuration of"}
)
_UNKNOWN = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID)
#: Errors of the connection rather than of a topic.
_CONNECTION = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._DESTROY,
    }
)


def _not_authorized(topic: NeededTopic, principal: str, operations: Sequence[str]) -> str:
    return (
        f"{topic.label()}: not authorized: the gateway's principal {principal} needs "
        f"{', '.join(operations)} on topic {topic.name!r}"
    )


def _create_yourself(topic: NeededTopic) -> str:
    if topic.use is TopicUse.LEDGER:
        settings = ", ".join(f"{k}={v}" for k, v in INFINITE_RETENTION.items())
        return f"or create it yourself with {settings}"
    return "or create it yourself"


def explain(error: KafkaError, topic: NeededTopic, *, action: Action, principal: str) -> str:
    """What ``error``, answered when the gateway tried to ``action`` ``topic``, means for the
    operator: one line naming the ACL its ``principal`` lacks, or what else to do."""
    code, label, name = error.code(), topic.label(), topic.name
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        if action == "create":
            return (
                f"{label} does not exist and the gateway's principal {principal} may not "
                f"create it: grant it CREATE on topic {name!r} (or on the cluster), "
                f"{_create_yourself(topic)}"
            )
        if action == "describe_configs":
            return (
                f"{label}: its retention cannot be checked: the gateway's principal "
                f"{principal} needs DESCRIBE_CONFIGS on topic {name!r}"
            )
        return _not_authorized(topic, principal, REQUIRED_OPERATIONS[topic.use])
    if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        return (
            f"{label} does not exist and the gateway's principal {principal} may not create "
            f"topics: grant it CREATE on the cluster (or on topic {name!r}), "
            f"{_create_yourself(topic)}"
        )
    if code in _UNKNOWN:
        if topic.use is TopicUse.PRODUCT:
            return (
                f"{label} does not exist: the product's streams fail until its team creates "
                "it (the gateway creates no product topic)"
            )
        return f"{label} does not exist"
    if code == KafkaError.TOPIC_ALREADY_EXISTS:
        return f"{label} exists"
    if action == "create" and code in (
        KafkaError.POLICY_VIOLATION,
        KafkaError.INVALID_CONFIG,
        KafkaError.INVALID_REPLICATION_FACTOR,
        KafkaError.INVALID_PARTITIONS,
    ):
        return (
            f"{label} does not exist and Kafka refused to create it ({error.name()}: "
            f"{error.str()}): {_create_yourself(topic).removeprefix('or ')}"
        )
    if code in _CONNECTION:
        return f"{label}: not checked: {explain_connection(error)}"
    return f"{label}: Kafka could not {_VERBS[action]} it ({error.name()}: {error.str()})"


def explain_connection(
    error: KafkaError, timeout: float | None = None, last_failure: str | None = None
) -> str:
    """What an error of the connection itself means: credentials, TLS, address, or silence
    (with librdkafka's ``last_failure`` to connect, when it said one)."""
    code, detail = error.code(), f"{error.name()}: {error.str()}"
    if last_failure:
        detail = f"{detail}; last: {last_failure}"
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return (
            f"Kafka refused the gateway's credentials ({detail}): check the kafka.sasl_* "
            "settings and that the principal exists on the cluster"
        )
    if code == KafkaError._SSL:
        return (
            f"the TLS handshake with Kafka failed ({detail}): check kafka.ssl_ca_location, and "
            "kafka.ssl_certificate_location and ssl_key_location if the cluster wants mTLS"
        )
    if code == KafkaError._RESOLVE:
        return f"Kafka's address does not resolve ({detail}): check kafka.bootstrap_servers"
    within = f" within {timeout:g} s" if timeout is not None else ""
    return (
        f"Kafka did not answer{within} ({detail}): check kafka.bootstrap_servers, the network, "
        "kafka.security_protocol, and the client certificate if the cluster wants mTLS"
    )


def _duration(milliseconds: str) -> str:
    try:
        ms = int(milliseconds)
    except ValueError:
        return f"{milliseconds} ms"
    for unit, size in (("days", 86_400_000), ("hours", 3_600_000), ("minutes", 60_000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms} ms"


def retention_problem(config: Mapping[str, str]) -> str | None:
    """Why a ledger topic with this configuration would lose entries; ``None`` when it keeps
    them forever. A missing key is not judged (see ``check_topics``)."""
    found = []
    if config.get("retention.ms", "-1") != "-1":
        found.append(f"deletes entries after {_duration(config['retention.ms'])} (retention.ms)")
    if config.get("retention.bytes", "-1") != "-1":
        found.append(
            f"deletes entries past {config['retention.bytes']} bytes a partition (retention.bytes)"
        )
    if "compact" in config.get("cleanup.policy", "delete"):
        # Entries are keyed by chain: compaction would keep one entry per chain.
        found.append(f"is compacted (cleanup.policy={config['cleanup.policy']})")
    return " and ".join(found) or None


def principal_of(kafka: KafkaSettings) -> str:
    """The gateway's principal as the cluster probably names it, for the ACL messages (a
    cluster's ``ssl.principal.mapping.rules`` or OAuth claim settings may name it otherwise)."""
    if kafka.sasl_mechanism == "OAUTHBEARER":
        return f"(the subject of OAuth client {kafka.sasl_oauthbearer_client_id!r}'s tokens)"
    if kafka.sasl_mechanism is not None:
        return f"User:{kafka.sasl_username}"
    if kafka.ssl_certificate_location:
        path = kafka.ssl_certificate_location
        try:
            subject = x509.load_pem_x509_certificate(Path(path).read_bytes()).subject
        except (OSError, ValueError):
            return f"(the subject of the certificate in {path})"
        return f"User:{subject.rfc4514_string()}"
    return "User:ANONYMOUS"


# ---------------------------------------------------------------------------------------------
# The check against the cluster.


def _error_of(exc: BaseException) -> KafkaError:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    if isinstance(exc, TimeoutError):
        return KafkaError(KafkaError._TIMED_OUT, "no answer")
    return KafkaError(KafkaError._FAIL, str(exc))


def _settle(futures: Mapping[Any, Any], timeout: float) -> dict[Any, Any]:
    """Each future's result, or the ``KafkaError`` it failed with."""
    settled: dict[Any, Any] = {}
    for key, future in futures.items():
        try:
            settled[key] = future.result(timeout=timeout)
        except Exception as exc:  # librdkafka's, or the future's timeout
            settled[key] = _error_of(exc)
    return settled


#: What librdkafka's refusal of a file means, when it names the file's property.
_FILE_HINTS = {
    "ssl.key.location": " (is kafka.ssl_key_password right, and the key in PEM?)",
    "ssl.certificate.location": " (is kafka.ssl_certificate_location a PEM certificate?)",
    "ssl.ca.location": " (is kafka.ssl_ca_location a PEM file or a directory of them?)",
}


class _ClientLog:
    """The admin client's errors and log (a ``logging.Logger`` stand-in): kept for the report,
    passed on to this module's log at debug level instead of librdkafka's stderr."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        self.errors: list[KafkaError] = []
        #: librdkafka's last word on a failed connection (``Disconnected: ...``).
        self.last_failure: str | None = None
        self._scrub = scrub

    def log(self, level: int, message: str, *args: object) -> None:
        text = self._scrub(message % args if args else message)
        if "FAIL" in args or " FAIL " in text:
            failure = self._scrub(str(args[-1])) if args else text
            self.last_failure = re.sub(r"^\[thrd:[^\]]*\]: ", "", failure)
        log.debug("librdkafka: %s", text)


class _Scrubbed:
    """Removes the settings' secrets from librdkafka's messages before they are logged."""

    def __init__(self, kafka: KafkaSettings) -> None:
        described = kafka.describe("admin")
        self._secrets = [
            v
            for k, v in kafka.librdkafka_config("admin").items()
            if described.get(k) == REDACTED and v
        ]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def check_topics(
    kafka: KafkaSettings, needed: Sequence[NeededTopic], *, timeout: float = 10.0
) -> TopicReport:
    """Check (and where it is the gateway's to do, create) the topics the gateway needs; log
    how the gateway connects and what was found; the report says what to fix."""
    log.info("kafka: %s", kafka.summary())
    for warning in kafka.warnings():
        log.warning("kafka: %s", warning)
    scrub = _Scrubbed(kafka)
    client = _ClientLog(scrub)
    try:
        admin = AdminClient(
            dict(kafka.librdkafka_config("admin")), error_cb=client.errors.append, logger=client
        )
    except KafkaException as exc:
        reason = scrub(_error_of(exc).str())
        hint = next((h for key, h in _FILE_HINTS.items() if key in reason), "")
        problem = f"librdkafka refuses the Kafka settings: {reason}{hint}"
        checks = tuple(TopicCheck(t, TopicState.UNCHECKED, problem) for t in needed)
        report = TopicReport(checks, unreachable=problem, problem=problem)
    else:
        report = _check(admin, needed, principal_of(kafka), timeout, client)
        report = TopicReport(
            tuple(TopicCheck(c.topic, c.state, scrub(c.message)) for c in report.checks),
            unreachable=report.unreachable and scrub(report.unreachable),
            problem=report.problem and scrub(report.problem),
        )
    _log(report)
    return report


def _check(
    admin: AdminClient,
    needed: Sequence[NeededTopic],
    principal: str,
    timeout: float,
    client: _ClientLog,
) -> TopicReport:
    names = list(dict.fromkeys(t.name for t in needed))
    if not names:
        return TopicReport(())
    futures = admin.describe_topics(
        TopicCollection(names), include_authorized_operations=True, request_timeout=timeout
    )
    described = _settle(futures, timeout + 5)
    if all(isinstance(d, KafkaError) and d.code() in _CONNECTION for d in described.values()):
        admin.poll(0)  # serves error_cb and the log: why the connection failed
        cause = _cause(client.errors, next(iter(described.values())))
        unreachable = explain_connection(cause, timeout, client.last_failure)
        checks = tuple(TopicCheck(t, TopicState.UNCHECKED, unreachable) for t in needed)
        return TopicReport(checks, unreachable=unreachable)

    found: dict[int, TopicCheck] = {}
    to_create: dict[str, NeededTopic] = {}
    for index, topic in enumerate(needed):
        answer = described[topic.name]
        if isinstance(answer, KafkaError):
            missing = answer.code() in _UNKNOWN
            if missing and topic.use is not TopicUse.PRODUCT:
                to_create.setdefault(topic.name, topic)
                continue
            state = (
                TopicState.MISSING
                if missing
                else TopicState.NOT_AUTHORIZED
                if answer.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
                else TopicState.UNCHECKED
            )
            message = explain(answer, topic, action="describe", principal=principal)
            found[index] = TopicCheck(topic, state, message)
        else:
            found[index] = check_operations(topic, answer.authorized_operations, principal)

    created = _create(admin, to_create, principal, timeout)
    for index, topic in enumerate(needed):
        if index not in found:
            found[index] = created[topic.name]
    ledgers = [
        i
        for i, c in found.items()
        if c.topic.use is TopicUse.LEDGER and c.state is TopicState.OK and c.message == ""
    ]
    for index, check in _retention(admin, [found[i] for i in ledgers], principal, timeout):
        found[ledgers[index]] = check
    checks = tuple(found[i] for i in range(len(needed)))
    problem = next((c.message for c in checks if c.fatal), None)
    return TopicReport(checks, problem=problem)


#: The client's errors that say most about a failed connection, most telling first.
_TELLING = (
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._SSL,
    KafkaError._RESOLVE,
    KafkaError._TRANSPORT,
)


def _cause(errors: Sequence[KafkaError], otherwise: KafkaError) -> KafkaError:
    for code in _TELLING:
        for error in reversed(errors):
            if error.code() == code:
                return error
    return otherwise


def check_operations(
    topic: NeededTopic, operations: Iterable[Any] | None, principal: str
) -> TopicCheck:
    """The topic exists; whether the principal may do what the gateway does with it (when the
    broker says: ``operations`` is ``None`` when it does not)."""
    if operations is None:
        return TopicCheck(topic, TopicState.OK)
    allowed = {getattr(op, "name", str(op)) for op in operations}
    if "ALL" in allowed:
        return TopicCheck(topic, TopicState.OK)
    lacking = [op for op in REQUIRED_OPERATIONS[topic.use] if op not in allowed]
    if lacking:
        return TopicCheck(
            topic,
            TopicState.NOT_AUTHORIZED,
            _not_authorized(topic, principal, lacking),
        )
    notes = [
        f"{cost} (grant {principal} {op} on topic {topic.name!r})"
        for op, cost in WANTED_OPERATIONS[topic.use].items()
        if op not in allowed
    ]
    if not notes:
        return TopicCheck(topic, TopicState.OK)
    # The ledger's retention unverified is worth a warning; a product not publishable, a note.
    state = TopicState.UNVERIFIED if topic.use is TopicUse.LEDGER else TopicState.OK
    return TopicCheck(topic, state, f"{topic.label()}: {'; '.join(notes)}")


def _create(
    admin: AdminClient, to_create: Mapping[str, NeededTopic], principal: str, timeout: float
) -> dict[str, TopicCheck]:
    """Create the missing ledger and dead-letter topics: one partition each (the ledger's
    chains are ordered by key, dead letters are few), the cluster's replication factor."""
    if not to_create:
        return {}
    topics = [
        NewTopic(
            name,
            1,
            replication_factor=CLUSTER_DEFAULT,
            config=dict(INFINITE_RETENTION) if topic.use is TopicUse.LEDGER else {},
        )
        for name, topic in to_create.items()
    ]
    settled = _settle(admin.create_topics(topics, request_timeout=timeout), timeout + 5)
    results: dict[str, TopicCheck] = {}
    for name, topic in to_create.items():
        answer = settled[name]
        if not isinstance(answer, KafkaError):
            results[name] = TopicCheck(topic, TopicState.CREATED, f"{topic.label()}: created")
        elif answer.code() == KafkaError.TOPIC_ALREADY_EXISTS:  # another replica was first
            results[name] = TopicCheck(topic, TopicState.OK)
        else:
            authorization = (
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            )
            state = (
                TopicState.NOT_AUTHORIZED
                if answer.code() in authorization
                else TopicState.UNCHECKED
                if answer.code() in _CONNECTION
                else TopicState.MISSING
            )
            message = explain(answer, topic, action="create", principal=principal)
            results[name] = TopicCheck(topic, state, message)
    return results


def _retention(
    admin: AdminClient, ledgers: Sequence[TopicCheck], principal: str, timeout: float
) -> Iterable[tuple[int, TopicCheck]]:
    """The existing ledger topics' retention: finite or compacted is MISCONFIGURED."""
    if not ledgers:
        return
    resources = [ConfigResource(ResourceType.TOPIC, c.topic.name) for c in ledgers]
    settled = _settle(admin.describe_configs(resources, request_timeout=timeout), timeout + 5)
    answers = {resource.name: answer for resource, answer in settled.items()}
    for index, check in enumerate(ledgers):
        topic, answer = check.topic, answers.get(check.topic.name)
        if isinstance(answer, KafkaError) or answer is None:
            error = answer or KafkaError(KafkaError._FAIL, "no answer")
            message = explain(error, topic, action="describe_configs", principal=principal)
            yield index, TopicCheck(topic, TopicState.UNVERIFIED, message)
            continue
        config = {name: entry.value for name, entry in answer.items() if entry.value is not None}
        unknown = [k for k in INFINITE_RETENTION if k not in config]
        problem = retention_problem(config)
        if problem:
            fix = ",".join(f"{k}={v}" for k, v in INFINITE_RETENTION.items())
            yield (
                index,
                TopicCheck(
                    topic,
                    TopicState.MISCONFIGURED,
                    f"{topic.label()} {problem}: recorded deliveries would be lost; keep them "
                    f"forever: kafka-configs --alter --entity-type topics --entity-name "
                    f"{topic.name} --add-config {fix}",
                ),
            )
        elif unknown:
            yield (
                index,
                TopicCheck(
                    topic,
                    TopicState.UNVERIFIED,
                    f"{topic.label()}: its retention is not verified: Kafka did not describe "
                    f"{', '.join(unknown)}",
                ),
            )


def _log(report: TopicReport) -> None:
    if report.unreachable is not None:
        level = logging.ERROR if report.problem else logging.WARNING
        log.log(level, "kafka: the topics were not checked: %s", report.unreachable)
        return
    for check in report.checks:
        if check.fatal:
            log.error("kafka: %s", check.message)
        elif check.state in (TopicState.OK, TopicState.CREATED):
            if check.message:
                log.info("kafka: %s", check.message)
        else:
            log.warning("kafka: %s", check.message)
    counts: dict[str, int] = {}
    for check in report.checks:
        counts[check.state.value] = counts.get(check.state.value, 0) + 1
    log.info("kafka: topics %s", ", ".join(f"{n} {state}" for state, n in counts.items()))
