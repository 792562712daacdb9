"""Settings: environment variables with prefix ``GATEWAY_``, nested with ``__``.

Built once (``Settings()``) at the entry point and passed down; nothing reads the environment
elsewhere. Secrets are ``SecretStr`` and unwrapped only where a client configuration is built.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.core.quotas import Quotas

OrgId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]


class KafkaSettings(BaseModel):
    """The internal Kafka cluster. No bootstrap servers: the demo starts an embedded broker."""

    bootstrap_servers: str | None = None
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    #: Any other librdkafka property, passed through as is (e.g. ``{"client.rack": "az1"}``).
    extra: dict[str, str] = Field(default_factory=dict)

    def librdkafka_config(self) -> dict[str, str]:
        """The librdkafka properties for connecting; the only place secrets are unwrapped."""
        if not self.bootstrap_servers:
            raise ValueError("no Kafka bootstrap servers configured")
        config: dict[str, str] = {"bootstrap.servers": self.bootstrap_servers}
        plain = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        config.update({k: v for k, v in plain.items() if v is not None})
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_key_password is not None:
            config["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        config.update(self.extra)
        return config


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
        url = urlsplit(self.issuer)
        loopback = url.hostname in ("localhost", "127.0.0.1", "::1")
        if url.scheme != "https" and not (url.scheme == "http" and loopback):
            raise ValueError("oidc.issuer must be an https URL (http only on loopback)")
        if any(a.startswith("HS") or a == "none" for a in self.algorithms):
            raise ValueError("oidc.algorithms: only asymmetric algorithms are accepted")
        return self


class TracingSettings(BaseModel):
    """OpenTelemetry traces (``gateway/tracing.py``): off unless ``endpoint`` is set."""

    #: An OTLP/HTTP collector, e.g. ``http://otel-collector:4318`` (spans go to ``/v1/traces``).
    endpoint: str | None = None
    service_name: str = "exchange-gateway"
    #: Share of traces kept (a caller's ``traceparent`` decides for its own requests).
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
    #: ...or this long after the first record not yet receipted, whichever comes first.
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
