"""Settings: environment variables with prefix ``GATEWAY_``, nested with ``__``.

Built once (``Settings()``) at the entry point and passed down; nothing reads the environment
elsewhere. Secrets are ``SecretStr`` and unwrapped only where a client configuration is built.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.core.quotas import Quotas

OrgId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]


#: What a Kafka client of the gateway is for. Its ``client.id`` is ``{kafka.client_id}.{role}``,
#: the same on every replica, so that the cluster's quotas can be set per role (docs/kafka.md).
KafkaClientRole = Literal["admin", "ledger", "streams", "publish"]
KAFKA_CLIENT_ROLES: tuple[KafkaClientRole, ...] = ("admin", "ledger", "streams", "publish")
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
#: The SASL mechanisms of the librdkafka the gateway runs on (its build has no Kerberos/GSSAPI).
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: What ``KafkaSettings.describe()`` shows in place of a secret.
REDACTED = "***"
#: librdkafka properties with a setting of their own, which ``extra`` may not set: one way to
#: set each, and no ``extra`` quietly replacing the credentials or the protocol.
_DEDICATED = {
    "bootstrap.servers": "bootstrap_servers",
    "client.id": "client_id",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "sasl.oauthbearer.method": "sasl_mechanism (OAUTHBEARER is always the oidc method)",
    "sasl.oauthbearer.token.endpoint.url": "sasl_oauthbearer_token_endpoint_url",
    "sasl.oauthbearer.client.id": "sasl_oauthbearer_client_id",
    "sasl.oauthbearer.client.credentials.client.id": "sasl_oauthbearer_client_id",
    "sasl.oauthbearer.client.secret": "sasl_oauthbearer_client_secret",
    "sasl.oauthbearer.client.credentials.client.secret": "sasl_oauthbearer_client_secret",
    "sasl.oauthbearer.scope": "sasl_oauthbearer_scope",
    "sasl.oauthbearer.extensions": "sasl_oauthbearer_extensions",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
}
#: Properties whose values are secrets wherever they are set (in ``extra`` too).
_SECRET_PROPERTY = re.compile(r"password|secret|passphrase|\.pem$|^sasl\.oauthbearer\.config$")
#: ``extra`` values that weaken the connection: allowed, and warned about at every start.
_WEAKENING = {
    ("enable.ssl.certificate.verification", "false"): "the brokers' certificates are not verified",
    ("ssl.endpoint.identification.algorithm", "none"): (
        "the brokers' host names are not checked against their certificates"
    ),
    ("enable.sasl.oauthbearer.unsecure.jwt", "true"): "unsigned OAUTHBEARER tokens are sent",
}
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _secure_url(url: SplitResult) -> bool:
    """An https URL, or an http one on loopback (where nothing crosses a network)."""
    return url.scheme == "https" or (url.scheme == "http" and url.hostname in _LOOPBACK)


def _unreadable(path: str, *, directory: bool) -> str | None:
    """Why librdkafka could not read ``path`` (a file, or with ``directory`` a directory too)."""
    if directory and path == "probe":  # librdkafka looks for the system's CA certificates
        return None
    where = Path(path)
    if not where.exists():
        return "does not exist"
    if where.is_dir() and not directory:
        return "is a directory, not a file"
    if not os.access(where, os.R_OK):
        return "cannot be read by this process"
    return None


class KafkaSettings(BaseModel):
    """The internal Kafka cluster, and how the gateway authenticates to it (docs/kafka.md).

    No bootstrap servers: the demo starts an embedded broker. Each setting maps to the
    librdkafka property of the same name with dots (``ssl_key_location`` is
    ``ssl.key.location``); combinations that cannot work, or that would send credentials
    unencrypted, are refused when the settings load, with every reason on one line."""

    bootstrap_servers: str | None = None
    #: The prefix of every client's ``client.id``; each client adds its role (``.ledger``,
    #: ``.streams``, ``.publish``, ``.admin``), so quotas are set per role for all replicas.
    client_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+$", max_length=200)] = (
        "exchange-gateway"
    )
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    #: PLAIN and SCRAM-SHA-256/512.
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: OAUTHBEARER, by librdkafka's OIDC client-credentials grant (``sasl.oauthbearer.method``
    #: ``oidc``): it fetches and refreshes the token itself.
    sasl_oauthbearer_token_endpoint_url: str | None = None
    sasl_oauthbearer_client_id: str | None = None
    sasl_oauthbearer_client_secret: SecretStr | None = None
    sasl_oauthbearer_scope: str | None = None
    #: SASL extensions sent with the token (RFC 7628 §3.1), e.g. ``{"logicalCluster": "lkc-1"}``.
    sasl_oauthbearer_extensions: dict[str, str] = Field(default_factory=dict)
    #: TLS: the CA that signed the brokers' certificates (a PEM file or directory; unset: the
    #: system's), and for mTLS the gateway's certificate and private key (PEM files).
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    #: PLAIN passwords and OAUTHBEARER tokens over SASL_PLAINTEXT are refused unless this is
    #: set (a network you trust, a test broker).
    allow_cleartext_credentials: bool = False
    #: Any other librdkafka property, passed through as is (e.g. ``{"client.rack": "az1"}``).
    #: Properties with a setting of their own are refused here; the keys it sets are logged at
    #: start (values that look secret never are).
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _coherent(self) -> KafkaSettings:
        problems = self._problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _problems(self) -> list[str]:
        protocol, mechanism = self.security_protocol, self.sasl_mechanism
        problems: list[str] = []
        sasl = protocol.startswith("SASL_")
        if sasl and mechanism is None:
            problems.append(
                f"security_protocol {protocol} needs sasl_mechanism "
                "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)"
            )
        if mechanism is not None and not sasl:
            problems.append(
                f"sasl_mechanism {mechanism} needs security_protocol SASL_SSL "
                f"(or SASL_PLAINTEXT), not {protocol}"
            )
        credentials = [
            n for n in ("sasl_username", "sasl_password") if getattr(self, n) is not None
        ]
        if mechanism in _PASSWORD_MECHANISMS:
            if len(credentials) < 2:
                problems.append(f"sasl_mechanism {mechanism} needs sasl_username and sasl_password")
        elif credentials:
            problems.append(
                f"{' and '.join(credentials)}: used only with sasl_mechanism PLAIN, "
                "SCRAM-SHA-256 or SCRAM-SHA-512"
            )
        oidc = [
            n
            for n in (
                "sasl_oauthbearer_token_endpoint_url",
                "sasl_oauthbearer_client_id",
                "sasl_oauthbearer_client_secret",
                "sasl_oauthbearer_scope",
                "sasl_oauthbearer_extensions",
            )
            if getattr(self, n)
        ]
        if mechanism == "OAUTHBEARER":
            required = (
                "sasl_oauthbearer_token_endpoint_url",
                "sasl_oauthbearer_client_id",
                "sasl_oauthbearer_client_secret",
            )
            missing = [n for n in required if n not in oidc]
            if missing:
                problems.append(f"sasl_mechanism OAUTHBEARER needs {', '.join(missing)}")
            problems.extend(self._oidc_problems())
        elif oidc:
            problems.append(f"{', '.join(oidc)}: used only with sasl_mechanism OAUTHBEARER")
        if (
            protocol == "SASL_PLAINTEXT"
            and mechanism in ("PLAIN", "OAUTHBEARER")
            and not self.allow_cleartext_credentials
        ):
            what = "password" if mechanism == "PLAIN" else "token"
            problems.append(
                f"sasl_mechanism {mechanism} over SASL_PLAINTEXT sends the {what} unencrypted: "
                "use SASL_SSL (or set allow_cleartext_credentials on a network you trust)"
            )
        problems.extend(self._tls_problems())
        for key in sorted(self.extra):
            if key in _DEDICATED:
                problems.append(f"extra may not set {key}: use the setting {_DEDICATED[key]}")
        return problems

    def _oidc_problems(self) -> list[str]:
        problems: list[str] = []
        if self.sasl_oauthbearer_token_endpoint_url:
            url = urlsplit(self.sasl_oauthbearer_token_endpoint_url)
            if not url.hostname or not _secure_url(url):
                problems.append(
                    "sasl_oauthbearer_token_endpoint_url must be an https URL with a host (http "
                    "only on loopback): the client secret is sent to it"
                )
        for key, value in self.sasl_oauthbearer_extensions.items():
            # librdkafka joins them as k=v,k=v; RFC 7628 keys are letters, "auth" is reserved.
            if not re.fullmatch(r"[A-Za-z]+", key) or key == "auth" or "," in value:
                problems.append(
                    f"sasl_oauthbearer_extensions: {key!r} is not a valid extension (a key of "
                    "letters other than 'auth', a value without commas)"
                )
        return problems

    def _tls_problems(self) -> list[str]:
        problems: list[str] = []
        files = {
            "ssl_ca_location": self.ssl_ca_location,
            "ssl_certificate_location": self.ssl_certificate_location,
            "ssl_key_location": self.ssl_key_location,
        }
        given = [n for n, v in files.items() if v is not None]
        if self.ssl_key_password is not None:
            given.append("ssl_key_password")
        if given and self.security_protocol not in ("SSL", "SASL_SSL"):
            problems.append(
                f"{', '.join(given)}: used only with security_protocol SSL or SASL_SSL, "
                f"not {self.security_protocol}"
            )
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            problems.append(
                "ssl_certificate_location and ssl_key_location go together (the gateway's "
                "client certificate and its private key)"
            )
        if self.ssl_key_password is not None and self.ssl_key_location is None:
            problems.append("ssl_key_password: used only with ssl_key_location")
        for name, path in files.items():
            why = path and _unreadable(path, directory=name == "ssl_ca_location")
            if why:
                problems.append(f"{name} {path}: {why}")
        return problems

    def librdkafka_config(self, role: KafkaClientRole | None = None) -> dict[str, str]:
        """The librdkafka properties of the gateway's client for ``role`` (``client.id``
        ``{client_id}.{role}``; without a role, ``client_id`` alone: tools). The only place
        secrets are unwrapped."""
        return self._properties(role, reveal=True)

    def describe(self, role: KafkaClientRole | None = None) -> dict[str, str]:
        """``librdkafka_config(role)`` with every secret replaced by ``***``: for logs."""
        return self._properties(role, reveal=False)

    def summary(self) -> str:
        """One line for the log at start: where, how and as whom the gateway connects."""
        described = self.describe()
        described["client.id"] = f"{self.client_id}.{{{','.join(KAFKA_CLIENT_ROLES)}}}"
        return " ".join(f"{k}={v}" for k, v in described.items())

    def warnings(self) -> list[str]:
        """What in these settings weakens the connection's security (logged at start)."""
        found = [
            f"extra sets {key}={value}: {why}"
            for key, value in self.extra.items()
            if (why := _WEAKENING.get((key, value.strip().lower())))
        ]
        if (
            self.allow_cleartext_credentials
            and self.security_protocol == "SASL_PLAINTEXT"
            and self.sasl_mechanism in ("PLAIN", "OAUTHBEARER")
        ):
            found.append(
                f"{self.sasl_mechanism} credentials cross the network unencrypted "
                "(allow_cleartext_credentials)"
            )
        return found

    def _properties(self, role: KafkaClientRole | None, *, reveal: bool) -> dict[str, str]:
        if not self.bootstrap_servers:
            raise ValueError("no Kafka bootstrap servers configured")

        def secret(value: SecretStr | None) -> str:
            if value is None:  # the validator requires it with its mechanism
                raise ValueError("a Kafka secret required by the settings is not set")
            return value.get_secret_value() if reveal else REDACTED

        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"{self.client_id}.{role}" if role else self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_mechanism in _PASSWORD_MECHANISMS:
            config["sasl.username"] = str(self.sasl_username)
            config["sasl.password"] = secret(self.sasl_password)
        elif self.sasl_mechanism == "OAUTHBEARER":
            config["sasl.oauthbearer.method"] = "oidc"
            config["sasl.oauthbearer.token.endpoint.url"] = str(
                self.sasl_oauthbearer_token_endpoint_url
            )
            config["sasl.oauthbearer.client.id"] = str(self.sasl_oauthbearer_client_id)
            config["sasl.oauthbearer.client.secret"] = secret(self.sasl_oauthbearer_client_secret)
            if self.sasl_oauthbearer_scope:
                config["sasl.oauthbearer.scope"] = self.sasl_oauthbearer_scope
            if self.sasl_oauthbearer_extensions:
                config["sasl.oauthbearer.extensions"] = ",".join(
                    f"{k}={v}" for k, v in self.sasl_oauthbearer_extensions.items()
                )
        files = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        config.update({k: v for k, v in files.items() if v is not None})
        if self.ssl_key_password is not None:
            config["ssl.key.password"] = secret(self.ssl_key_password)
        for key, value in self.extra.items():
            config[key] = value if reveal or not _SECRET_PROPERTY.search(key) else REDACTED
        return config

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # SecretStr fields hide themselves; values in ``extra`` that look secret are hidden here.
        for name, value in super().__repr_args__():
            if name == "extra":
                value = {k: REDACTED if _SECRET_PROPERTY.search(k) else v for k, v in value.items()}
            yield name, value


class RegisteredClient(BaseModel):
    """A ``client_secret_basic`` client; only the secret's Argon2 hash is kept."""

    client_id: str
    org: OrgId
    secret_hash: SecretStr


class LegalUser(BaseModel):
    """Someone who may read the legal review pages (HTTP Basic; only an Argon2 hash is kept)."""

    username: str
    password_hash: SecretStr


class QuotaSettings(BaseModel):
    """The operator's side of quotas (see ``services/quotas.py``)."""

    #: Quotas of contracts that do not set them.
    defaults: Quotas = Quotas(concurrent_streams=10)
    #: No contract gets more than these, whatever it says.
    ceilings: Quotas = Quotas()
    #: Streams and pulls in progress per partner organisation, over all its contracts.
    org_concurrent_streams: int | None = Field(default=50, ge=1)
    #: Token requests per client id (brute-force protection of ``/oauth/token``).
    token_requests_per_minute: int = Field(default=60, ge=1)
    token_burst: int = Field(default=10, ge=1)
    #: How many replicas share the quotas: without Redis each enforces quota/replicas.
    replicas: int = Field(default=1, ge=1)


class RedisSettings(BaseModel):
    """Redis holding quota state shared by replicas (``redis://[:password@]host:port/db``)."""

    url: SecretStr | None = None
    timeout_seconds: float = Field(default=0.5, gt=0)


class ReadingSettings(BaseModel):
    """How streams read topics (see ``adapters/kafka/shared.py``)."""

    #: Bytes of recent records each topic's shared reader keeps for the streams at its tail.
    window_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    #: Consumers lent at once to streams behind the window (the rest wait their turn).
    catch_up_readers: int = Field(default=16, ge=1)
    #: Streams and pulls open at once in this process; above it, ``503 overloaded``.
    max_streams: int = Field(default=10_000, ge=1)


class SchemaRegistrySettings(BaseModel):
    """The Schema Registry of products in Avro (``adapters/kafka/schema_registry.py``)."""

    url: str | None = None
    #: ``user:password`` for HTTP Basic (Confluent Cloud: API key and secret).
    basic_auth: SecretStr | None = None
    timeout_seconds: float = Field(default=10, gt=0)


class PublishSettings(BaseModel):
    """Teams publishing records over HTTP (``services/publishing.py``)."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_records: int = Field(default=1000, ge=1)
    #: Records a second each team may publish, over all its products (shared by replicas).
    team_records_per_second: float = Field(default=5000, gt=0)
    #: How long an ``Idempotency-Key``'s outcome is kept (a retry within it writes nothing twice).
    idempotency_window_seconds: float = Field(default=86_400, gt=0)
    #: How long Kafka may take to acknowledge a record before the request fails (503).
    delivery_timeout_seconds: float = Field(default=10, gt=0)


class OidcSettings(BaseModel):
    """The company's OpenID Connect provider, for internal teams (``adapters/oidc.py``).

    Unset ``issuer``: no internal caller is accepted."""

    #: The issuer URL; its discovery document is ``{issuer}/.well-known/openid-configuration``.
    issuer: str | None = None
    #: The ``aud`` value tokens for the gateway carry (the gateway's client id at the provider).
    audience: str | None = None
    #: The claim naming the caller's teams (a dot path, e.g. ``realm_access.roles``).
    teams_claim: str = "groups"
    #: Members of this team may act on every product (publish, see consumers).
    admin_team: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
    jwks_cache_seconds: float = Field(default=300, gt=0)
    #: At most one fetch of the keys per this many seconds for tokens with an unknown key id.
    jwks_min_refresh_seconds: float = Field(default=30, ge=0)
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    timeout_seconds: float = Field(default=5, gt=0)

    @model_validator(mode="after")
    def _secure(self) -> OidcSettings:
        if self.issuer is None:
            return self
        if self.audience is None:
            raise ValueError("oidc.audience is required with oidc.issuer")
        if not _secure_url(urlsplit(self.issuer)):
            raise ValueError("oidc.issuer must be an https URL (http only on loopback)")
        if any(a.startswith("HS") or a == "none" for a in self.algorithms):
            raise ValueError("oidc.algorithms: only asymmetric algorithms are accepted")
        return self


class TracingSettings(BaseModel):
    """OpenTelemetry traces (``gateway/tracing.py``): off unless ``endpoint`` is set."""

    #: An OTLP/HTTP collector, e.g. ``http://otel-collector:4318`` (spans go to ``/v1/traces``).
    endpoint: str | None = None
    service_name: str = "exchange-gateway"
    #: Share of requests traced (a caller's ``traceparent`` is not followed: the gateway is
    #: the company's edge).
    sample_ratio: float = Field(default=1.0, ge=0, le=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="ignore"
    )

    contracts_dir: Path = Path("contracts")
    keys_dir: Path = Path("keys")
    #: The directory the gateway writes: data keys of encrypted fields (shared by replicas),
    #: and its secrets when ``secrets_dir`` is not set (created there on first start).
    state_dir: Path = Path("state")
    #: The gateway's secrets, made once by ``gateway state init`` and shared by every replica
    #: (a read-only mount: nothing is written there; a missing file stops the start).
    secrets_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    #: Bind with ``SO_REUSEPORT``, beside other workers on the same port (``--workers``).
    reuse_port: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: The organisation running this gateway; contracts naming another provider are refused.
    org: OrgId | None = None
    #: Addresses of the TLS-terminating proxies in front of the gateway (comma-separated, or
    #: ``*``), whose ``X-Forwarded-For`` names the client: the per-address limits (token
    #: requests, legal logins) then count clients, not the proxy.
    trusted_proxies: str = "127.0.0.1"
    #: The gateway's public base URL (token issuer, audience of client assertions).
    #: Defaults to the scheme, host and port it listens on.
    public_url: str | None = None
    token_lifetime_seconds: int = Field(default=600, ge=1, le=86_400)
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    #: How often the contracts and keys directories are checked for changes (0 disables).
    watch_seconds: float = Field(default=0.25, ge=0)
    #: How often each replica signs its ledger chain's head into it (and once at shutdown).
    ledger_checkpoint_seconds: float = Field(default=10.0, gt=0)
    #: Where signed checkpoints are handed over, outside the ledger (``services/anchoring.py``):
    #: URLs that take a JSON POST ``{"checkpoint": "<JWS>"}``.
    anchors: list[str] = Field(default_factory=list)
    #: How often the newest checkpoint is handed to the anchors.
    anchor_seconds: float = Field(default=300.0, gt=0)
    #: How often the ledger is read for what other replicas recorded about contracts
    #: (countersignatures posted to them, versions they verified).
    follow_seconds: float = Field(default=1.0, gt=0)
    #: At start, how long the gateway waits for the ledger to take writes before it listens
    #: (it then listens anyway, answering 503 with the reason until it does).
    startup_wait_seconds: float = Field(default=15.0, ge=0)
    #: Streams send a signed receipt after the batch that brings this many records (0: no
    #: receipts)...
    receipt_records: int = Field(default=1000, ge=0)
    #: ...or this long after the first record not yet receipted, whichever comes first (a
    #: stream's first receipt after its own share of both).
    receipt_seconds: float = Field(default=10.0, gt=0)
    #: How often each contract's measured service levels are checked against its objectives
    #: (a breach is logged and set in ``gateway_service_level_breached``).
    service_level_check_seconds: float = Field(default=10.0, gt=0, le=60)
    #: A stream whose client does not take a write within this time is dropped.
    send_timeout_seconds: float = Field(default=30.0, gt=0)
    #: Longest lifetime accepted for a client assertion (RFC 7523 ``exp - now``).
    assertion_max_lifetime_seconds: int = Field(default=300, ge=10, le=3600)
    clients: list[RegisteredClient] = Field(default_factory=list)
    #: Users with the ``legal`` role: read-only access to /legal.
    legal_users: list[LegalUser] = Field(default_factory=list)
    #: ``module:Class`` of a ``KeySource`` (e.g. a KMS adapter) sealing data keys; by default
    #: a key-encryption key in the state directory.
    key_source: str | None = None
    #: A new data key (epoch) for encrypted fields after this many records or seconds.
    data_key_max_records: int = Field(default=1_000_000, ge=1)
    data_key_max_age_seconds: float = Field(default=86_400, gt=0)
    #: The Kafka topic holding the ledger (created with infinite retention if missing).
    ledger_topic: str = "exchange-gateway.ledger"
    #: This replica's name in the ledger (each process writes its own chain under it).
    replica: str = Field(default_factory=socket.gethostname)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    reading: ReadingSettings = Field(default_factory=ReadingSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    schema_registry: SchemaRegistrySettings = Field(default_factory=SchemaRegistrySettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    #: ``json`` (one object a line), ``text``, or ``auto``: text on a terminal, JSON otherwise.
    log_format: Literal["auto", "json", "text"] = "auto"
    #: Serve Prometheus metrics on this port (a separate listener, for the internal network).
    metrics_port: int | None = None

    def issuer(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"
