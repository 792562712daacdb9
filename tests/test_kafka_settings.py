"""Kafka in production: the connection settings (``settings.KafkaSettings``) and the check of the
topics at start (``adapters/kafka/admin.py``).

What this machine can test for real: mTLS, through a TLS terminator in front of the embedded
broker (a cluster's TLS listener does the same: Tansu 0.6.0 has none of its own: its ``--cert``
and ``--key`` options refuse each other and its TLS acceptor is never used), and the OIDC token
request librdkafka makes to a token endpoint. SASL cannot be tested against a broker here: the
Tansu build refuses every mechanism (``NoSharedMechanism``) and no Docker engine runs, so SCRAM
and PLAIN are tested as the exact librdkafka configuration, which librdkafka then accepts. Kafka
ACLs cannot be tested either (Tansu has none): what each authorization error means is a pure
function, tested with constructed ``KafkaError`` values.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AclOperation, AdminClient  # type: ignore[attr-defined]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError

from gateway.adapters.kafka.admin import (
    INFINITE_RETENTION,
    NeededTopic,
    TopicState,
    TopicUse,
    check_operations,
    check_topics,
    create_topic,
    explain,
    explain_connection,
    needed_topics,
    principal_of,
    retention_problem,
)
from gateway.adapters.kafka.embedded import EmbeddedKafka, free_port
from gateway.cli.serve import settings_error
from gateway.core.contracts import Product
from gateway.settings import KafkaSettings, Settings
from tests.certificates import certificate, distinguished_name

SECRET = "hunter2-do-not-log"
KEY_PASSWORD = "key-pass-do-not-log"
CLIENT_SECRET = "oidc-secret-do-not-log"


def settings_of(**options: Any) -> KafkaSettings:
    """Settings as the environment gives them: strings, validated."""
    return KafkaSettings.model_validate(options)


# ---------------------------------------------------------------------------------------------
# A small PKI: a CA, the broker's certificate, and the gateway's client certificate with its key
# encrypted under a password (what an mTLS deployment mounts).


@dataclass(frozen=True)
class Pki:
    ca: Path
    broker_cert: Path
    broker_key: Path
    gateway_cert: Path
    gateway_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(
        distinguished_name("Test CA"), ca_key, distinguished_name("Test CA"), ca_key, ca=True
    )
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker = certificate(
        distinguished_name("broker"),
        broker_key,
        ca.subject,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    gateway_key = ec.generate_private_key(ec.SECP256R1())
    gateway = certificate(
        distinguished_name("exchange-gateway"),
        gateway_key,
        ca.subject,
        ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    pem = serialization.Encoding.PEM
    pki = Pki(*(root / n for n in ("ca.pem", "broker.pem", "broker.key", "gw.pem", "gw.key")))
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.broker_cert.write_bytes(broker.public_bytes(pem))
    pki.gateway_cert.write_bytes(gateway.public_bytes(pem))
    pkcs8 = serialization.PrivateFormat.PKCS8
    pki.broker_key.write_bytes(broker_key.private_bytes(pem, pkcs8, serialization.NoEncryption()))
    encrypted = serialization.BestAvailableEncryption(KEY_PASSWORD.encode())
    pki.gateway_key.write_bytes(gateway_key.private_bytes(pem, pkcs8, encrypted))
    return pki


def mtls(pki: Pki, bootstrap: str = "kafka-1:9093", **overrides: Any) -> KafkaSettings:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SSL",
        "ssl_ca_location": str(pki.ca),
        "ssl_certificate_location": str(pki.gateway_cert),
        "ssl_key_location": str(pki.gateway_key),
        "ssl_key_password": KEY_PASSWORD,
    }
    return settings_of(**{**options, **overrides})


def scram() -> KafkaSettings:
    return settings_of(
        bootstrap_servers="kafka-1:9096,kafka-2:9096",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="exchange-gateway",
        sasl_password=SECRET,
    )


def oidc(url: str = "https://idp.example/oauth2/token") -> KafkaSettings:
    return settings_of(
        bootstrap_servers="kafka-1:9094",
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauthbearer_token_endpoint_url=url,
        sasl_oauthbearer_client_id="exchange-gateway",
        sasl_oauthbearer_client_secret=CLIENT_SECRET,
        sasl_oauthbearer_scope="kafka",
        sasl_oauthbearer_extensions={"logicalCluster": "lkc-1", "identityPoolId": "pool-2"},
    )


# ---------------------------------------------------------------------------------------------
# The exact librdkafka configuration of each mechanism.


def test_plaintext_config_and_the_client_id_of_each_role() -> None:
    kafka = settings_of(bootstrap_servers="kafka:9092")
    assert kafka.librdkafka_config() == {
        "bootstrap.servers": "kafka:9092",
        "client.id": "exchange-gateway",
        "security.protocol": "PLAINTEXT",
    }
    assert kafka.librdkafka_config("streams")["client.id"] == "exchange-gateway.streams"
    named = settings_of(bootstrap_servers="kafka:9092", client_id="gw-eu")
    assert named.librdkafka_config("ledger")["client.id"] == "gw-eu.ledger"


def test_mtls_config(pki: Pki) -> None:
    assert mtls(pki).librdkafka_config("ledger") == {
        "bootstrap.servers": "kafka-1:9093",
        "client.id": "exchange-gateway.ledger",
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki.ca),
        "ssl.certificate.location": str(pki.gateway_cert),
        "ssl.key.location": str(pki.gateway_key),
        "ssl.key.password": KEY_PASSWORD,
    }


def test_scram_config() -> None:
    assert scram().librdkafka_config("publish") == {
        "bootstrap.servers": "kafka-1:9096,kafka-2:9096",
        "client.id": "exchange-gateway.publish",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "exchange-gateway",
        "sasl.password": SECRET,
    }


def test_oauthbearer_config_is_librdkafkas_oidc_method() -> None:
    assert oidc().librdkafka_config("streams") == {
        "bootstrap.servers": "kafka-1:9094",
        "client.id": "exchange-gateway.streams",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/oauth2/token",
        "sasl.oauthbearer.client.id": "exchange-gateway",
        "sasl.oauthbearer.client.secret": CLIENT_SECRET,
        "sasl.oauthbearer.scope": "kafka",
        "sasl.oauthbearer.extensions": "logicalCluster=lkc-1,identityPoolId=pool-2",
    }


def test_ssl_with_scram_and_a_private_ca(pki: Pki) -> None:
    kafka = settings_of(
        bootstrap_servers="kafka:9096",
        security_protocol="sasl_ssl",  # any case, as librdkafka takes it
        sasl_mechanism="scram-sha-256",
        sasl_username="gw",
        sasl_password=SECRET,
        ssl_ca_location=str(pki.ca),
    )
    config = kafka.librdkafka_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-256"
    assert config["ssl.ca.location"] == str(pki.ca)


@pytest.mark.parametrize("which", ["plaintext", "mtls", "scram", "oidc"])
def test_librdkafka_accepts_each_config(which: str, pki: Pki) -> None:
    """librdkafka checks the properties when a client is made: names, values, the OIDC
    method's required ones, and it loads the certificate and decrypts the key with the
    password. Nothing connects (the brokers named do not exist)."""
    kafka = {
        "plaintext": lambda: settings_of(bootstrap_servers="127.0.0.1:1"),
        "mtls": lambda: mtls(pki),
        "scram": scram,
        "oidc": oidc,
    }[which]()
    AdminClient(dict(kafka.librdkafka_config("admin")), logger=logging.getLogger("librdkafka"))


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    env = {
        "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": "kafka-1:9094",
        "GATEWAY_KAFKA__CLIENT_ID": "gw-eu",
        "GATEWAY_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "GATEWAY_KAFKA__SASL_MECHANISM": "OAUTHBEARER",
        "GATEWAY_KAFKA__SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp.example/token",
        "GATEWAY_KAFKA__SASL_OAUTHBEARER_CLIENT_ID": "gw",
        "GATEWAY_KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET": CLIENT_SECRET,
        "GATEWAY_KAFKA__SASL_OAUTHBEARER_EXTENSIONS": '{"logicalCluster": "lkc-1"}',
        "GATEWAY_KAFKA__EXTRA": '{"client.rack": "az1"}',
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = Settings().kafka.librdkafka_config("ledger")
    assert config["client.id"] == "gw-eu.ledger"
    assert config["sasl.oauthbearer.client.secret"] == CLIENT_SECRET
    assert config["sasl.oauthbearer.extensions"] == "logicalCluster=lkc-1"
    assert config["client.rack"] == "az1"


# ---------------------------------------------------------------------------------------------
# Combinations that cannot work are refused at load, with the reason.


def refused(**options: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        settings_of(bootstrap_servers="kafka:9092", **options)
    message = settings_error(caught.value)
    assert "\n" not in message
    return message


def test_sasl_mechanism_needs_a_sasl_protocol() -> None:
    message = refused(sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password=SECRET)
    assert message == (
        "sasl_mechanism SCRAM-SHA-512 needs security_protocol SASL_SSL (or SASL_PLAINTEXT), "
        "not PLAINTEXT"
    )


def test_a_sasl_protocol_needs_a_mechanism() -> None:
    assert "security_protocol SASL_SSL needs sasl_mechanism" in refused(
        security_protocol="SASL_SSL"
    )


def test_password_mechanisms_need_username_and_password() -> None:
    message = refused(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u")
    assert message == "sasl_mechanism PLAIN needs sasl_username and sasl_password"


def test_credentials_without_their_mechanism_are_refused() -> None:
    message = refused(sasl_username="u", sasl_password=SECRET)
    assert message == (
        "sasl_username and sasl_password: used only with sasl_mechanism PLAIN, "
        "SCRAM-SHA-256 or SCRAM-SHA-512"
    )


@pytest.mark.parametrize(
    ("mechanism", "credentials", "what"),
    [
        ("PLAIN", {"sasl_username": "u", "sasl_password": SECRET}, "password"),
        (
            "OAUTHBEARER",
            {
                "sasl_oauthbearer_token_endpoint_url": "https://idp.example/token",
                "sasl_oauthbearer_client_id": "gw",
                "sasl_oauthbearer_client_secret": CLIENT_SECRET,
            },
            "token",
        ),
    ],
)
def test_cleartext_credentials_are_refused_unless_allowed(
    mechanism: str, credentials: dict[str, str], what: str
) -> None:
    options = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism, **credentials}
    assert refused(**options) == (
        f"sasl_mechanism {mechanism} over SASL_PLAINTEXT sends the {what} unencrypted: use "
        "SASL_SSL (or set allow_cleartext_credentials on a network you trust)"
    )
    allowed = settings_of(bootstrap_servers="k:9092", allow_cleartext_credentials=True, **options)
    assert allowed.warnings() == [
        f"{mechanism} credentials cross the network unencrypted (allow_cleartext_credentials)"
    ]


def test_scram_over_sasl_plaintext_is_accepted() -> None:
    """SCRAM never sends the password, only a proof of it."""
    kafka = settings_of(
        bootstrap_servers="k:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="u",
        sasl_password=SECRET,
    )
    assert kafka.warnings() == []


def test_oauthbearer_needs_its_token_endpoint_client_and_secret() -> None:
    message = refused(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauthbearer_client_id="gw",
    )
    assert message == (
        "sasl_mechanism OAUTHBEARER needs sasl_oauthbearer_token_endpoint_url, "
        "sasl_oauthbearer_client_secret"
    )


@pytest.mark.parametrize(
    "url", ["http://idp.example/token", "ftp://idp.example/token", "https:///token"]
)
def test_the_token_endpoint_must_be_https(url: str) -> None:
    message = refused(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauthbearer_token_endpoint_url=url,
        sasl_oauthbearer_client_id="gw",
        sasl_oauthbearer_client_secret=CLIENT_SECRET,
    )
    assert message == (
        "sasl_oauthbearer_token_endpoint_url must be an https URL with a host (http only on "
        "loopback): the client secret is sent to it"
    )


def test_oauthbearer_settings_without_oauthbearer_are_refused() -> None:
    assert refused(sasl_oauthbearer_client_id="gw", sasl_oauthbearer_scope="kafka") == (
        "sasl_oauthbearer_client_id, sasl_oauthbearer_scope: used only with sasl_mechanism "
        "OAUTHBEARER"
    )


@pytest.mark.parametrize("extension", [{"auth": "x"}, {"log-cluster": "x"}, {"a": "1,2"}])
def test_extensions_librdkafka_cannot_send_are_refused(extension: dict[str, str]) -> None:
    message = refused(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauthbearer_token_endpoint_url="https://idp.example/token",
        sasl_oauthbearer_client_id="gw",
        sasl_oauthbearer_client_secret=CLIENT_SECRET,
        sasl_oauthbearer_extensions=extension,
    )
    assert message.startswith(f"sasl_oauthbearer_extensions: {next(iter(extension))!r}")


def test_a_certificate_without_its_key_is_refused(pki: Pki) -> None:
    message = refused(security_protocol="SSL", ssl_certificate_location=str(pki.gateway_cert))
    assert message == (
        "ssl_certificate_location and ssl_key_location go together (the gateway's client "
        "certificate and its private key)"
    )


def test_a_key_password_without_a_key_is_refused() -> None:
    message = refused(security_protocol="SSL", ssl_key_password=KEY_PASSWORD)
    assert message == "ssl_key_password: used only with ssl_key_location"


def test_files_that_cannot_be_read_are_named(pki: Pki, tmp_path: Path) -> None:
    message = refused(
        security_protocol="SSL",
        ssl_ca_location=str(tmp_path / "missing-ca.pem"),
        ssl_certificate_location=str(tmp_path),
        ssl_key_location=str(pki.gateway_key),
    )
    assert message == (
        f"ssl_ca_location {tmp_path / 'missing-ca.pem'}: does not exist; "
        f"ssl_certificate_location {tmp_path}: is a directory, not a file"
    )
    # A directory of CA certificates is what librdkafka takes, and so is "probe".
    for ca in (str(tmp_path), "probe"):
        settings_of(bootstrap_servers="k:9093", security_protocol="SSL", ssl_ca_location=ca)


def test_tls_settings_without_tls_are_refused(pki: Pki) -> None:
    assert refused(ssl_ca_location=str(pki.ca)) == (
        "ssl_ca_location: used only with security_protocol SSL or SASL_SSL, not PLAINTEXT"
    )


def test_extra_may_not_replace_what_has_a_setting() -> None:
    message = refused(extra={"sasl.password": "x", "security.protocol": "PLAINTEXT"})
    assert message == (
        "extra may not set sasl.password: use the setting sasl_password; "
        "extra may not set security.protocol: use the setting security_protocol"
    )


def test_extra_that_weakens_tls_is_allowed_and_warned_about() -> None:
    kafka = settings_of(
        bootstrap_servers="k:9093",
        security_protocol="SSL",
        extra={"ssl.endpoint.identification.algorithm": "none", "client.rack": "az1"},
    )
    assert kafka.warnings() == [
        "extra sets ssl.endpoint.identification.algorithm=none: the brokers' host names are "
        "not checked against their certificates"
    ]


def test_unknown_values_are_refused() -> None:
    assert "sasl_mechanism: Input should be 'PLAIN'" in refused(
        security_protocol="SASL_SSL", sasl_mechanism="GSSAPI"
    )
    assert refused(client_id="gateway one").startswith("client_id: String should match")


def test_every_reason_at_once_on_one_line() -> None:
    message = refused(
        sasl_mechanism="PLAIN", ssl_key_password=KEY_PASSWORD, extra={"client.id": "x"}
    )
    assert message == (
        "sasl_mechanism PLAIN needs security_protocol SASL_SSL (or SASL_PLAINTEXT), not "
        "PLAINTEXT; sasl_mechanism PLAIN needs sasl_username and sasl_password; "
        "ssl_key_password: used only with security_protocol SSL or SASL_SSL, not PLAINTEXT; "
        "ssl_key_password: used only with ssl_key_location; "
        "extra may not set client.id: use the setting client_id"
    )


# ---------------------------------------------------------------------------------------------
# Secrets are never shown.


def secretive(pki: Pki) -> KafkaSettings:
    """Every kind of secret at once (SCRAM's password, the key's password, one in extra)."""
    return settings_of(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="gw",
        sasl_password=SECRET,
        ssl_ca_location=str(pki.ca),
        ssl_certificate_location=str(pki.gateway_cert),
        ssl_key_location=str(pki.gateway_key),
        ssl_key_password=KEY_PASSWORD,
        extra={"ssl.keystore.password": "extra-secret-do-not-log", "client.rack": "az1"},
    )


def test_no_secret_in_repr_describe_or_summary(pki: Pki) -> None:
    kafka = secretive(pki)
    settings = Settings(kafka=kafka)
    shown = [repr(kafka), str(kafka), repr(settings), str(kafka.describe()), kafka.summary()]
    for text in shown:
        for secret in (SECRET, KEY_PASSWORD, "extra-secret-do-not-log"):
            assert secret not in text
    described = kafka.describe("admin")
    assert described["sasl.password"] == described["ssl.key.password"] == "***"
    assert described["ssl.keystore.password"] == "***"
    assert described["client.rack"] == "az1"
    assert kafka.summary() == (
        f"bootstrap.servers={kafka.bootstrap_servers} "
        "client.id=exchange-gateway.{admin,ledger,streams,publish} security.protocol=SASL_SSL "
        "sasl.mechanism=SCRAM-SHA-512 sasl.username=gw sasl.password=*** "
        f"ssl.ca.location={pki.ca} ssl.certificate.location={pki.gateway_cert} "
        f"ssl.key.location={pki.gateway_key} ssl.key.password=*** "
        "ssl.keystore.password=*** client.rack=az1"
    )


def test_a_refusal_never_shows_the_secret_it_was_given() -> None:
    """pydantic's own message shows the input (every setting of ``kafka``, secrets too)."""
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(
            {"kafka": {"security_protocol": "SASL_SSL", "sasl_password": SECRET}}
        )
    assert SECRET in str(caught.value)  # why serve does not print it
    message = settings_error(caught.value)
    assert SECRET not in message
    assert message.startswith("kafka: security_protocol SASL_SSL needs sasl_mechanism")


def test_the_start_log_names_protocol_mechanism_and_client_id_but_no_secret(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = secretive(pki)
    with caplog.at_level(logging.DEBUG):
        report = check_topics(kafka, [NeededTopic("ledger", TopicUse.LEDGER)], timeout=1)
    assert report.unreachable is not None
    assert "security.protocol=SASL_SSL sasl.mechanism=SCRAM-SHA-512" in caplog.text
    assert "client.id=exchange-gateway.{admin,ledger,streams,publish}" in caplog.text
    for secret in (SECRET, KEY_PASSWORD, "extra-secret-do-not-log"):
        assert secret not in caplog.text


# ---------------------------------------------------------------------------------------------
# `gateway serve` with settings that cannot work: one line, exit 2.


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"GATEWAY_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512"},
            "Error: invalid settings: kafka: sasl_mechanism SCRAM-SHA-512 needs "
            "security_protocol SASL_SSL (or SASL_PLAINTEXT), not PLAINTEXT; sasl_mechanism "
            "SCRAM-SHA-512 needs sasl_username and sasl_password",
        ),
        (
            {"GATEWAY_KAFKA__EXTRA": "{not json"},
            'Error: invalid settings: error parsing value for field "kafka" from source '
            '"EnvSettingsSource"',
        ),
    ],
)
def test_serve_with_bad_settings_says_why_in_one_line(
    env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    clean |= {"GATEWAY_KAFKA__SASL_PASSWORD": SECRET, **env}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--bootstrap-servers", "127.0.0.1:1"],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [expected]
    assert SECRET not in result.stderr


# ---------------------------------------------------------------------------------------------
# What Kafka's errors mean (pure).

LEDGER = NeededTopic("exchange-gateway.ledger", TopicUse.LEDGER)
ORDERS = NeededTopic("acme.orders", TopicUse.PRODUCT, "orders")
ORDERS_DLQ = NeededTopic("acme.orders.dlq", TopicUse.DEAD_LETTER, "orders")


def test_explain_topic_authorization_failed_names_the_acl_per_use() -> None:
    denied = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert explain(denied, ORDERS, action="describe", principal="User:gw") == (
        "topic 'acme.orders' of product 'orders': not authorized: the gateway's principal "
        "User:gw needs DESCRIBE, READ on topic 'acme.orders'"
    )
    assert explain(denied, LEDGER, action="describe", principal="User:gw") == (
        "the ledger topic 'exchange-gateway.ledger': not authorized: the gateway's principal "
        "User:gw needs DESCRIBE, READ, WRITE on topic 'exchange-gateway.ledger'"
    )
    assert "needs DESCRIBE, WRITE on topic 'acme.orders.dlq'" in explain(
        denied, ORDERS_DLQ, action="describe", principal="User:gw"
    )
    assert explain(denied, LEDGER, action="describe_configs", principal="User:gw") == (
        "the ledger topic 'exchange-gateway.ledger': its retention cannot be checked: the "
        "gateway's principal User:gw needs DESCRIBE_CONFIGS on topic 'exchange-gateway.ledger'"
    )


def test_explain_creation_refused() -> None:
    for code in (KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED):
        message = explain(KafkaError(code), LEDGER, action="create", principal="User:gw")
        assert "does not exist and the gateway's principal User:gw may not create" in message
        assert "CREATE on the cluster" in message or "CREATE on topic" in message
        assert message.endswith(
            "or create it yourself with retention.ms=-1, retention.bytes=-1, cleanup.policy=delete"
        )
    policy = KafkaError(KafkaError.POLICY_VIOLATION, "retention.ms=-1 is not allowed")
    assert explain(policy, ORDERS_DLQ, action="create", principal="User:gw") == (
        "dead-letter topic 'acme.orders.dlq' of product 'orders' does not exist and Kafka "
        "refused to create it (POLICY_VIOLATION: retention.ms=-1 is not allowed): create it "
        "yourself"
    )


def test_explain_a_missing_product_topic() -> None:
    missing = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    assert explain(missing, ORDERS, action="describe", principal="User:gw") == (
        "topic 'acme.orders' of product 'orders' does not exist: the product's streams fail "
        "until its team creates it (the gateway creates no product topic)"
    )


def test_explain_anything_else_names_the_error() -> None:
    odd = KafkaError(KafkaError.NOT_CONTROLLER)
    assert explain(odd, ORDERS, action="describe", principal="User:gw") == (
        "topic 'acme.orders' of product 'orders': Kafka could not describe it "
        "(NOT_CONTROLLER: Broker: Not controller for cluster)"
    )


@pytest.mark.parametrize(
    ("code", "start"),
    [
        (KafkaError._AUTHENTICATION, "Kafka refused the gateway's credentials (_AUTHENTICATION"),
        (KafkaError.SASL_AUTHENTICATION_FAILED, "Kafka refused the gateway's credentials"),
        (KafkaError._SSL, "the TLS handshake with Kafka failed (_SSL"),
        (KafkaError._RESOLVE, "Kafka's address does not resolve (_RESOLVE"),
        (KafkaError._TRANSPORT, "Kafka did not answer within 5 s (_TRANSPORT"),
        (KafkaError._TIMED_OUT, "Kafka did not answer within 5 s (_TIMED_OUT"),
    ],
)
def test_explain_connection(code: int, start: str) -> None:
    assert explain_connection(KafkaError(code), 5).startswith(start)


def test_explain_connection_quotes_librdkafkas_last_failure() -> None:
    message = explain_connection(KafkaError(KafkaError._TIMED_OUT), 3, "Disconnected: reset")
    assert "(_TIMED_OUT: Local: Timed out; last: Disconnected: reset)" in message


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (dict(INFINITE_RETENTION), None),
        ({}, None),
        (
            {"retention.ms": "604800000", "retention.bytes": "-1"},
            "deletes entries after 7 days (retention.ms)",
        ),
        ({"retention.ms": "90061"}, "deletes entries after 90061 ms (retention.ms)"),
        (
            {"retention.bytes": "1073741824"},
            "deletes entries past 1073741824 bytes a partition (retention.bytes)",
        ),
        ({"cleanup.policy": "compact,delete"}, "is compacted (cleanup.policy=compact,delete)"),
    ],
)
def test_retention_problem(config: dict[str, str], problem: str | None) -> None:
    assert retention_problem(config) == problem


def test_the_principal_named_in_messages(pki: Pki) -> None:
    assert principal_of(scram()) == "User:exchange-gateway"
    assert principal_of(mtls(pki)) == "User:CN=exchange-gateway,O=Example"
    assert principal_of(oidc()) == "(the subject of OAuth client 'exchange-gateway''s tokens)"
    assert principal_of(settings_of(bootstrap_servers="k:9092")) == "User:ANONYMOUS"


def test_the_operations_the_broker_says_the_principal_has() -> None:
    read = [AclOperation.DESCRIBE, AclOperation.READ]
    assert check_operations(ORDERS, None, "User:gw").state is TopicState.OK  # not said
    assert check_operations(LEDGER, [AclOperation.ALL], "User:gw").state is TopicState.OK
    lacking = check_operations(LEDGER, read, "User:gw")
    assert (lacking.state, lacking.fatal) == (TopicState.NOT_AUTHORIZED, True)
    assert lacking.message.endswith(
        "the gateway's principal User:gw needs WRITE on topic 'exchange-gateway.ledger'"
    )
    # A product its team does not publish to over HTTP needs no WRITE: a note, not a failure.
    product = check_operations(ORDERS, read, "User:gw")
    assert product.state is TopicState.OK
    assert product.message == (
        "topic 'acme.orders' of product 'orders': its team cannot publish to it over HTTP "
        "(grant User:gw WRITE on topic 'acme.orders')"
    )
    ledger = check_operations(LEDGER, [*read, AclOperation.WRITE], "User:gw")
    assert (ledger.state, ledger.fatal) == (TopicState.UNVERIFIED, False)


def test_needed_topics() -> None:
    products = [
        Product(product=name, owner="acme", team="t", topic=f"acme.{name}", description="d")
        for name in ("payments", "orders")
    ]
    assert needed_topics("ledger", products) == [
        NeededTopic("ledger", TopicUse.LEDGER),
        NeededTopic("acme.orders", TopicUse.PRODUCT, "orders"),
        NeededTopic("acme.orders.dlq", TopicUse.DEAD_LETTER, "orders"),
        NeededTopic("acme.payments", TopicUse.PRODUCT, "payments"),
        NeededTopic("acme.payments.dlq", TopicUse.DEAD_LETTER, "payments"),
    ]


# ---------------------------------------------------------------------------------------------
# The check against the embedded broker.


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_check_creates_the_ledger_and_dead_letter_topics_and_reports_a_missing_product(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = settings_of(bootstrap_servers=kafka_bootstrap)
    product = unique("orders")
    create_topic(kafka.librdkafka_config(), product)
    ledger = NeededTopic(unique("ledger"), TopicUse.LEDGER)
    present = NeededTopic(product, TopicUse.PRODUCT, "orders")
    dlq = NeededTopic(f"{product}.dlq", TopicUse.DEAD_LETTER, "orders")
    absent = NeededTopic(unique("absent"), TopicUse.PRODUCT, "payments")
    with caplog.at_level(logging.INFO, logger="gateway.adapters.kafka.admin"):
        report = check_topics(kafka, [ledger, present, dlq, absent], timeout=5)
    states = [(c.topic.name, c.state) for c in report.checks]
    assert states == [
        (ledger.name, TopicState.CREATED),
        (product, TopicState.OK),
        (dlq.name, TopicState.CREATED),
        (absent.name, TopicState.MISSING),
    ]
    assert report.problem is None
    assert report.unreachable is None
    assert report.of(absent.name)[0].message == (
        f"topic {absent.name!r} of product 'payments' does not exist: the product's streams "
        "fail until its team creates it (the gateway creates no product topic)"
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"kafka: {report.of(absent.name)[0].message}"]
    assert "kafka: topics 2 created, 1 ok, 1 missing" in caplog.text

    again = check_topics(kafka, [ledger, present, dlq], timeout=5)
    assert [c.state for c in again.checks] == [TopicState.OK] * 3  # the ledger's retention too


def test_a_ledger_topic_that_deletes_entries_is_fatal(kafka_bootstrap: str) -> None:
    kafka = settings_of(bootstrap_servers=kafka_bootstrap)
    ledger = NeededTopic(unique("ledger"), TopicUse.LEDGER)
    week = {"retention.ms": "604800000", "cleanup.policy": "delete"}
    create_topic(kafka.librdkafka_config(), ledger.name, topic_config=week)
    report = check_topics(kafka, [ledger], timeout=5)
    (check,) = report.checks
    assert (check.state, check.fatal) == (TopicState.MISCONFIGURED, True)
    assert (
        report.problem
        == check.message
        == (
            f"the ledger topic {ledger.name!r} deletes entries after 7 days (retention.ms): "
            "recorded deliveries would be lost; keep them forever: kafka-configs --alter "
            f"--entity-type topics --entity-name {ledger.name} --add-config "
            "retention.ms=-1,retention.bytes=-1,cleanup.policy=delete"
        )
    )


def test_a_ledger_whose_retention_kafka_does_not_say_is_a_warning(kafka_bootstrap: str) -> None:
    """The test broker describes only the configuration a topic was created with."""
    kafka = settings_of(bootstrap_servers=kafka_bootstrap)
    ledger = NeededTopic(unique("ledger"), TopicUse.LEDGER)
    create_topic(kafka.librdkafka_config(), ledger.name)
    report = check_topics(kafka, [ledger], timeout=5)
    (check,) = report.checks
    assert (check.state, check.fatal, report.problem) == (TopicState.UNVERIFIED, False, None)
    assert check.message.endswith(
        "its retention is not verified: Kafka did not describe retention.ms, retention.bytes, "
        "cleanup.policy"
    )


def test_an_unreachable_cluster_is_reported_once_and_is_not_fatal() -> None:
    kafka = settings_of(bootstrap_servers=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    report = check_topics(kafka, [LEDGER, ORDERS], timeout=1)
    # Bounded by its timeout (and the 5 s margin for librdkafka's answer), on a busy machine too.
    assert time.monotonic() - started < 15
    assert report.problem is None
    assert report.unreachable is not None
    assert report.unreachable.startswith("Kafka did not answer within 1 s")
    assert "Connection refused" in report.unreachable
    assert {c.state for c in report.checks} == {TopicState.UNCHECKED}


# ---------------------------------------------------------------------------------------------
# mTLS for real: a TLS terminator that wants a client certificate, in front of Tansu.


class TlsTerminator:
    """Terminates TLS (client certificate required) and forwards to a plaintext broker, as a
    cluster's SSL listener would; remembers the subjects of the certificates it was shown."""

    def __init__(self, pki: Pki, port: int, target_port: int) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
        context.load_cert_chain(pki.broker_cert, pki.broker_key)
        context.verify_mode = ssl.CERT_REQUIRED
        self.subjects: list[str] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._target = target_port
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(lambda loop, context: None)  # refused handshakes
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", port, ssl=context)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        subject = writer.get_extra_info("peercert")["subject"]
        self.subjects.append(",".join(f"{k}={v}" for rdn in subject for k, v in rdn))
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self._target
            )
            self._writers.add(upstream_writer)
        except OSError:
            writer.close()
            return

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    def close(self) -> None:
        async def stop() -> None:
            """No connection is left to a closed loop: its pumps are cancelled and awaited
            here (left pending, their ``finally`` would run at garbage collection, inside
            some later test, on a loop already closed)."""
            self._server.close()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # ... and every connection closed for good (its socket released) before the loop
            # stops: a transport only asked to close is still open once the loop is gone.
            for writer in self._writers:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[tuple[str, TlsTerminator]]:
    """A broker reached only over mTLS: Tansu advertises the terminator's port."""
    tls_port = free_port()
    with EmbeddedKafka(advertised_port=tls_port) as broker:
        terminator = TlsTerminator(pki, tls_port, broker.port)
        try:
            yield broker.bootstrap_servers, terminator
        finally:
            terminator.close()


def test_mtls_connection_with_an_encrypted_key(
    pki: Pki, tls_broker: tuple[str, TlsTerminator]
) -> None:
    bootstrap, terminator = tls_broker
    ledger = NeededTopic(unique("ledger"), TopicUse.LEDGER)
    report = check_topics(mtls(pki, bootstrap), [ledger], timeout=5)
    assert [c.state for c in report.checks] == [TopicState.CREATED]
    assert terminator.subjects[-1] == "organizationName=Example,commonName=exchange-gateway"


def test_mtls_without_a_client_certificate_is_unreachable(
    pki: Pki, tls_broker: tuple[str, TlsTerminator]
) -> None:
    bootstrap, _ = tls_broker
    kafka = settings_of(
        bootstrap_servers=bootstrap, security_protocol="SSL", ssl_ca_location=str(pki.ca)
    )
    report = check_topics(kafka, [LEDGER], timeout=2)
    assert report.unreachable is not None
    assert report.problem is None
    assert report.unreachable.startswith("Kafka did not answer within 2 s")
    assert "SSL connection closed by peer" in report.unreachable
    assert report.unreachable.endswith("and the client certificate if the cluster wants mTLS")


def test_a_wrong_key_password_stops_the_start(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    kafka = mtls(pki, f"127.0.0.1:{free_port()}", ssl_key_password="wrong-do-not-log")
    with caplog.at_level(logging.INFO):
        report = check_topics(kafka, [LEDGER], timeout=2)
    assert report.problem is not None
    assert report.problem.startswith("librdkafka refuses the Kafka settings: ")
    assert "ssl.key.location failed" in report.problem
    assert report.problem.endswith("(is kafka.ssl_key_password right, and the key in PEM?)")
    assert "wrong-do-not-log" not in caplog.text


# ---------------------------------------------------------------------------------------------
# OAUTHBEARER for real on the client's side: librdkafka fetches its token with the settings.


class TokenEndpoint:
    """An OAuth token endpoint on loopback that records each request and hands out a JWT."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                endpoint.requests.append((dict(self.headers), body))
                now = int(time.time())
                token = ".".join(
                    [
                        _b64({"alg": "none"}),
                        _b64({"sub": "exchange-gateway", "iat": now, "exp": now + 3600}),
                        "signature",
                    ]
                )
                answer = json.dumps({"access_token": token, "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/oauth2/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _b64(claims: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


def test_oauthbearer_fetches_its_token_with_the_client_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = TokenEndpoint()
    try:
        kafka = oidc(endpoint.url).model_copy(
            update={"bootstrap_servers": f"127.0.0.1:{free_port()}"}
        )
        with caplog.at_level(logging.DEBUG):
            admin = AdminClient(
                dict(kafka.librdkafka_config("admin")), logger=logging.getLogger("rd")
            )
            deadline = time.monotonic() + 10
            while not endpoint.requests and time.monotonic() < deadline:
                admin.poll(0.05)
            check_topics(kafka, [LEDGER], timeout=1)
    finally:
        endpoint.close()
    headers, body = endpoint.requests[0]
    basic = base64.b64encode(f"exchange-gateway:{CLIENT_SECRET}".encode()).decode()
    assert headers["Authorization"] == f"Basic {basic}"
    assert body == "grant_type=client_credentials&scope=kafka"
    assert CLIENT_SECRET not in caplog.text
    assert "sasl.oauthbearer.client.secret=***" in caplog.text
